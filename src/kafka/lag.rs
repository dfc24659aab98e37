//! A consumer group's position read from outside the group, as `baton lag` shows it: the
//! committed offsets (an offset fetch, without joining the group) and each partition's log
//! start and end offsets. The same numbers as Kafka's consumer-groups command; two readings a
//! few seconds apart give the consumption rate and the time to drain.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;

/// One partition's offsets at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionOffsets {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// The group's committed offset (`None`: the group never committed on this partition).
    pub committed: Option<i64>,
    /// The first offset still in the log.
    pub log_start: i64,
    /// One past the last offset in the log (the high watermark).
    pub log_end: i64,
}

impl PartitionOffsets {
    /// Records the group has still to consume: from its committed offset (the log start when
    /// it has none) to the log end.
    pub fn lag(&self) -> i64 {
        (self.log_end - self.committed.unwrap_or(self.log_start)).max(0)
    }

    /// Records in the log (retention permitting): a dead-letter topic's depth.
    pub fn depth(&self) -> i64 {
        (self.log_end - self.log_start).max(0)
    }
}

/// Reads offsets for one group. Clients are made from `base` (bootstrap servers and any
/// security settings).
pub struct OffsetReader {
    consumer: BaseConsumer,
    timeout: Duration,
}

impl OffsetReader {
    /// A reader for `group`; it never joins the group or commits.
    pub fn new(base: &ClientConfig, group: &str, timeout: Duration) -> Result<Self, KafkaError> {
        let consumer = base
            .clone()
            .set("group.id", group)
            .set("client.id", "baton-lag")
            .set("enable.auto.commit", "false")
            .create()?;
        Ok(OffsetReader { consumer, timeout })
    }

    /// Each topic's partition count, from the cluster's metadata (topics that do not exist are
    /// left out).
    pub fn partitions(&self) -> Result<Vec<(String, i32)>, KafkaError> {
        let md = self
            .consumer
            .fetch_metadata(None, Timeout::After(self.timeout))?;
        Ok(md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| (t.name().to_string(), t.partitions().len() as i32))
            .collect())
    }

    /// The topics on which the group has a committed offset (for `--group` without a config).
    pub fn committed_topics(&self) -> Result<Vec<String>, KafkaError> {
        let all: Vec<(String, i32)> = self
            .partitions()?
            .into_iter()
            .filter(|(t, _)| !t.starts_with("__"))
            .collect();
        let committed = self.committed(&all)?;
        let topics: BTreeSet<String> = committed
            .into_iter()
            .filter(|(_, _, c)| c.is_some())
            .map(|(t, _, _)| t)
            .collect();
        Ok(topics.into_iter().collect())
    }

    /// Committed offsets and log offsets of every partition of `topics` that exist.
    pub fn read(&self, topics: &[String]) -> Result<Vec<PartitionOffsets>, KafkaError> {
        let wanted: BTreeSet<&str> = topics.iter().map(String::as_str).collect();
        let mut parts: Vec<(String, i32)> = self
            .partitions()?
            .into_iter()
            .filter(|(t, _)| wanted.contains(t.as_str()))
            .collect();
        parts.sort();
        let committed = self.committed(&parts)?;
        let mut out = Vec::new();
        for (topic, partition, committed) in committed {
            let (log_start, log_end) =
                self.consumer
                    .fetch_watermarks(&topic, partition, Timeout::After(self.timeout))?;
            out.push(PartitionOffsets {
                topic,
                partition,
                committed,
                log_start,
                log_end,
            });
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }

    /// The group's committed offset of every partition of the given topics (one request).
    fn committed(
        &self,
        topics: &[(String, i32)],
    ) -> Result<Vec<(String, i32, Option<i64>)>, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (topic, n) in topics {
            for p in 0..*n {
                tpl.add_partition(topic, p);
            }
        }
        if tpl.count() == 0 {
            return Ok(Vec::new());
        }
        let got = self
            .consumer
            .committed_offsets(tpl, Timeout::After(self.timeout))?;
        Ok(got
            .elements()
            .iter()
            .map(|e| {
                let c = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                (e.topic().to_string(), e.partition(), c)
            })
            .collect())
    }
}

