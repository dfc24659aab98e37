//! `baton produce` and `baton consume`: publish JSON Lines jobs, read records with their
//! headers. Also used by the demo, the benchmark and the tests to feed and read topics.

use std::io::BufRead;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use rdkafka::error::KafkaError;

/// The record key of a job line: `conversation_id` when present (a conversation stays in
/// order), else `id`; none for a line that is not a JSON object with either.
pub fn job_key(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).ok()?;
    let pick = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    pick("conversation_id").or_else(|| pick("id"))
}

/// Counts of a produce run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProduceStats {
    /// Records acknowledged by the broker.
    pub sent: u64,
    /// Records whose delivery failed.
    pub failed: u64,
}

/// A producer for tools: acks=all, idempotent. `base` gives the bootstrap servers and any
/// security settings ([`super::client_config`], or [`super::plain_config`]).
pub fn tool_producer(base: &ClientConfig) -> Result<FutureProducer, KafkaError> {
    base.clone()
        .set("enable.idempotence", "true")
        .set("linger.ms", "10")
        .set("message.timeout.ms", "60000")
        .create()
}

/// Publishes each non-empty line as one record (key from [`job_key`]).
pub async fn produce_lines<I>(
    producer: &FutureProducer,
    topic: &str,
    lines: I,
    progress: Option<&ProgressBar>,
) -> ProduceStats
where
    I: IntoIterator<Item = Vec<u8>>,
{
    let records = lines
        .into_iter()
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(|line| {
            let key = std::str::from_utf8(&line)
                .ok()
                .and_then(job_key)
                .map(String::into_bytes);
            (key, line)
        });
    produce_records(producer, topic, records, progress).await
}

/// Publishes `(key, value)` records, with at most 10,000 awaiting acknowledgement at once.
pub async fn produce_records<I>(
    producer: &FutureProducer,
    topic: &str,
    records: I,
    progress: Option<&ProgressBar>,
) -> ProduceStats
where
    I: IntoIterator<Item = (Option<Vec<u8>>, Vec<u8>)>,
{
    use futures::stream::{FuturesUnordered, StreamExt};
    let mut stats = ProduceStats::default();
    let mut pending = FuturesUnordered::new();
    for (key, value) in records {
        let producer = producer.clone();
        let topic = topic.to_string();
        pending.push(async move {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).payload(&value);
            if let Some(k) = &key {
                record = record.key(k);
            }
            producer.send(record, Timeout::Never).await.is_ok()
        });
        if pending.len() >= 10_000 {
            if let Some(ok) = pending.next().await {
                tally(&mut stats, ok, progress);
            }
        }
    }
    while let Some(ok) = pending.next().await {
        tally(&mut stats, ok, progress);
    }
    let _ = producer.flush(Timeout::After(Duration::from_secs(30)));
    stats
}

fn tally(stats: &mut ProduceStats, ok: bool, progress: Option<&ProgressBar>) {
    if ok {
        stats.sent += 1;
    } else {
        stats.failed += 1;
    }
    if let Some(p) = progress {
        p.inc(1);
    }
}

/// `baton produce`: reads JSON Lines from a file or `-` (stdin) and publishes them.
pub async fn produce_command(
    base: &ClientConfig,
    topic: &str,
    input: &str,
) -> Result<ProduceStats, std::io::Error> {
    let lines: Vec<Vec<u8>> = if input == "-" {
        std::io::stdin()
            .lock()
            .split(b'\n')
            .collect::<Result<_, _>>()?
    } else {
        std::io::BufReader::new(std::fs::File::open(input)?)
            .split(b'\n')
            .collect::<Result<_, _>>()?
    };
    let producer = tool_producer(base).map_err(std::io::Error::other)?;
    let bar = ProgressBar::new(lines.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bar:40} {pos}/{len} records  {per_sec}  eta {eta}",
        )
        .expect("static template"),
    );
    let stats = produce_lines(&producer, topic, lines, Some(&bar)).await;
    bar.finish_and_clear();
    Ok(stats)
}

