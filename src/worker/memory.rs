//! Conversation memory on the compacted memory topic (key = conversation id, one record per
//! conversation holding its newest turns). A conversation lives on the memory partition its id
//! hashes to (xxh3, modulo the topic's partitions), whatever partitioner the job's producer
//! used, so retry tiers and any client agree on where it is.
//!
//! A record is the whole conversation, so an update is a read-modify-write; two rules keep
//! updates from overwriting each other:
//! - within a worker, the jobs of one conversation take turns ([`Memory::lock`], held from the
//!   read to the acknowledged write), whichever topic or partition they come from;
//! - across workers, a worker reads a memory partition (to its high watermark) the first time
//!   a job needs it after each rebalance, which is when another worker may have written its
//!   conversations.
//!
//! Two workers running turns of one conversation between rebalances (its jobs keyed by
//! something else, or a retry tier's partition owned by another worker) can still overwrite
//! each other: key a conversation's jobs by its id, as `baton produce` does.
//!
//! A new turn is published after the job's own output is acknowledged (a dead-lettered job
//! records no turn) and before its offset is stored; only then does the cache take it. A job
//! run again after a crash finds its own turn already there: it neither sees it nor adds it
//! twice. Any rebalance empties the cache, and so does a cache grown past [`MAX_CACHE_BYTES`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaSettings;
use crate::envelope::{Job, MemoryRecord, Turn};

/// Text a conversation's memory record keeps at most (its oldest turns go first).
pub const MAX_CONVERSATION_BYTES: usize = 256 * 1024;
/// Bytes of conversations a worker caches before it starts over.
pub const MAX_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Turns a conversation's record keeps at most.
pub const MAX_TURNS: usize = 200;

/// The worker's view of the memory topic.
#[derive(Default)]
pub(super) struct Memory {
    cache: tokio::sync::Mutex<Cache>,
    /// Bumped by every rebalance: a cache of an older generation is emptied before use.
    generation: AtomicU64,
    /// One lock per conversation with a job in this worker.
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Default)]
struct Cache {
    generation: u64,
    partitions: Option<i32>,
    /// Memory partitions read in this generation.
    loaded: std::collections::HashSet<i32>,
    conversations: HashMap<String, MemoryRecord>,
    bytes: usize,
}

/// A conversation's turn to update its memory, held from its read to its acknowledged write.
pub(super) struct ConversationGuard {
    conversation: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    memory: Arc<Memory>,
}

impl Drop for ConversationGuard {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self.memory.locks.lock().unwrap_or_else(|e| e.into_inner());
        // The last holder (or waiter) gone: forget the lock, so the map stays small.
        if locks
            .get(&self.conversation)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.conversation);
        }
    }
}

/// A memory record to publish after a job's result, with the conversation's turn held until
/// it is written.
pub(super) struct MemoryUpdate {
    /// Its partition of the memory topic.
    pub partition: i32,
    /// The conversation's record with the new turn.
    pub record: MemoryRecord,
    /// The conversation's lock in this worker.
    _guard: ConversationGuard,
}