/// One partition's lag with how fast it moves, from two readings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LagRow {
    /// The later reading.
    #[serde(flatten)]
    pub offsets: PartitionOffsets,
    /// Records to consume (see [`PartitionOffsets::lag`]).
    pub lag: i64,
    /// Records consumed (committed) per second between the readings.
    pub rate_per_s: Option<f64>,
    /// Seconds until the lag is gone at the current rates (consumed minus produced); `None`
    /// when it is not shrinking (or was not measured), 0 when there is none.
    pub eta_s: Option<f64>,
}

/// Lag, rate and time to drain per partition, from a reading `secs` seconds before `after`
/// (`before` empty: no rate).
pub fn rows(before: &[PartitionOffsets], after: &[PartitionOffsets], secs: f64) -> Vec<LagRow> {
    after
        .iter()
        .map(|a| {
            let b = before
                .iter()
                .find(|b| b.topic == a.topic && b.partition == a.partition);
            let (rate, net) = match b {
                Some(b) if secs > 0.0 => {
                    let from = |p: &PartitionOffsets| p.committed.unwrap_or(p.log_start);
                    let consumed = (from(a) - from(b)).max(0) as f64 / secs;
                    let produced = (a.log_end - b.log_end).max(0) as f64 / secs;
                    (Some(consumed), Some(consumed - produced))
                }
                _ => (None, None),
            };
            LagRow {
                lag: a.lag(),
                rate_per_s: rate,
                eta_s: eta(a.lag(), net),
                offsets: a.clone(),
            }
        })
        .collect()
}

/// Seconds to drain `lag` records at a net drain rate.
pub fn eta(lag: i64, net_per_s: Option<f64>) -> Option<f64> {
    if lag == 0 {
        return Some(0.0);
    }
    match net_per_s {
        Some(r) if r > 0.0 => Some(lag as f64 / r),
        _ => None,
    }
}

/// The report, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The consumer group.
    pub group: String,
    /// Each partition the group consumes.
    pub partitions: Vec<LagRow>,
    /// Records waiting in each retry-tier topic (the group's lag on it).
    pub retry_tiers: BTreeMap<String, i64>,
    /// Records in each dead-letter topic.
    pub dead_letters: BTreeMap<String, i64>,
    /// Records to consume over all partitions.
    pub total_lag: i64,
    /// Records consumed per second over all partitions.
    pub rate_per_s: Option<f64>,
    /// Seconds until every partition is drained at the current rates.
    pub eta_s: Option<f64>,
}

/// The topics a report covers.
#[derive(Debug, Clone, Default)]
pub struct Topics {
    /// Consumed by the group: input topics and retry tiers.
    pub consumed: Vec<String>,
    /// Retry-tier topics among `consumed`.
    pub retry: Vec<String>,
    /// Dead-letter topics.
    pub dead_letters: Vec<String>,
}

impl Topics {
    /// The topics of a config's pipelines: each step's input, retry tiers and dead letters.
    pub fn of(config: &crate::config::Config) -> Self {
        Topics {
            consumed: config.input_topics(),
            retry: config
                .steps
                .iter()
                .flat_map(|s| s.retry_topics.iter().cloned())
                .collect(),
            dead_letters: config
                .steps
                .iter()
                .map(|s| crate::config::TopicNames::dlq_of(&s.topic))
                .collect(),
        }
    }

