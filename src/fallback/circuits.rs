//! One circuit per model (indexed like `Config::models`), fed with what each call's [`Fate`]
//! says about the model: a failure of its own, a sign it is up, or a reason to take it out of
//! rotation.

use std::time::{Duration, Instant};

use super::breaker::{Admission, Breaker, BreakerSettings, CallOutcome, CircuitState};
use super::Fate;

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

    /// Records how a call admitted as `admission` went (`None`: it answered); returns the new
    /// state when it changed.
    pub fn record(
        &self,
        m: usize,
        now: Instant,
        admission: Admission,
        failure: Option<Fate>,
    ) -> Option<CircuitState> {
        let b = self.breakers.get(m)?;
        match failure {
            // The model's own failure counts toward opening its circuit.
            Some(Fate::Transient | Fate::Stalled) => b.record(now, admission, CallOutcome::Failed),
            // It can serve no one until its config is fixed: out of rotation at once.
            Some(Fate::Misconfigured) => Some(b.trip(now, self.out_of_rotation)),
            // It answered, or refused the request on its merits (or throttled it, which is
            // the rate limiter's business): it is up.
            None
            | Some(
                Fate::Throttled
                | Fate::NotThisModel
                | Fate::NotThisProvider
                | Fate::Refused
                | Fate::Unfit,
            ) => b.record(now, admission, CallOutcome::Healthy),
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
    use crate::config::ContentFilterPolicy;
    use crate::providers::ProviderError;

    fn fate(e: &ProviderError) -> Option<Fate> {
        Some(Fate::of(e, ContentFilterPolicy::DeadLetter))
    }

    #[test]
    fn bad_credentials_take_a_model_out_of_rotation_and_400s_keep_it() {
        let c = Circuits::new(2, BreakerSettings::default(), Duration::from_secs(300));
        let t = Instant::now();
        let auth = ProviderError::Auth {
            status: 401,
            message: "bad key".into(),
        };
        assert_eq!(
            c.record(0, t, Admission::Call, fate(&auth)),
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
            assert_eq!(c.record(1, t, Admission::Call, fate(&bad)), None);
        }
        assert_eq!(c.state(1, t), CircuitState::Closed);
        for _ in 0..4 {
            let timeout = ProviderError::Timeout(Duration::from_secs(1));
            c.record(1, t, Admission::Call, fate(&timeout));
        }
        let refused = ProviderError::Connect("refused".into());
        assert_eq!(
            c.record(1, t, Admission::Call, fate(&refused)),
            Some(CircuitState::Open)
        );
    }
}
