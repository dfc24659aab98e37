//! A consumer group's position read from outside the group, as `baton lag` shows it: the
//! committed offsets (an offset fetch, without joining the group) and each partition's log
//! start and end offsets. The same numbers as Kafka's consumer-groups command; two readings a
//! few seconds apart give the consumption rate and the time to drain.

use std::collections::BTreeSet;
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
}