    /// Without a config: the topics the group committed on, the retry tiers of those (even
    /// ones it never committed on), and their dead-letter topics where they exist.
    pub fn committed_by(reader: &OffsetReader) -> Result<Self, KafkaError> {
        let existing: Vec<String> = reader.partitions()?.into_iter().map(|(t, _)| t).collect();
        let mut consumed = reader.committed_topics()?;
        let tiers: Vec<String> = existing
            .iter()
            .filter(|e| {
                consumed
                    .iter()
                    .any(|c| e.starts_with(&format!("{c}.retry.")))
            })
            .cloned()
            .collect();
        for t in tiers {
            if !consumed.contains(&t) {
                consumed.push(t);
            }
        }
        let retry = consumed
            .iter()
            .filter(|t| t.contains(".retry."))
            .cloned()
            .collect();
        let dead_letters = consumed
            .iter()
            .map(|t| crate::config::TopicNames::dlq_of(t))
            .filter(|d| existing.contains(d))
            .collect();
        Ok(Topics {
            consumed,
            retry,
            dead_letters,
        })
    }
}

/// Two readings `interval` apart (one when it is zero), made into the report.
pub fn read_report(
    reader: &OffsetReader,
    group: &str,
    topics: &Topics,
    interval: Duration,
) -> Result<Report, KafkaError> {
    let started = std::time::Instant::now();
    let before = if interval.is_zero() {
        Vec::new()
    } else {
        let b = reader.read(&topics.consumed)?;
        std::thread::sleep(interval);
        b
    };
    let secs = started.elapsed().as_secs_f64();
    let after = reader.read(&topics.consumed)?;
    let partitions = rows(&before, &after, secs);
    let dlq_depths = reader.read(&topics.dead_letters)?;
    Ok(report(group, partitions, &topics.retry, &dlq_depths))
}

/// Totals and the retry-tier and dead-letter depths around the partition rows.
pub fn report(
    group: &str,
    partitions: Vec<LagRow>,
    retry: &[String],
    dead_letters: &[PartitionOffsets],
) -> Report {
    let total_lag: i64 = partitions.iter().map(|r| r.lag).sum();
    let rate_per_s = partitions.iter().map(|r| r.rate_per_s).sum::<Option<f64>>();
    let eta_s = if total_lag == 0 {
        Some(0.0)
    } else if partitions.iter().all(|r| r.rate_per_s.is_some()) {
        // The group drains as fast as its partitions together; a growing one shows on its own row.
        let eta_max = partitions
            .iter()
            .map(|r| r.eta_s)
            .collect::<Option<Vec<f64>>>();
        eta_max.map(|v| v.into_iter().fold(0.0, f64::max))
    } else {
        None
    };
    let mut retry_tiers = BTreeMap::new();
    for r in &partitions {
        if retry.contains(&r.offsets.topic) {
            *retry_tiers.entry(r.offsets.topic.clone()).or_insert(0) += r.lag;
        }
    }
    let mut dlq = BTreeMap::new();
    for d in dead_letters {
        *dlq.entry(d.topic.clone()).or_insert(0) += d.depth();
    }
    Report {
        group: group.to_string(),
        partitions,
        retry_tiers,
        dead_letters: dlq,
        total_lag,
        rate_per_s,
        eta_s,
    }
}

/// The human form: one line per partition, then the totals and depths.
pub fn table(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = format!("group {}\n", r.group);
    let width = r
        .partitions
        .iter()
        .map(|p| p.offsets.topic.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        out,
        "{:<width$}  {:>9}  {:>10}  {:>10}  {:>8}  {:>8}  {:>8}",
        "TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "RATE/S", "ETA"
    );
    for p in &r.partitions {
        let o = &p.offsets;
        let committed = o.committed.map_or("-".to_string(), |c| c.to_string());
        let _ = writeln!(
            out,
            "{:<width$}  {:>9}  {:>10}  {:>10}  {:>8}  {:>8}  {:>8}",
            o.topic,
            o.partition,
            committed,
            o.log_end,
            p.lag,
            p.rate_per_s.map_or("-".into(), |x| format!("{x:.1}")),
            duration(p.eta_s),
        );
    }
    out.push_str(&summary(r));
    out
}

