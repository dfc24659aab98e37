//! Stage tracking: what `baton.status` says about a job, derived from what happens to it, as a
//! pure function. A job is `running` once a worker has had it for a moment (the worker says so
//! only for a job still running after a second, so a quick job costs one update), and its
//! outcome says the rest:
//! `queued` on the next step when a step forwards it, `done` on the last step with its result,
//! `retrying` with the error class and due time when it waits in a retry tier, `failed` when it
//! goes to a person, `dead` when it is dead-lettered. The record is keyed by job id on a
//! compacted topic, so the latest state of every job survives and `baton status` reads it.

use super::outcome::{Action, Now, Outcome, Record};
use crate::envelope::{JobState, StatusRecord};

/// The status a job has when a worker picks it up on `r`'s step.
pub fn running(r: Record<'_>, job_id: &str, steps_done: Vec<String>, now: &Now) -> StatusRecord {
    StatusRecord {
        job_id: job_id.to_string(),
        pipeline: r.step.pipeline.clone(),
        step: r.step.name.clone(),
        state: JobState::Running,
        at: now.rfc3339(),
        at_ms: now.unix_ms,
        attempts: r.meta.attempts,
        error_class: None,
        error: None,
        model: None,
        due_ms: None,
        steps_done,
    }
}

/// The status a job has once `outcome` is published.
pub fn after(r: Record<'_>, outcome: &Outcome, now: &Now) -> StatusRecord {
    let mut s = running(r, &outcome.job_id, outcome.steps_done.clone(), now);
    s.attempts = outcome.attempts;
    match &outcome.action {
        Action::Answer {
            is_result, model, ..
        } => {
            s.model = Some(model.clone());
            if *is_result {
                s.state = JobState::Done;
            } else {
                s.state = JobState::Queued;
                s.attempts = 0;
                if let Some(next) = r.config.steps.get(r.step.index + 1) {
                    s.step = next.name.clone();
                }
            }
        }
        Action::Retry {
            retry,
            class,
            last_model,
            ..
        } => {
            s.state = JobState::Retrying;
            s.error_class = Some(*class);
            s.model = last_model.clone();
            s.due_ms = Some(retry.due_ms);
        }
        Action::Fail {
            escalate,
            class,
            message,
            last_model,
            ..
        } => {
            s.state = if *escalate {
                JobState::Failed
            } else {
                JobState::Dead
            };
            s.error_class = Some(*class);
            s.error = Some(crate::util::excerpt(message, 300));
            s.model = last_model.clone();
        }
    }
    s
}

/// What the status topic says, read in topic order: each job's latest state and its history.
#[derive(Debug, Default)]
pub struct Board {
    /// Every update, per job id, in topic order.
    pub jobs: std::collections::BTreeMap<String, Vec<StatusRecord>>,
}

/// A job that has not moved on for a while.
#[derive(Debug, Clone, PartialEq)]
pub struct Stuck {
    /// Its latest update.
    pub latest: StatusRecord,
    /// How long it has been on its current step (retry rounds included), milliseconds.
    pub for_ms: u64,
}

impl Board {
    /// Adds one update (updates of a job arrive in the order they were written: one key, one
    /// partition).
    pub fn add(&mut self, s: StatusRecord) {
        self.jobs.entry(s.job_id.clone()).or_default().push(s);
    }

    /// A job's latest update.
    pub fn latest(&self, job_id: &str) -> Option<&StatusRecord> {
        self.jobs.get(job_id).and_then(|h| h.last())
    }

    /// Jobs of `pipeline` per (step, state), by their latest update; steps in `steps` order.
    pub fn counts(&self, pipeline: &str) -> Vec<((String, JobState), usize)> {
        let mut counts: std::collections::BTreeMap<(String, JobState), usize> = Default::default();
        for s in self.jobs.values().filter_map(|h| h.last()) {
            if s.pipeline == pipeline {
                *counts.entry((s.step.clone(), s.state)).or_default() += 1;
            }
        }
        counts.into_iter().collect()
    }

    /// Jobs of `pipeline` not finished that have been on their current step for `min_ms` or
    /// more at `now_ms` (a job going round its retry tiers is stuck too), longest first.
    pub fn stuck(&self, pipeline: &str, min_ms: u64, now_ms: u64) -> Vec<Stuck> {
        let mut out: Vec<Stuck> = self
            .jobs
            .values()
            .filter_map(|h| Some((h, h.last()?)))
            .filter(|(_, s)| s.pipeline == pipeline && !s.state.is_terminal())
            .map(|(h, s)| Stuck {
                latest: s.clone(),
                for_ms: now_ms.saturating_sub(entered_step_ms(h)),
            })
            .filter(|s| s.for_ms >= min_ms)
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.for_ms));
        out
    }
}