/// A consumer assigned to every partition of `topics` from the beginning. It joins no group
/// and commits nothing: the demo, the benchmark, `baton consume` and the tests read with it.
/// `base` gives the bootstrap servers and any security settings.
pub fn reader_from_beginning(
    base: &ClientConfig,
    topics: &[String],
) -> Result<BaseConsumer, KafkaError> {
    let consumer: BaseConsumer = base
        .clone()
        .set("group.id", "baton-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// Reads `topic` from the beginning of every partition until `count` records arrived, the
/// topic stayed quiet for `idle`, or `deadline` passed. Uses no consumer group.
pub fn read_topic(
    base: &ClientConfig,
    topic: &str,
    count: Option<usize>,
    idle: Duration,
    deadline: Duration,
) -> Result<Vec<OwnedMessage>, KafkaError> {
    let consumer = reader_from_beginning(base, &[topic.to_string()])?;
    let start = Instant::now();
    let mut last = Instant::now();
    let mut out = Vec::new();
    while count.is_none_or(|c| out.len() < c) && start.elapsed() < deadline && last.elapsed() < idle
    {
        if let Some(r) = consumer.poll(Duration::from_millis(100)) {
            out.push(r?.detach());
            last = Instant::now();
        }
    }
    Ok(out)
}

/// A consumer that joins no group and commits nothing, for [`read_partition_from`]; `base`
/// gives the bootstrap servers and any security settings.
pub fn partition_reader(base: &ClientConfig) -> Result<BaseConsumer, KafkaError> {
    base.clone()
        .set("group.id", "baton-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
}

/// Reads partition `partition` of `topic` with `consumer` (a [`partition_reader`], reused
/// across calls) from offset `from` (its beginning when `None`) to its end as of now (its high
/// watermark), giving up after `deadline`; returns the records and the offset to read from
/// next. Ends by the consumer's position, so a compacted gap or a control record at the end
/// does not keep it waiting.
pub fn read_partition_from(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: Option<i64>,
    deadline: Duration,
) -> Result<(Vec<OwnedMessage>, i64), KafkaError> {
    let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
    let start_at = from.unwrap_or(low).max(low);
    let mut out = Vec::new();
    if start_at >= high {
        return Ok((out, start_at.max(from.unwrap_or(0))));
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(start_at))?;
    consumer.assign(&tpl)?;
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Some(r) = consumer.poll(Duration::from_millis(10)) {
            out.push(r?.detach());
        }
        let position = consumer.position()?;
        let at = position
            .find_partition(topic, partition)
            .and_then(|e| e.offset().to_raw());
        if at.is_some_and(|o| o >= high) {
            return Ok((out, high));
        }
    }
    Err(KafkaError::MessageConsumption(
        rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
    ))
}

/// Reads every record of `topic` up to its end as of now (each partition's high watermark),
/// giving up after `deadline`. Uses no consumer group. What `baton status` reads: the end is
/// Kafka's, not a quiet period's guess.
pub fn read_to_end(
    base: &ClientConfig,
    topic: &str,
    deadline: Duration,
) -> Result<Vec<OwnedMessage>, KafkaError> {
    let consumer = reader_from_beginning(base, &[topic.to_string()])?;
    let assignment = consumer.assignment()?;
    let mut ends = std::collections::HashMap::new();
    for e in assignment.elements_for_topic(topic) {
        let (low, high) =
            consumer.fetch_watermarks(topic, e.partition(), Duration::from_secs(10))?;
        if high > low {
            ends.insert(e.partition(), high);
        }
    }
    let start = Instant::now();
    let mut out = Vec::new();
    while !ends.is_empty() && start.elapsed() < deadline {
        if let Some(r) = consumer.poll(Duration::from_millis(100)) {
            let m = r?.detach();
            if ends
                .get(&m.partition())
                .is_some_and(|&h| m.offset() + 1 >= h)
            {
                ends.remove(&m.partition());
            }
            out.push(m);
        }
    }
    Ok(out)
}

/// A record as one JSON line: topic, partition, offset, key, headers, and the value (as JSON
/// when it is JSON, else as text).
pub fn record_json(m: &OwnedMessage) -> Value {
    let headers: serde_json::Map<String, Value> = m
        .headers()
        .map(|h| {
            (0..h.count())
                .map(|i| {
                    let hd = h.get(i);
                    (
                        hd.key.to_string(),
                        hd.value.map_or(Value::Null, |v| {
                            Value::String(String::from_utf8_lossy(v).into_owned())
                        }),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let value = m.payload().map_or(Value::Null, |p| {
        serde_json::from_slice(p)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(p).into_owned()))
    });
    serde_json::json!({
        "topic": m.topic(),
        "partition": m.partition(),
        "offset": m.offset(),
        "key": m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        "headers": headers,
        "value": value,
    })
}
