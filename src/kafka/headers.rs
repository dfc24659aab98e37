//! The record headers of DESIGN.md: every record baton writes carries `baton-job-id`,
//! `baton-step`, `baton-attempt` and a W3C `traceparent`; dead letters add the `baton-error*`
//! and `baton-original-*` headers so a person can see what failed, where, and why.

use rand::Rng;
use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Job id of the record.
pub const JOB_ID: &str = "baton-job-id";
/// Step that wrote the record (`<pipeline>.<step>`).
pub const STEP: &str = "baton-step";
/// Provider calls made so far for the job.
pub const ATTEMPT: &str = "baton-attempt";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// Dead letters: the error class.
pub const ERROR_CLASS: &str = "baton-error-class";
/// Dead letters: a readable message.
pub const ERROR: &str = "baton-error";
/// Dead letters: where the record was consumed from.
pub const ORIGINAL_TOPIC: &str = "baton-original-topic";
/// Dead letters: its partition.
pub const ORIGINAL_PARTITION: &str = "baton-original-partition";
/// Dead letters: its offset.
pub const ORIGINAL_OFFSET: &str = "baton-original-offset";
/// Dead letters: when it failed (RFC 3339).
pub const FAILED_AT: &str = "baton-failed-at";
/// Dead letters: the last model tried, empty when none was.
pub const LAST_MODEL: &str = "baton-last-model";

/// The value of a header as UTF-8, if present and valid.
pub fn get<'a, H: Headers>(headers: Option<&'a H>, key: &str) -> Option<&'a str> {
    let h = headers?;
    (0..h.count())
        .map(|i| h.get(i))
        .find(|hd| hd.key == key)
        .and_then(|hd| hd.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// A child `traceparent`: the incoming trace id when there is a valid one (so a job's records
/// stay in one trace), a new span id, sampled.
pub fn child_traceparent(incoming: Option<&str>) -> String {
    let mut rng = rand::thread_rng();
    let trace_id = incoming
        .and_then(parse_trace_id)
        .unwrap_or_else(|| format!("{:032x}", rng.gen::<u128>() | 1));
    format!("00-{trace_id}-{:016x}-01", rng.gen::<u64>() | 1)
}

fn parse_trace_id(tp: &str) -> Option<String> {
    let mut parts = tp.split('-');
    let (version, trace, span, _flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let ok = hex(version, 2) && hex(trace, 32) && hex(span, 16) && trace.bytes().any(|b| b != b'0');
    ok.then(|| trace.to_ascii_lowercase())
}

/// The common headers of every record baton writes.
pub fn common(job_id: &str, step: &str, attempt: u32, traceparent: &str) -> OwnedHeaders {
    with_common(OwnedHeaders::new(), job_id, step, attempt, traceparent)
}

/// Appends the common headers to `headers`.
fn with_common(
    headers: OwnedHeaders,
    job_id: &str,
    step: &str,
    attempt: u32,
    traceparent: &str,
) -> OwnedHeaders {
    let attempt = attempt.to_string();
    [
        (JOB_ID, job_id),
        (STEP, step),
        (ATTEMPT, &attempt),
        (TRACEPARENT, traceparent),
    ]
    .into_iter()
    .fold(headers, |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value),
        })
    })
}

/// Where a dead-lettered record came from and why it failed.
#[derive(Debug, Clone)]
pub struct DeadLetterInfo<'a> {
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
}

/// Headers of a dead letter: the original record's own headers (minus any baton headers they
/// carried, which are replaced) followed by the common and dead-letter headers.
pub fn dead_letter<H: Headers>(
    original: Option<&H>,
    job_id: &str,
    step: &str,
    attempt: u32,
    traceparent: &str,
    info: &DeadLetterInfo<'_>,
) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(h) = original {
        for i in 0..h.count() {
            let hd = h.get(i);
            if hd.key.starts_with("baton-") || hd.key == TRACEPARENT {
                continue;
            }
            out = out.insert(Header {
                key: hd.key,
                value: hd.value,
            });
        }
    }
    let partition = info.partition.to_string();
    let offset = info.offset.to_string();
    let now = crate::util::now_rfc3339();
    let dead = [
        (ERROR_CLASS, info.error_class),
        (ERROR, info.error),
        (ORIGINAL_TOPIC, info.topic),
        (ORIGINAL_PARTITION, &partition),
        (ORIGINAL_OFFSET, &offset),
        (FAILED_AT, &now),
        (LAST_MODEL, info.last_model.unwrap_or("")),
    ];
    dead.into_iter().fold(
        with_common(out, job_id, step, attempt, traceparent),
        |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_keeps_the_incoming_trace() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let child = child_traceparent(Some(parent));
        assert!(child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_ne!(child, parent);
        assert_eq!(child.len(), 55);
    }

    #[test]
    fn invalid_traceparent_starts_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            let child = child_traceparent(Some(bad));
            assert_eq!(child.len(), 55);
            assert!(!child.contains("00000000000000000000000000000000"));
        }
    }

    #[test]
    fn dead_letter_headers_carry_origin_and_class() {
        let original = OwnedHeaders::new()
            .insert(Header {
                key: "app",
                value: Some("x"),
            })
            .insert(Header {
                key: ERROR_CLASS,
                value: Some("stale"),
            });
        let info = DeadLetterInfo {
            error_class: "invalid_json",
            error: "bad",
            topic: "t",
            partition: 2,
            offset: 7,
            last_model: None,
        };
        let h = dead_letter(Some(&original), "j", "p.s", 0, "tp", &info);
        assert_eq!(get(Some(&h), "app"), Some("x"));
        assert_eq!(get(Some(&h), ERROR_CLASS), Some("invalid_json"));
        assert_eq!(get(Some(&h), ORIGINAL_PARTITION), Some("2"));
        assert_eq!(get(Some(&h), ORIGINAL_OFFSET), Some("7"));
        let classes = (0..h.count())
            .filter(|&i| h.get(i).key == ERROR_CLASS)
            .count();
        assert_eq!(classes, 1);
    }
}
