//! Consumer lag as `/metrics` shows it: one series per topic and partition a worker owns right
//! now, in records and in seconds.
//!
//! The series are not kept in the metrics registry, which cannot forget a series: they are
//! rendered at each scrape from what the registered workers own at that moment, so a partition
//! lost in a rebalance disappears from this worker's output at once (its new owner reports
//! it), and the values summed over a group's workers equal what Kafka's consumer-groups
//! command shows for the group (except that a partition never committed on counts from its
//! log start where Kafka prints `-`, and that a partition being handed over is reported by
//! neither worker until its new owner has it).
//!
//! The log end comes from librdkafka's fetch responses (its statistics): a partition that is
//! not being fetched (its queue full of retry records not due yet) shows the log end of its
//! last fetch until fetching resumes.

use std::fmt::Write;
use std::sync::{Arc, Mutex, Weak};

use super::labels::{PARTITION, TOPIC};
use super::names::{CONSUMER_LAG, CONSUMER_LAG_SECONDS};

/// What one owned partition's lag is computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionLag {
    /// Topic name (a configured input or retry-tier topic).
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
    /// The group's committed offset, when it has one.
    pub committed: Option<i64>,
    /// The log start offset (the first record still kept), once known.
    pub log_start: Option<i64>,
    /// The log end offset (high watermark), once known.
    pub log_end: Option<i64>,
    /// Timestamp (ms since the epoch) of the oldest record the worker has admitted and not
    /// finished on this partition: the head of line that holds the committed offset back.
    pub oldest_unfinished_ms: Option<i64>,
}

impl PartitionLag {
    /// Records between the committed offset (the log start when nothing was committed) and
    /// the log end; `None` until the log end is known.
    pub fn records(&self) -> Option<i64> {
        let end = self.log_end?;
        let from = self.committed.or(self.log_start)?;
        Some((end - from).max(0))
    }

    /// Seconds since the oldest unfinished record was written (0 when there is none).
    pub fn seconds(&self, now_ms: i64) -> f64 {
        self.oldest_unfinished_ms
            .map_or(0.0, |ts| (now_ms - ts).max(0) as f64 / 1000.0)
    }
}

/// A worker whose owned partitions are rendered at each scrape.
pub trait LagSource: Send + Sync {
    /// The partitions it owns now.
    fn partitions(&self) -> Vec<PartitionLag>;
}

static SOURCES: Mutex<Vec<Weak<dyn LagSource>>> = Mutex::new(Vec::new());

/// Adds a worker to the sources rendered by [`render`]; it is dropped from them when it goes.
pub fn register(source: Weak<dyn LagSource>) {
    let mut sources = SOURCES.lock().unwrap_or_else(|e| e.into_inner());
    sources.retain(|s| s.strong_count() > 0);
    sources.push(source);
}

/// The lag series of every live registered worker, in Prometheus text format.
pub fn render(now_ms: i64) -> String {
    let rows: Vec<PartitionLag> = {
        let sources = SOURCES.lock().unwrap_or_else(|e| e.into_inner());
        sources
            .iter()
            .filter_map(Weak::upgrade)
            .flat_map(|s| s.partitions())
            .collect()
    };
    format_rows(&rows, now_ms)
}

/// Help text of the records gauge (also the metric table's).
pub const LAG_HELP: &str = "Records between the group's committed offset (the log start when \
nothing was committed) and the log end, per owned topic and partition.";
/// Help text of the seconds gauge.
pub const LAG_SECONDS_HELP: &str = "Age of the oldest record admitted and not finished, per \
owned topic and partition (0 when none): how long the head of line has waited.";

fn format_rows(rows: &[PartitionLag], now_ms: i64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP {CONSUMER_LAG} {LAG_HELP}");
    let _ = writeln!(out, "# TYPE {CONSUMER_LAG} gauge");
    for r in rows {
        if let Some(n) = r.records() {
            let _ = writeln!(out, "{CONSUMER_LAG}{} {n}", label_set(r));
        }
    }
    let _ = writeln!(out, "# HELP {CONSUMER_LAG_SECONDS} {LAG_SECONDS_HELP}");
    let _ = writeln!(out, "# TYPE {CONSUMER_LAG_SECONDS} gauge");
    for r in rows {
        let _ = writeln!(
            out,
            "{CONSUMER_LAG_SECONDS}{} {}",
            label_set(r),
            r.seconds(now_ms)
        );
    }
    out
}

fn label_set(r: &PartitionLag) -> String {
    // Topic names are [a-zA-Z0-9._-] (Kafka's rule), so they need no escaping.
    format!(
        "{{{TOPIC}=\"{}\",{PARTITION}=\"{}\"}}",
        r.topic, r.partition
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(committed: Option<i64>, oldest: Option<i64>) -> PartitionLag {
        PartitionLag {
            topic: Arc::from("p.s.retry.30s"),
            partition: 2,
            committed,
            log_start: Some(10),
            log_end: Some(110),
            oldest_unfinished_ms: oldest,
        }
    }

    #[test]
    fn lag_counts_from_the_commit_or_else_the_log_start() {
        assert_eq!(row(Some(100), None).records(), Some(10));
        assert_eq!(row(None, None).records(), Some(100));
        let unknown_end = PartitionLag {
            log_end: None,
            ..row(Some(1), None)
        };
        assert_eq!(unknown_end.records(), None);
    }

    #[test]
    fn series_carry_topic_and_partition_and_the_head_of_line_age() {
        let text = format_rows(&[row(Some(100), Some(7_000))], 10_000);
        assert!(text.contains("baton_consumer_lag{topic=\"p.s.retry.30s\",partition=\"2\"} 10\n"));
        assert!(text
            .contains("baton_consumer_lag_seconds{topic=\"p.s.retry.30s\",partition=\"2\"} 3\n"));
    }

    struct Fixed(Vec<PartitionLag>);
    impl LagSource for Fixed {
        fn partitions(&self) -> Vec<PartitionLag> {
            self.0.clone()
        }
    }

    #[test]
    fn a_dropped_worker_leaves_no_series_behind() {
        let worker: Arc<dyn LagSource> = Arc::new(Fixed(vec![PartitionLag {
            topic: Arc::from("lag-unit-test-topic"),
            ..row(Some(100), None)
        }]));
        register(Arc::downgrade(&worker));
        assert!(render(0).contains("lag-unit-test-topic"));
        drop(worker);
        assert!(!render(0).contains("lag-unit-test-topic"));
    }
}
