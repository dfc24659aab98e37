//! Fallback handling: what a failed provider call means for the model that failed it.
//!
//! [`breaker`] keeps one circuit per model; [`Circuits`] holds them (indexed like
//! `Config::models`) and turns a provider error into what the circuit learns from it: a
//! failure of the model, a sign it is up, or a reason to take it out of rotation. [`limits`]
//! keeps each model under its provider's quota (requests and tokens per minute, concurrency).

pub mod breaker;
pub mod limits;

use std::time::{Duration, Instant};

pub use breaker::{Admission, Breaker, BreakerSettings, CallOutcome, CircuitState};

use crate::providers::ProviderError;

/// What a provider error tells the model's circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The model answered or refused the request on its merits: it is up.
    Up,
    /// The model failed: it counts toward opening the circuit.
    Failed,
    /// The model cannot serve anyone until its config is fixed (bad credentials, unknown model
    /// id): out of rotation for the long cooldown.
    OutOfRotation,
}

/// The circuit's reading of `e`.
pub fn verdict(e: &ProviderError) -> Verdict {
    match e {
        ProviderError::Timeout(_)
        | ProviderError::Connect(_)
        | ProviderError::Server { .. }
        | ProviderError::InvalidOutput(_) => Verdict::Failed,
        ProviderError::Auth { .. } | ProviderError::NotFound(_) => Verdict::OutOfRotation,
        // A 429 is the rate limiter's business; a 400 is the request's fault.
        ProviderError::RateLimited { .. }
        | ProviderError::ContextLength(_)
        | ProviderError::ContentFilter(_)
        | ProviderError::BadRequest { .. } => Verdict::Up,
    }
}

/// One circuit per model.
#[derive(Debug)]
pub struct Circuits {
    breakers: Vec<Breaker>,
    out_of_rotation: Duration,
}

impl Circuits {
    /// Closed circuits for `n` models.
    pub fn new(n: usize, settings: BreakerSettings, out_of_rotation: Duration) -> Self {
        Circuits {
            breakers: (0..n).map(|_| Breaker::new(settings)).collect(),
            out_of_rotation,
        }
    }

    /// Whether model `m` may be called now.
    pub fn admit(&self, m: usize, now: Instant) -> Admission {
        self.breakers
            .get(m)
            .map_or(Admission::Call, |b| b.admit(now))
    }

    /// Records a successful call; returns the new state when it changed.
    pub fn succeeded(&self, m: usize, now: Instant, admission: Admission) -> Option<CircuitState> {
        self.breakers
            .get(m)?
            .record(now, admission, CallOutcome::Healthy)
    }

    /// Records a failed call; returns the new state when it changed.
    pub fn failed(
        &self,
        m: usize,
        now: Instant,
        admission: Admission,
        e: &ProviderError,
    ) -> Option<CircuitState> {
        let b = self.breakers.get(m)?;
        match verdict(e) {
            Verdict::Up => b.record(now, admission, CallOutcome::Healthy),
            Verdict::Failed => b.record(now, admission, CallOutcome::Failed),
            Verdict::OutOfRotation => Some(b.trip(now, self.out_of_rotation)),
        }
    }

    /// Model `m`'s state at `now`.
    pub fn state(&self, m: usize, now: Instant) -> CircuitState {
        self.breakers
            .get(m)
            .map_or(CircuitState::Closed, |b| b.state(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_credentials_take_a_model_out_of_rotation_and_400s_keep_it() {
        let c = Circuits::new(2, BreakerSettings::default(), Duration::from_secs(300));
        let t = Instant::now();
        let auth = ProviderError::Auth {
            status: 401,
            message: "bad key".into(),
        };
        assert_eq!(
            c.failed(0, t, Admission::Call, &auth),
            Some(CircuitState::Open)
        );
        assert!(matches!(
            c.admit(0, t + Duration::from_secs(299)),
            Admission::Skip(_)
        ));
        // A run of request errors is not the model's fault.
        let bad = ProviderError::BadRequest {
            status: 400,
            message: "nope".into(),
        };
        for _ in 0..20 {
            assert_eq!(c.failed(1, t, Admission::Call, &bad), None);
        }
        assert_eq!(c.state(1, t), CircuitState::Closed);
        for _ in 0..4 {
            c.failed(
                1,
                t,
                Admission::Call,
                &ProviderError::Timeout(Duration::from_secs(1)),
            );
        }
        assert_eq!(
            c.failed(
                1,
                t,
                Admission::Call,
                &ProviderError::Connect("refused".into())
            ),
            Some(CircuitState::Open)
        );
    }
}