impl Memory {
    /// Forgets everything: partitions moved, another worker may have written turns.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Waits for `conversation`'s turn in this worker.
    pub async fn lock(self: &Arc<Self>, conversation: &str) -> ConversationGuard {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(conversation.to_string()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        ConversationGuard {
            conversation: conversation.to_string(),
            guard: Some(guard),
            memory: self.clone(),
        }
    }

    /// The memory of `conversation`, loading its partition first if needed; retries a failed
    /// read until it succeeds or `cancel` fires (`None`).
    pub async fn get(
        &self,
        kafka: &KafkaSettings,
        topic: &str,
        conversation: &str,
        cancel: &CancellationToken,
    ) -> Option<(i32, MemoryRecord)> {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.try_get(kafka, topic, conversation).await {
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
        kafka: &KafkaSettings,
        topic: &str,
        conversation: &str,
    ) -> Result<(i32, MemoryRecord), KafkaError> {
        let mut cache = self.cache.lock().await;
        let generation = self.generation.load(Ordering::SeqCst);
        if cache.generation != generation || cache.bytes > MAX_CACHE_BYTES {
            // The partition count is read again too: the topic may have grown.
            *cache = Cache {
                generation,
                ..Cache::default()
            };
        }
        let partitions = match cache.partitions {
            Some(n) => n,
            None => {
                let n = partition_count(kafka, topic).await?;
                cache.partitions = Some(n);
                n
            }
        };
        let p = partition_of(conversation, partitions);
        if !cache.loaded.contains(&p) {
            let records = read_partition(kafka, topic, p).await?;
            for record in records {
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

/// `job`'s finished turn (its answer `answer`), with the policy it ran under.
pub(super) fn turn(job: &Job, answer: &str, now: &str) -> Turn {
    Turn {
        job_id: job.id.clone(),
        messages: job.chat_messages(),
        answer: answer.to_string(),
        at: now.to_string(),
        tenant: job.tenant.clone(),
        sensitivity: job.sensitivity(),
        residency: job.policy.as_ref().and_then(|p| p.residency.clone()),
    }
}

/// The update that adds `turn` to `memory`, holding the conversation's lock until written.
pub(super) fn update(
    partition: i32,
    mut memory: MemoryRecord,
    turn: Turn,
    guard: ConversationGuard,
) -> MemoryUpdate {
    memory.append(turn, MAX_TURNS, MAX_CONVERSATION_BYTES);
    MemoryUpdate {
        partition,
        record: memory,
        _guard: guard,
    }
}

async fn partition_count(kafka: &KafkaSettings, topic: &str) -> Result<i32, KafkaError> {
    let (client, topic) = (crate::kafka::client_config(kafka), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = client.create()?;
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

/// The memory records of partition `p`, from its beginning to its high watermark.
async fn read_partition(
    kafka: &KafkaSettings,
    topic: &str,
    p: i32,
) -> Result<Vec<MemoryRecord>, KafkaError> {
    let (client, topic) = (crate::kafka::client_config(kafka), topic.to_string());
    let (records, _) = tokio::task::spawn_blocking(move || {
        let reader = crate::kafka::tools::partition_reader(&client)?;
        crate::kafka::tools::read_partition_from(&reader, &topic, p, None, Duration::from_secs(30))
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
            let t = turn(&job(id, text), &format!("re {text}"), "t");
            memory.append(t, MAX_TURNS, MAX_CONVERSATION_BYTES);
        }
        // j3 runs again after a crash: it does not see its own turn, and adding it again
        // leaves one copy.
        let seen = memory.messages_for(&job("j3", "three"));
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[3].content, "re two");
        let again = turn(&job("j3", "three"), "re three (again)", "t");
        memory.append(again, MAX_TURNS, MAX_CONVERSATION_BYTES);
        let ids: Vec<&str> = memory.turns.iter().map(|t| t.job_id.as_str()).collect();
        assert_eq!(ids, ["j1", "j2", "j3"]);
        assert_eq!(memory.messages_for(&job("j4", "four")).len(), 6);
        // Another tenant, or a job allowed less than the turns were made under, sees none.
        let mut other = job("j4", "four");
        other.tenant = Some("acme".into());
        assert!(memory.messages_for(&other).is_empty());
        let mut public = job("j4", "four");
        public.policy = Some(crate::envelope::Policy {
            sensitivity: Some(crate::config::Sensitivity::Public),
            ..Default::default()
        });
        assert!(memory.messages_for(&public).is_empty());
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
                tenant: None,
                sensitivity: Default::default(),
                residency: None,
            };
            m.append(t, 5, 350);
        }
        assert_eq!(m.turns.len(), 3, "bytes bound the five turns to three");
        assert_eq!(m.turns[2].job_id, "j9");
        assert_eq!(partition_of("c", 6), partition_of("c", 6));
    }
}