/// The totals, the retry tiers' waiting records and the dead letters: the last lines of
/// [`table`] (the demo's on-call view).
pub fn summary(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "total lag {} records, consuming {}/s, drained in {}",
        r.total_lag,
        r.rate_per_s.map_or("-".into(), |x| format!("{x:.1}")),
        duration(r.eta_s)
    );
    for (t, n) in &r.retry_tiers {
        let _ = writeln!(out, "retry tier   {t}: {n} waiting");
    }
    for (t, n) in &r.dead_letters {
        let _ = writeln!(
            out,
            "dead letters {t}: {n} (see `baton dlq inspect --topic {t}`)"
        );
    }
    out
}

/// `3m20s`, `-` when unknown (not shrinking or not measured).
fn duration(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) => humantime::format_duration(Duration::from_secs(s.ceil() as u64)).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(committed: Option<i64>, end: i64) -> PartitionOffsets {
        PartitionOffsets {
            topic: "t".into(),
            partition: 0,
            committed,
            log_start: 100,
            log_end: end,
        }
    }

    #[test]
    fn lag_counts_from_the_log_start_when_nothing_was_committed() {
        assert_eq!(at(None, 180).lag(), 80);
        assert_eq!(at(Some(150), 180).lag(), 30);
        assert_eq!(at(Some(150), 180).depth(), 80);
    }

    #[test]
    fn rate_and_time_to_drain_come_from_two_readings() {
        // 100 consumed in 2 s while 20 were produced: 50/s, draining at 40/s net.
        let r = &rows(&[at(Some(200), 400)], &[at(Some(300), 420)], 2.0)[0];
        assert_eq!(r.lag, 120);
        assert_eq!(r.rate_per_s, Some(50.0));
        assert_eq!(r.eta_s, Some(3.0));
        // Producing faster than consuming: it never drains.
        let r = &rows(&[at(Some(200), 400)], &[at(Some(210), 500)], 1.0)[0];
        assert_eq!(r.eta_s, None);
        // Caught up: nothing to drain, whatever the rate.
        let r = &rows(&[at(Some(400), 400)], &[at(Some(400), 400)], 1.0)[0];
        assert_eq!((r.rate_per_s, r.eta_s), (Some(0.0), Some(0.0)));
        // One reading: lag without a rate.
        let r = &rows(&[], &[at(None, 400)], 0.0)[0];
        assert_eq!((r.lag, r.rate_per_s, r.eta_s), (300, None, None));
    }

    fn offsets(topic: &str, committed: i64, end: i64) -> PartitionOffsets {
        PartitionOffsets {
            topic: topic.into(),
            partition: 0,
            committed: Some(committed),
            log_start: 0,
            log_end: end,
        }
    }

    #[test]
    fn totals_and_depths_add_up_and_the_slowest_partition_sets_the_time_to_drain() {
        let before = [offsets("in", 0, 100), offsets("in.retry.30s", 0, 10)];
        let after = [offsets("in", 50, 100), offsets("in.retry.30s", 5, 10)];
        let rows = rows(&before, &after, 10.0);
        let dlq = [offsets("in.dlq", 0, 7)];
        let r = report("g", rows, &["in.retry.30s".to_string()], &dlq);
        assert_eq!(r.total_lag, 55);
        assert_eq!(r.rate_per_s, Some(5.5));
        // in: 50 left at 5/s = 10 s; the retry tier: 5 left at 0.5/s = 10 s.
        assert_eq!(r.eta_s, Some(10.0));
        assert_eq!(r.retry_tiers.get("in.retry.30s"), Some(&5));
        assert_eq!(r.dead_letters.get("in.dlq"), Some(&7));
        let text = table(&r);
        assert!(
            text.contains("total lag 55 records, consuming 5.5/s, drained in 10s"),
            "{text}"
        );
    }
}
