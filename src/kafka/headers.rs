//! The record headers of DESIGN.md: every record baton writes carries `baton-job-id`,
//! `baton-step`, `baton-attempt` and a W3C `traceparent`; dead letters add the `baton-error*`
//! and `baton-original-*` headers so a person can see what failed, where, and why.
//!
//! This file names the headers and reads them safely; [`super::meta`] reads a consumed
//! record's headers once and writes an output record's in one place.

use rand::Rng;
use rdkafka::message::{BorrowedHeaders, Header, OwnedHeaders};

/// Job id of the record.
pub const JOB_ID: &str = "baton-job-id";
/// When a worker first consumed the job, at any step (Unix ms): forwarded jobs, retry records
/// and dead letters carry it, so a result can say how long the whole job took.
pub const FIRST_CONSUMED: &str = "baton-first-consumed-ms";
/// How long the job waited in its input topic before it was first consumed (ms).
pub const QUEUE_MS: &str = "baton-queue-ms";
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
/// Retry records: what the step's earlier rounds billed (USD), so the result reports the
/// step's cost over every round.
pub const STEP_COST: &str = "baton-step-cost-usd";
/// Retry records: which tier (0-based) the record waits in.
pub const RETRY_TIER: &str = "baton-retry-tier";
/// Retry records: when the record is due (Unix time in milliseconds).
pub const RETRY_DUE: &str = "baton-retry-due";
/// Retry records: how many times the job has been sent to a retry tier.
pub const RETRY_COUNT: &str = "baton-retry-count";
/// Retry records and their dead letters: every failed round so far, as a JSON array of
/// `{"at", "topic", "error_class", "model", "attempts"}` (`meta::Round`).
pub const RETRY_HISTORY: &str = "baton-retry-history";
/// Results and dead letters: the route's A/B variant, when it has variants.
pub const VARIANT: &str = "baton-variant";
/// Forwarded jobs and retry records: what the job has been billed so far (USD), so later steps
/// and rounds keep its cost ceiling.
pub const JOB_COST: &str = "baton-job-cost-usd";
/// Why a result was copied to the review topic (its step's `review_when`).
pub const REVIEW_REASON: &str = "baton-review-reason";

/// A header list baton can read: borrowed from a consumer or owned by a detached message.
pub trait RawHeaders {
    /// The list as rdkafka's borrowed handle.
    fn borrowed(&self) -> &BorrowedHeaders;
}

impl RawHeaders for BorrowedHeaders {
    fn borrowed(&self) -> &BorrowedHeaders {
        self
    }
}

impl RawHeaders for OwnedHeaders {
    fn borrowed(&self) -> &BorrowedHeaders {
        self.as_borrowed()
    }
}

/// Calls `f` with every header's key and value as raw bytes.
///
/// rdkafka's own accessors (`Headers::get`) panic on a key that is not UTF-8, and any producer
/// can send one; a record must never be able to crash the worker, so headers are read through
/// librdkafka directly.
pub fn for_each_raw<H: RawHeaders + ?Sized>(headers: &H, mut f: impl FnMut(&[u8], Option<&[u8]>)) {
    use rdkafka::bindings as rd;
    // `BorrowedHeaders` is rdkafka's handle type for a native `rd_kafka_headers_t`: a reference
    // to it is the native pointer (rdkafka converts it with the same cast).
    let native = headers.borrowed() as *const BorrowedHeaders as *const rd::rd_kafka_headers_t;
    // SAFETY: `native` is a valid header list for the lifetime of `headers`; librdkafka returns
    // a NUL-terminated name and a value of `size` bytes (or NULL) that live as long as the list.
    unsafe {
        for idx in 0..rd::rd_kafka_header_cnt(native) {
            let mut name = std::ptr::null();
            let mut value = std::ptr::null();
            let mut size = 0usize;
            let err = rd::rd_kafka_header_get_all(native, idx, &mut name, &mut value, &mut size);
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                break;
            }
            let key = std::ffi::CStr::from_ptr(name).to_bytes();
            let value =
                (!value.is_null()).then(|| std::slice::from_raw_parts(value as *const u8, size));
            f(key, value);
        }
    }
}

/// The value of the first header named `key`, if present and UTF-8.
pub fn get<H: RawHeaders + ?Sized>(headers: Option<&H>, key: &str) -> Option<String> {
    let mut found = None;
    for_each_raw(headers?, |k, v| {
        if found.is_none() && k == key.as_bytes() {
            found = Some(
                v.and_then(|v| std::str::from_utf8(v).ok())
                    .map(str::to_string),
            );
        }
    });
    found.flatten()
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

/// The original record's own headers, minus any baton headers (which the caller replaces).
pub fn carried<H: RawHeaders + ?Sized>(original: Option<&H>) -> OwnedHeaders {
    let mut kept: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    if let Some(h) = original {
        for_each_raw(h, |k, v| {
            // A key that is not UTF-8 is kept, lossily: the record must still be written.
            let key = String::from_utf8_lossy(k);
            if !key.starts_with("baton-") && key != TRACEPARENT {
                kept.push((key.into_owned(), v.map(<[u8]>::to_vec)));
            }
        });
    }
    kept.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: value.as_deref(),
        })
    })
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
    fn a_header_key_that_is_not_utf8_is_read_without_panicking() {
        // Build a header list with a non-UTF-8 key through librdkafka itself, as a foreign
        // producer would send it.
        use rdkafka::bindings as rd;
        let h = OwnedHeaders::new_with_capacity(2).insert(Header {
            key: "ok",
            value: Some("1"),
        });
        let native = h.borrowed() as *const BorrowedHeaders as *mut rd::rd_kafka_headers_t;
        let bad_key = [0xffu8, 0xfe, b'k'];
        // SAFETY: `native` is the live header list owned by `h`; the key and value are copied.
        let err = unsafe {
            rd::rd_kafka_header_add(native, bad_key.as_ptr().cast(), 3, b"v".as_ptr().cast(), 1)
        };
        assert_eq!(err, rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
        assert_eq!(get(Some(&h), "ok").as_deref(), Some("1"));
        assert_eq!(get(Some(&h), "missing"), None);
        let dl = carried(Some(&h));
        let mut keys = Vec::new();
        for_each_raw(&dl, |k, _| {
            keys.push(String::from_utf8_lossy(k).into_owned())
        });
        assert!(keys.contains(&"\u{fffd}\u{fffd}k".to_string()), "{keys:?}");
    }
}