/// When the job reached the step of its latest update: the first of its trailing updates on
/// that step (the latest's own time when compaction left only that one).
fn entered_step_ms(history: &[StatusRecord]) -> u64 {
    let Some(last) = history.last() else {
        return 0;
    };
    history
        .iter()
        .rev()
        .take_while(|s| s.step == last.step)
        .map(|s| s.at_ms)
        .min()
        .unwrap_or(last.at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ErrorClass};
    use crate::envelope::Job;
    use crate::kafka::meta::RecordMeta;
    use crate::pipeline::outcome::{decide, failed};
    use crate::pipeline::{StepFailure, StepOutcome};

    const CONFIG: &str = r#"
[models.m]
base_url = "http://127.0.0.1:1/v1"

[[pipelines.c.steps]]
name = "extract"
model = "m"

[[pipelines.c.steps]]
name = "classify"
model = "m"
"#;

    fn now(ms: u64) -> Now {
        Now { unix_ms: ms }
    }

    fn failure(class: ErrorClass) -> StepFailure {
        StepFailure {
            class,
            message: "down".into(),
            last_model: Some("m".into()),
            attempts: 3,
            variant: None,
            retry_after: None,
            cost_usd: 0.0,
        }
    }

    #[test]
    fn each_outcome_says_where_the_job_stands() {
        let c = Config::from_toml(CONFIG, None).unwrap();
        let meta = RecordMeta::default();
        let at = |step: usize, tier| Record {
            config: &c,
            step: &c.steps[step],
            tier,
            meta: &meta,
            times: Default::default(),
        };
        let job: Job = serde_json::from_str(r#"{"id":"j1","input":"x"}"#).unwrap();
        let result: crate::envelope::JobResult = serde_json::from_value(serde_json::json!({
            "id": "j1", "pipeline": "c", "step": "extract", "output": {"text": "t"},
            "model": "m", "provider": "openai",
            "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
            "cost_usd": 0.0, "latency_ms": 1, "attempts": 1, "route": {},
            "started_at": "", "finished_at": ""
        }))
        .unwrap();
        let forwarded = decide(
            at(0, None),
            &job,
            StepOutcome::Done(Box::new(result)),
            &now(5),
        );
        let s = after(at(0, None), &forwarded, &now(5));
        assert_eq!((s.step.as_str(), s.state), ("classify", JobState::Queued));
        assert_eq!(s.steps_done, ["extract"]);
        let retry = failed(
            at(1, None),
            "j1",
            failure(ErrorClass::ProviderError),
            &now(9),
        );
        let s = after(at(1, None), &retry, &now(9));
        assert_eq!(
            (s.state, s.error_class),
            (JobState::Retrying, Some(ErrorClass::ProviderError))
        );
        assert!(s.due_ms.unwrap() > 9);
        let dead = failed(at(1, None), "j1", failure(ErrorClass::BadRequest), &now(9));
        assert_eq!(after(at(1, None), &dead, &now(9)).state, JobState::Dead);
    }

    #[test]
    fn the_board_counts_latest_states_and_finds_stuck_jobs() {
        let c = Config::from_toml(CONFIG, None).unwrap();
        let meta = RecordMeta::default();
        let r = Record {
            config: &c,
            step: &c.steps[1],
            tier: None,
            meta: &meta,
            times: Default::default(),
        };
        let mut board = Board::default();
        for (id, at_ms, state) in [
            ("a", 1_000, JobState::Running),
            ("a", 2_000, JobState::Done),
            ("b", 1_000, JobState::Running),
            ("c", 3_000, JobState::Running),
            ("c", 9_000, JobState::Retrying),
        ] {
            let mut s = running(r, id, vec![], &now(at_ms));
            s.state = state;
            board.add(s);
        }
        assert_eq!(
            board.counts("c"),
            vec![
                (("classify".into(), JobState::Running), 1),
                (("classify".into(), JobState::Retrying), 1),
                (("classify".into(), JobState::Done), 1),
            ]
        );
        let stuck = board.stuck("c", 5_000, 10_000);
        assert_eq!(stuck.len(), 2, "{stuck:?}");
        assert_eq!(
            (stuck[0].latest.job_id.as_str(), stuck[0].for_ms),
            ("b", 9_000)
        );
        // Retrying since 9 s, but on the step since 3 s: stuck for 7 s.
        assert_eq!(
            (stuck[1].latest.job_id.as_str(), stuck[1].for_ms),
            ("c", 7_000)
        );
        assert_eq!(board.jobs["a"].len(), 2);
    }
}
