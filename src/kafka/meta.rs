//! Record metadata: what baton reads from a consumed record's headers, once, into a typed
//! struct ([`RecordMeta`]), and everything it writes into an output record's headers, in one
//! place ([`OutMeta::headers`]), including the retry history a job carries from round to round
//! ([`Round`]).

use rdkafka::message::{Header, OwnedHeaders};
use serde::{Deserialize, Serialize};

use super::headers::{self, RawHeaders};
use crate::config::ErrorClass;

/// What a consumed record's headers say, read in one pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordMeta {
    /// The `traceparent` of every record written about this one: a child of the incoming
    /// trace (a new trace when the record has none).
    pub traceparent: String,
    /// What earlier steps and rounds billed for the job (`baton-job-cost-usd`), USD.
    pub job_cost_usd: f64,
    /// What earlier rounds of this step billed (`baton-step-cost-usd`), USD; retry records only.
    pub step_cost_usd: f64,
    /// Provider calls of earlier rounds of this step (`baton-attempt`); retry records only (a
    /// forwarded job's attempt count is the previous step's).
    pub attempts: u32,
    /// When a retry record is due (`baton-retry-due`, Unix ms).
    pub retry_due_ms: Option<u64>,
    /// The job's failed rounds so far (`baton-retry-history`).
    pub history: Vec<Round>,
    /// When a worker first consumed the job (`baton-first-consumed-ms`, Unix ms), at any
    /// step; `None` on its first consumption.
    pub first_consumed_ms: Option<u64>,
    /// How long it waited before that (`baton-queue-ms`).
    pub queue_ms: Option<u64>,
}

impl RecordMeta {
    /// Reads the headers of a record consumed from a step's input topic, or from one of its
    /// retry tiers when `retry_record`. Absent or unreadable values read as none.
    pub fn read<H: RawHeaders + ?Sized>(headers: Option<&H>, retry_record: bool) -> RecordMeta {
        // The first header of each name counts, as `headers::get` reads it.
        let mut first: [Option<String>; 8] = Default::default();
        let wanted = [
            headers::TRACEPARENT,
            headers::JOB_COST,
            headers::RETRY_HISTORY,
            headers::STEP_COST,
            headers::ATTEMPT,
            headers::RETRY_DUE,
            headers::FIRST_CONSUMED,
            headers::QUEUE_MS,
        ];
        if let Some(h) = headers {
            headers::for_each_raw(h, |key, value| {
                if let Some(i) = wanted.iter().position(|w| w.as_bytes() == key) {
                    first[i].get_or_insert_with(|| {
                        value
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .unwrap_or_default()
                            .to_string()
                    });
                }
            });
        }
        let [trace, job_cost, history, step_cost, attempts, due, first_consumed, queue] =
            first.map(|v| v.filter(|v| !v.is_empty()));
        // A forwarded job's `baton-attempt` and costs are the previous step's: only a retry
        // record carries this step's earlier rounds.
        let own = |v: Option<String>| v.filter(|_| retry_record);
        RecordMeta {
            traceparent: headers::child_traceparent(trace.as_deref()),
            job_cost_usd: usd(job_cost.as_deref()),
            step_cost_usd: usd(own(step_cost).as_deref()),
            attempts: own(attempts).and_then(|a| a.parse().ok()).unwrap_or(0),
            retry_due_ms: own(due).and_then(|d| d.parse().ok()),
            history: history
                .and_then(|h| serde_json::from_str(&h).ok())
                .unwrap_or_default(),
            first_consumed_ms: first_consumed.and_then(|v| v.parse().ok()),
            queue_ms: queue.and_then(|v| v.parse().ok()),
        }
    }

    /// The job's times as of its pick-up at `now_ms`, for a record written at `written_ms`:
    /// what the headers carry when `carried` (a retry record, or a job forwarded by an earlier
    /// step: baton wrote them; a producer's own are not taken on a first step's input), or, on
    /// the job's first consumption, now and the wait since it was written.
    pub fn times(&self, now_ms: u64, written_ms: Option<i64>, carried: bool) -> JobTimes {
        match self.first_consumed_ms.filter(|_| carried) {
            Some(first) => JobTimes {
                first_consumed_ms: first.min(now_ms),
                queue_ms: self.queue_ms.unwrap_or(0),
            },
            None => JobTimes {
                first_consumed_ms: now_ms,
                queue_ms: written_ms
                    .filter(|&w| w >= 0)
                    .map_or(0, |w| now_ms.saturating_sub(w as u64)),
            },
        }
    }
}

/// When a job was first consumed and how long it had waited for that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobTimes {
    /// Unix ms of the first consumption, at any step.
    pub first_consumed_ms: u64,
    /// Milliseconds between the input record's timestamp and that.
    pub queue_ms: u64,
}

/// A USD amount from a header: finite and not negative, else nothing.
fn usd(v: Option<&str>) -> f64 {
    v.and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .unwrap_or(0.0)
}

/// Most rounds kept in a retry history (the oldest are dropped beyond it).
pub const MAX_HISTORY: usize = 20;

