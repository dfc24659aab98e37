//! Conversation memory on the compacted memory topic (key = conversation id, one record per
//! conversation holding its newest turns). A conversation lives on the memory partition its id
//! hashes to (xxh3, modulo the topic's partitions), whatever partitioner the job's producer
//! used, so retry tiers and any client agree on where it is.
//!
//! Before a job of a conversation runs, the worker has its memory: the first job of a memory
//! partition after an assignment change reads that partition to its end (compaction keeps it
//! small), and later jobs read the cache. Jobs of one key run in order, so a conversation's
//! turns are appended one at a time: the new record is published beside the job's result and
//! both are acknowledged before the offset is stored; only then does the cache take it. A job
//! run again after a crash finds its own turn already there: it neither sees it nor adds it
//! twice. Any rebalance empties the cache (another worker may have added turns meanwhile), and
//! so does a cache grown past [`MAX_CACHE_BYTES`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use crate::envelope::{Job, MemoryRecord, Turn};

/// Text a conversation's memory record keeps at most (its oldest turns go first).
pub const MAX_CONVERSATION_BYTES: usize = 256 * 1024;
/// Bytes of conversations a worker caches before it starts over.
pub const MAX_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Turns a conversation's record keeps at most.
pub const MAX_TURNS: usize = 200;

/// The worker's view of the memory topic.
#[derive(Debug, Default)]
pub(super) struct Memory {
    cache: tokio::sync::Mutex<Cache>,
    /// Bumped by every rebalance: a cache of an older generation is emptied before use.
    generation: AtomicU64,
}

#[derive(Debug, Default)]
struct Cache {
    generation: u64,
    partitions: Option<i32>,
    loaded: HashSet<i32>,
    conversations: HashMap<String, MemoryRecord>,
    bytes: usize,
}

/// A memory record to publish beside a job's result.
#[derive(Debug, Clone)]
pub(super) struct MemoryUpdate {
    /// Its partition of the memory topic.
    pub partition: i32,
    /// The conversation's record with the new turn.
    pub record: MemoryRecord,
}

