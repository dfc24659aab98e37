//! Observed latency per model: the median of a sliding window of recent successful calls.
//!
//! Writers (finished calls) take a short per-model lock and refresh a cached median; readers
//! (every routing decision) only load an atomic.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Calls in each model's window.
pub const WINDOW: usize = 128;

const NONE: u64 = u64::MAX;

/// Sliding-window medians, one per model (indexed like `Config::models`).
#[derive(Debug)]
pub struct LatencyBook {
    models: Vec<ModelWindow>,
}

#[derive(Debug)]
struct ModelWindow {
    samples: Mutex<VecDeque<u64>>,
    p50_us: AtomicU64,
}

impl LatencyBook {
    /// An empty book for `n` models.
    pub fn new(n: usize) -> Self {
        LatencyBook {
            models: (0..n)
                .map(|_| ModelWindow {
                    samples: Mutex::new(VecDeque::with_capacity(WINDOW)),
                    p50_us: AtomicU64::new(NONE),
                })
                .collect(),
        }
    }

    /// Records a successful call of `model` that took `latency`.
    pub fn record(&self, model: usize, latency: Duration) {
        let Some(w) = self.models.get(model) else {
            return;
        };
        let us = u64::try_from(latency.as_micros()).unwrap_or(NONE - 1);
        let mut samples = w.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == WINDOW {
            samples.pop_front();
        }
        samples.push_back(us);
        // On the stack: this runs once per call, it must not allocate.
        let mut scratch = [0u64; WINDOW];
        let n = samples.len();
        for (slot, v) in scratch.iter_mut().zip(samples.iter()) {
            *slot = *v;
        }
        let (_, median, _) = scratch[..n].select_nth_unstable((n - 1) / 2);
        w.p50_us.store(*median, Ordering::Relaxed);
    }

    /// The observed median of `model`, once it has answered at least once.
    pub fn p50(&self, model: usize) -> Option<Duration> {
        let us = self.models.get(model)?.p50_us.load(Ordering::Relaxed);
        (us != NONE).then(|| Duration::from_micros(us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_a_sliding_window() {
        let b = LatencyBook::new(2);
        assert_eq!(b.p50(0), None);
        for ms in [100, 300, 200] {
            b.record(0, Duration::from_millis(ms));
        }
        assert_eq!(b.p50(0), Some(Duration::from_millis(200)));
        assert_eq!(b.p50(1), None);
        // A full window of slow calls replaces the old ones.
        for _ in 0..WINDOW {
            b.record(0, Duration::from_millis(900));
        }
        assert_eq!(b.p50(0), Some(Duration::from_millis(900)));
        assert_eq!(b.p50(7), None);
    }
}