/// One failed round of a job, as its retry history (`baton-retry-history`) keeps it. The
/// fields are in the order they are written: alphabetical, as the history has always been.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// When the round failed (RFC 3339).
    pub at: String,
    /// Provider calls made in the round.
    pub attempts: u32,
    /// Why it failed.
    pub error_class: ErrorClass,
    /// The last model tried, if any.
    pub model: Option<String>,
    /// The topic the round consumed the job from (the input topic or a retry tier).
    pub topic: String,
}

/// `history` with `round` appended, the oldest rounds dropped beyond [`MAX_HISTORY`].
pub fn append(mut history: Vec<Round>, round: Round) -> Vec<Round> {
    history.push(round);
    if history.len() > MAX_HISTORY {
        history.drain(..history.len() - MAX_HISTORY);
    }
    history
}

/// A retry record's place in its tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryHeaders {
    /// Tier index.
    pub tier: usize,
    /// Due time, Unix milliseconds.
    pub due_ms: u64,
    /// Rounds sent to a tier so far, this one included.
    pub count: u32,
}

/// Where a dead-lettered record came from and why it failed.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetterHeaders<'a> {
    /// Error class (`invalid_json`...).
    pub error_class: &'a str,
    /// Readable message.
    pub error: &'a str,
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Last model tried, if any.
    pub last_model: Option<&'a str>,
    /// When it failed (RFC 3339).
    pub failed_at: &'a str,
}

/// Everything baton writes in an output record's headers.
#[derive(Debug, Clone, Copy)]
pub struct OutMeta<'a> {
    /// `baton-job-id`.
    pub job_id: &'a str,
    /// `baton-step`: `<pipeline>.<step>`.
    pub step: &'a str,
    /// `baton-attempt`: provider calls made for the job's step so far.
    pub attempt: u32,
    /// `traceparent`.
    pub traceparent: &'a str,
    /// `baton-variant`, when the route has variants.
    pub variant: Option<&'a str>,
    /// `baton-job-cost-usd`: what the job has been billed so far (forwarded jobs, results and
    /// retry records carry it, so later steps and rounds keep its cost ceiling).
    pub job_cost_usd: Option<f64>,
    /// `baton-step-cost-usd`: what this step's rounds have been billed (retry records).
    pub step_cost_usd: Option<f64>,
    /// The retry-tier headers (retry records).
    pub retry: Option<RetryHeaders>,
    /// `baton-retry-history`, as JSON (retry records, and dead letters after retry tiers).
    pub history: Option<&'a str>,
    /// The dead-letter headers (dead letters and review records).
    pub dead: Option<DeadLetterHeaders<'a>>,
    /// `baton-review-reason`: why a result was copied to the review topic.
    pub review_reason: Option<&'a str>,
    /// `baton-first-consumed-ms` and `baton-queue-ms`: the job's times, on every record that
    /// carries the job on (forwards, retry records, dead letters) and on its result.
    pub times: Option<JobTimes>,
}