impl Memory {
    /// Forgets everything: partitions moved, another worker may have written turns.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The memory of `conversation`, loading its partition first if needed; retries a failed
    /// read until it succeeds or `cancel` fires (`None`).
    pub async fn get(
        &self,
        bootstrap: &str,
        topic: &str,
        conversation: &str,
        cancel: &CancellationToken,
    ) -> Option<(i32, MemoryRecord)> {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.try_get(bootstrap, topic, conversation).await {
                Ok(found) => return Some(found),
                Err(e) => {
                    tracing::warn!(error = %e, topic, "memory not readable; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cancel.cancelled() => return None,
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn try_get(
        &self,
        bootstrap: &str,
        topic: &str,
        conversation: &str,
    ) -> Result<(i32, MemoryRecord), KafkaError> {
        let mut cache = self.cache.lock().await;
        let generation = self.generation.load(Ordering::SeqCst);
        if cache.generation != generation || cache.bytes > MAX_CACHE_BYTES {
            let partitions = cache.partitions;
            *cache = Cache {
                generation,
                partitions,
                ..Cache::default()
            };
        }
        let partitions = match cache.partitions {
            Some(n) => n,
            None => {
                let n = partition_count(bootstrap, topic).await?;
                cache.partitions = Some(n);
                n
            }
        };
        let p = partition_of(conversation, partitions);
        if !cache.loaded.contains(&p) {
            for record in read_partition(bootstrap, topic, p).await? {
                cache.put(record);
            }
            cache.loaded.insert(p);
        }
        let found = cache
            .conversations
            .get(conversation)
            .cloned()
            .unwrap_or_else(|| MemoryRecord {
                conversation_id: conversation.to_string(),
                turns: Vec::new(),
            });
        Ok((p, found))
    }

    /// Takes a published record into the cache.
    pub async fn stored(&self, record: MemoryRecord) {
        let mut cache = self.cache.lock().await;
        if cache.generation == self.generation.load(Ordering::SeqCst) {
            cache.put(record);
        }
    }
}

impl Cache {
    fn put(&mut self, record: MemoryRecord) {
        let size = record_bytes(&record);
        if let Some(old) = self
            .conversations
            .insert(record.conversation_id.clone(), record)
        {
            self.bytes -= record_bytes(&old).min(self.bytes);
        }
        self.bytes += size;
    }
}

fn record_bytes(r: &MemoryRecord) -> usize {
    r.turns
        .iter()
        .map(|t| t.answer.len() + t.messages.iter().map(|m| m.content.len()).sum::<usize>())
        .sum()
}

/// The memory partition of a conversation.
pub fn partition_of(conversation: &str, partitions: i32) -> i32 {
    (xxhash_rust::xxh3::xxh3_64(conversation.as_bytes()) % partitions.max(1) as u64) as i32
}

/// The update that records `job`'s finished turn (its answer `answer`) in `memory`.
pub(super) fn update(
    partition: i32,
    mut memory: MemoryRecord,
    job: &Job,
    answer: &str,
    now: &str,
) -> MemoryUpdate {
    let turn = Turn {
        job_id: job.id.clone(),
        messages: job.chat_messages(),
        answer: answer.to_string(),
        at: now.to_string(),
    };
    memory.append(turn, MAX_TURNS, MAX_CONVERSATION_BYTES);
    MemoryUpdate {
        partition,
        record: memory,
    }
}

async fn partition_count(bootstrap: &str, topic: &str) -> Result<i32, KafkaError> {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer =
            crate::kafka::plain_config(&bootstrap).create()?;
        let md = rdkafka::consumer::Consumer::fetch_metadata(
            &consumer,
            Some(&topic),
            Duration::from_secs(10),
        )?;
        let n = md.topics().first().map_or(0, |t| t.partitions().len()) as i32;
        if n == 0 {
            return Err(KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        }
        Ok(n)
    })
    .await
    .map_err(|_| KafkaError::Canceled)?
}

async fn read_partition(
    bootstrap: &str,
    topic: &str,
    p: i32,
) -> Result<Vec<MemoryRecord>, KafkaError> {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    let records = tokio::task::spawn_blocking(move || {
        crate::kafka::tools::read_partition_to_end(&bootstrap, &topic, p, Duration::from_secs(30))
    })
    .await
    .map_err(|_| KafkaError::Canceled)??;
    // Later records of a conversation replace earlier ones; a tombstone or a record that is
    // not a memory record is skipped.
    Ok(records
        .iter()
        .filter_map(|m| serde_json::from_slice(m.payload()?).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redone_turn_replaces_itself_and_is_not_seen_by_its_job() {
        let job = |id: &str, text: &str| -> Job {
            serde_json::from_value(
                serde_json::json!({"id": id, "input": text, "conversation_id": "c"}),
            )
            .unwrap()
        };
        let mut memory = MemoryRecord::default();
        for (id, text) in [("j1", "one"), ("j2", "two"), ("j3", "three")] {
            memory = update(0, memory, &job(id, text), &format!("re {text}"), "t").record;
        }
        // j3 runs again after a crash: it does not see its own turn, and adding it again
        // leaves one copy.
        let seen = memory.messages_for("j3");
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[3].content, "re two");
        memory = update(0, memory, &job("j3", "three"), "re three (again)", "t").record;
        let ids: Vec<&str> = memory.turns.iter().map(|t| t.job_id.as_str()).collect();
        assert_eq!(ids, ["j1", "j2", "j3"]);
        assert_eq!(memory.messages_for("j4").len(), 6);
    }

    #[test]
    fn memory_is_bounded_in_turns_and_bytes() {
        let mut m = MemoryRecord::default();
        for i in 0..10 {
            let t = Turn {
                job_id: format!("j{i}"),
                messages: vec![],
                answer: "x".repeat(100),
                at: String::new(),
            };
            m.append(t, 5, 350);
        }
        assert_eq!(m.turns.len(), 3, "bytes bound the five turns to three");
        assert_eq!(m.turns[2].job_id, "j9");
        assert_eq!(partition_of("c", 6), partition_of("c", 6));
    }
}
