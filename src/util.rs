//! Small helpers every room may use, importing nothing of baton's: timestamps, text excerpts
//! and USD amounts as reported.

/// Now, as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Now as Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// At most `max` characters of `s`, with `…` when cut: for error messages and decisions
/// (never a whole prompt).
pub fn excerpt(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A USD amount rounded to a billionth, as reported.
pub fn round_usd(v: f64) -> f64 {
    (v * 1e9).round() / 1e9
}

/// A USD amount for humans: enough digits to tell estimates apart.
pub fn usd(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 0.01 {
        format!("{v:.4}")
    } else {
        format!("{v:.6}")
    }
}

/// Gives free memory back to the system: glibc's heap (librdkafka's fetch buffers and
/// producer queues live there) and the calling thread's mimalloc heap (the binary's Rust
/// allocator; a no-op when it is not in use). Other threads' mimalloc heaps purge their free
/// pages themselves as they go on allocating.
pub fn release_free_memory() {
    // SAFETY: both calls only walk the allocators' own free lists.
    unsafe {
        libc::malloc_trim(0);
        libmimalloc_sys::mi_collect(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_cuts_on_char_boundaries() {
        assert_eq!(excerpt("héllo wörld", 4), "héll…");
        assert_eq!(excerpt("short", 10), "short");
    }
}