impl OutMeta<'_> {
    /// The headers: `carried` (the original record's own headers, for a record that carries
    /// its value on), then baton's. Any baton header the original carried is replaced.
    pub fn headers<H: RawHeaders + ?Sized>(&self, carried: Option<&H>) -> OwnedHeaders {
        let attempt = self.attempt.to_string();
        let mut fields: Vec<(&str, String)> = Vec::with_capacity(8);
        let mut text = |k: &'static str, v: &str| fields.push((k, v.to_string()));
        text(headers::JOB_ID, self.job_id);
        text(headers::STEP, self.step);
        text(headers::ATTEMPT, &attempt);
        text(headers::TRACEPARENT, self.traceparent);
        if let Some(r) = self.retry {
            text(headers::RETRY_TIER, &r.tier.to_string());
            text(headers::RETRY_DUE, &r.due_ms.to_string());
            text(headers::RETRY_COUNT, &r.count.to_string());
        }
        if let Some(d) = self.dead {
            text(headers::ERROR_CLASS, d.error_class);
            text(headers::ERROR, d.error);
            text(headers::ORIGINAL_TOPIC, d.topic);
            text(headers::ORIGINAL_PARTITION, &d.partition.to_string());
            text(headers::ORIGINAL_OFFSET, &d.offset.to_string());
            text(headers::FAILED_AT, d.failed_at);
            text(headers::LAST_MODEL, d.last_model.unwrap_or(""));
        }
        if let Some(v) = self.variant {
            text(headers::VARIANT, v);
        }
        if let Some(h) = self.history {
            text(headers::RETRY_HISTORY, h);
        }
        if let Some(c) = self.job_cost_usd {
            text(headers::JOB_COST, &c.to_string());
        }
        if let Some(c) = self.step_cost_usd {
            text(headers::STEP_COST, &c.to_string());
        }
        if let Some(why) = self.review_reason {
            text(headers::REVIEW_REASON, why);
        }
        if let Some(t) = self.times {
            text(headers::FIRST_CONSUMED, &t.first_consumed_ms.to_string());
            text(headers::QUEUE_MS, &t.queue_ms.to_string());
        }
        fields
            .iter()
            .fold(headers::carried(carried), |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> OwnedHeaders {
        pairs.iter().fold(OwnedHeaders::new(), |h, (key, v)| {
            h.insert(Header {
                key,
                value: Some(*v),
            })
        })
    }

    #[test]
    fn a_retry_record_is_read_in_one_pass() {
        let history =
            r#"[{"at":"t","topic":"p.s","error_class":"provider_error","model":"m","attempts":3}]"#;
        let record = h(&[
            (
                headers::TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (headers::JOB_COST, "0.25"),
            (headers::STEP_COST, "0.125"),
            (headers::ATTEMPT, "3"),
            (headers::RETRY_DUE, "1234"),
            (headers::RETRY_HISTORY, history),
        ]);
        let m = RecordMeta::read(Some(&record), true);
        assert!(m
            .traceparent
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_eq!(
            (m.job_cost_usd, m.step_cost_usd, m.attempts),
            (0.25, 0.125, 3)
        );
        assert_eq!(m.retry_due_ms, Some(1234));
        assert_eq!(m.history[0].error_class, ErrorClass::ProviderError);
        // The same headers on an input-topic record: only the job's cost carries over.
        let m = RecordMeta::read(Some(&record), false);
        assert_eq!(
            (m.job_cost_usd, m.step_cost_usd, m.attempts),
            (0.25, 0.0, 0)
        );
        assert_eq!(m.retry_due_ms, None);
    }

    #[test]
    fn a_round_is_written_as_the_history_always_was() {
        let round = Round {
            at: "t".into(),
            attempts: 3,
            error_class: ErrorClass::ProviderError,
            model: Some("m".into()),
            topic: "p.s".into(),
        };
        assert_eq!(
            serde_json::to_string(&[round]).unwrap(),
            r#"[{"at":"t","attempts":3,"error_class":"provider_error","model":"m","topic":"p.s"}]"#
        );
    }

    #[test]
    fn the_history_keeps_the_latest_rounds() {
        let round = |i: u32| Round {
            at: String::new(),
            topic: "t".into(),
            error_class: ErrorClass::ProviderError,
            model: None,
            attempts: i,
        };
        let mut h = Vec::new();
        for i in 0..25 {
            h = append(h, round(i));
        }
        assert_eq!(h.len(), MAX_HISTORY);
        assert_eq!(h[0].attempts, 5);
    }

    #[test]
    fn unreadable_values_read_as_none() {
        let record = h(&[(headers::JOB_COST, "-1"), (headers::ATTEMPT, "many")]);
        let m = RecordMeta::read(Some(&record), true);
        assert_eq!((m.job_cost_usd, m.attempts), (0.0, 0));
        assert_eq!(
            RecordMeta::read::<OwnedHeaders>(None, false).job_cost_usd,
            0.0
        );
    }

    #[test]
    fn dead_letter_headers_carry_origin_and_class() {
        let original = h(&[("app", "x"), (headers::ERROR_CLASS, "stale")]);
        let out = OutMeta {
            job_id: "j",
            step: "p.s",
            attempt: 0,
            traceparent: "tp",
            variant: Some("b"),
            job_cost_usd: None,
            step_cost_usd: None,
            retry: None,
            history: Some("[]"),
            dead: Some(DeadLetterHeaders {
                error_class: "invalid_json",
                error: "bad",
                topic: "t",
                partition: 2,
                offset: 7,
                last_model: None,
                failed_at: "now",
            }),
            review_reason: None,
            times: Some(JobTimes {
                first_consumed_ms: 1_000,
                queue_ms: 5,
            }),
        }
        .headers(Some(&original));
        let get = |k| headers::get(Some(&out), k);
        // The job's times travel with it: a later round reads them, not its own pick-up.
        let later = RecordMeta::read(Some(&out), true).times(9_000, Some(8_000), true);
        assert_eq!((later.first_consumed_ms, later.queue_ms), (1_000, 5));
        let first = RecordMeta::read(Some(&original), false).times(9_000, Some(8_000), false);
        assert_eq!((first.first_consumed_ms, first.queue_ms), (9_000, 1_000));
        // On a first step's input, a producer's own headers are not taken.
        let produced = RecordMeta::read(Some(&out), false).times(9_000, Some(8_000), false);
        assert_eq!(
            (produced.first_consumed_ms, produced.queue_ms),
            (9_000, 1_000)
        );
        assert_eq!(get("app").as_deref(), Some("x"));
        assert_eq!(get(headers::ERROR_CLASS).as_deref(), Some("invalid_json"));
        assert_eq!(get(headers::ORIGINAL_PARTITION).as_deref(), Some("2"));
        assert_eq!(get(headers::ORIGINAL_OFFSET).as_deref(), Some("7"));
        assert_eq!(get(headers::VARIANT).as_deref(), Some("b"));
        assert_eq!(get(headers::JOB_ID).as_deref(), Some("j"));
        let mut classes = 0;
        headers::for_each_raw(&out, |k, _| {
            classes += usize::from(k == headers::ERROR_CLASS.as_bytes())
        });
        assert_eq!(classes, 1);
    }
}
