//! Dead-letter topics for people: what is in one (`baton dlq inspect`) and putting records
//! back to work (`baton dlq replay`).
//!
//! A dead letter is the original record (value and key untouched) with the `baton-error*` and
//! `baton-original-*` headers. Inspect groups them by error class; replay republishes the
//! original value and key to the step's input topic (or another), with the record's own
//! headers, its job id and a `baton-replayed-from` header naming the dead letter
//! (`<topic>/<partition>/<offset>`), so a replay run twice is recognisable downstream.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};

use super::headers;

/// Header naming the dead letter a replayed record came from.
pub const REPLAYED_FROM: &str = "baton-replayed-from";

/// Which dead letters a command concerns.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this error class.
    pub error_class: Option<String>,
    /// Only dead letters that failed at most this long ago.
    pub since: Option<Duration>,
}

/// One dead letter, read for people.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Partition and offset in the dead-letter topic.
    pub partition: i32,
    /// Offset in the dead-letter topic.
    pub offset: i64,
    /// The job id (`baton-job-id`).
    pub job_id: String,
    /// `baton-error-class`.
    pub error_class: String,
    /// `baton-error`.
    pub error: String,
    /// `baton-failed-at`.
    pub failed_at: String,
    /// `baton-last-model`.
    pub last_model: String,
    /// The record key, lossily as text.
    pub key: Option<String>,
    /// The first characters of the value, lossily as text.
    pub excerpt: String,
}

/// Characters of a value shown in an excerpt.
const EXCERPT_CHARS: usize = 160;

impl DeadLetter {
    /// Reads the headers and an excerpt of `m`.
    pub fn of(m: &OwnedMessage) -> DeadLetter {
        let h = |k: &str| headers::get(m.headers(), k).unwrap_or_default();
        let value = m
            .payload()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        DeadLetter {
            partition: m.partition(),
            offset: m.offset(),
            job_id: h(headers::JOB_ID),
            error_class: h(headers::ERROR_CLASS),
            error: h(headers::ERROR),
            failed_at: h(headers::FAILED_AT),
            last_model: h(headers::LAST_MODEL),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            excerpt: crate::util::excerpt(&value, EXCERPT_CHARS),
        }
    }

    /// Whether it passes `f` at `now`.
    pub fn matches(&self, f: &Filter, now: SystemTime) -> bool {
        if f.error_class
            .as_ref()
            .is_some_and(|c| *c != self.error_class)
        {
            return false;
        }
        match f.since {
            None => true,
            Some(d) => chrono::DateTime::parse_from_rfc3339(&self.failed_at)
                .ok()
                .map(SystemTime::from)
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() <= d),
        }
    }
}

/// Counts per error class.
pub fn by_class(letters: &[DeadLetter]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in letters {
        *m.entry(l.error_class.clone()).or_default() += 1;
    }
    m
}

/// Where `--to` sends replays: `original` is the step's input topic (the dead-letter topic's
/// name without `.dlq`), anything else is a topic name.
pub fn replay_target(dlq_topic: &str, to: &str) -> Result<String, String> {
    if to != "original" {
        return Ok(to.to_string());
    }
    dlq_topic
        .strip_suffix(".dlq")
        .map(str::to_string)
        .ok_or_else(|| {
            format!("{dlq_topic:?} is not a dead-letter topic (<input>.dlq); name a target with --to TOPIC")
        })
}

/// Headers of a replayed record: the dead letter's own (non-baton) headers, its job id, and
/// where it was replayed from.
pub fn replay_headers(m: &OwnedMessage) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(h) = m.headers() {
        for i in 0..h.count() {
            let hd = h.get(i);
            if !hd.key.starts_with("baton-") && hd.key != headers::TRACEPARENT {
                out = out.insert(Header {
                    key: hd.key,
                    value: hd.value,
                });
            }
        }
    }
    let from = format!("{}/{}/{}", m.topic(), m.partition(), m.offset());
    let job_id = headers::get(m.headers(), headers::JOB_ID).unwrap_or_default();
    out.insert(Header {
        key: headers::JOB_ID,
        value: Some(job_id.as_bytes()),
    })
    .insert(Header {
        key: REPLAYED_FROM,
        value: Some(from.as_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(class: &str, failed_at: &str) -> DeadLetter {
        DeadLetter {
            partition: 0,
            offset: 1,
            job_id: "j".into(),
            error_class: class.into(),
            error: "e".into(),
            failed_at: failed_at.into(),
            last_model: String::new(),
            key: None,
            excerpt: String::new(),
        }
    }

    #[test]
    fn filters_by_class_and_age() {
        let now =
            SystemTime::from(chrono::DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z").unwrap());
        let old = letter("provider_error", "2026-11-24T10:00:00.000Z");
        let new = letter("content_filter", "2026-11-24T11:59:00.000Z");
        let class = Filter {
            error_class: Some("content_filter".into()),
            since: None,
        };
        assert!(!old.matches(&class, now) && new.matches(&class, now));
        let hour = Filter {
            error_class: None,
            since: Some(Duration::from_secs(3600)),
        };
        assert!(!old.matches(&hour, now) && new.matches(&hour, now));
        assert_eq!(
            by_class(&[old.clone(), new, old])
                .into_iter()
                .collect::<Vec<_>>(),
            vec![("content_filter".into(), 1), ("provider_error".into(), 2)]
        );
    }

    #[test]
    fn original_means_the_steps_input_topic() {
        assert_eq!(replay_target("p.s.dlq", "original").unwrap(), "p.s");
        assert_eq!(replay_target("p.s.dlq", "other").unwrap(), "other");
        assert!(replay_target("p.s", "original").is_err());
    }
}
