//! Decide, then act: what happens to a consumed record is a pure function of the step, the
//! record's metadata and how the step ended. The worker publishes the [`Outcome`] and stores
//! the offset; nothing here touches Kafka.
//!
//! - The step answered: the result (last step) or the next step's job, with the job's cost so
//!   far and the trail of finished steps, to the step's output topic; when the step's
//!   `review_when` holds, a copy of the step's result also goes to the review topic.
//! - It failed and a later round may succeed: the original record, to the next retry tier, due
//!   after the tier's delay (or the provider's longer Retry-After), with its history.
//! - Otherwise, or once the tiers are spent: the original record, to the step's dead-letter
//!   topic, or to the review topic for the classes the route escalates.

use crate::config::{Config, ErrorClass, StepConfig, TopicNames};
use crate::context::template;
use crate::envelope::{Job, JobResult, TrailEntry};
use crate::fallback::plan::{self, Plan};
use crate::kafka::meta::{
    self, DeadLetterHeaders, JobTimes, OutMeta, RecordMeta, RetryHeaders, Round,
};
use crate::util::round_usd;

use super::{StepFailure, StepOutcome};

/// The moment a decision is made: cheap to take for every record; its RFC 3339 form is made
/// only for a record that needs it (a failure).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Unix time, milliseconds.
    pub unix_ms: u64,
}

impl Now {
    /// The current time.
    pub fn current() -> Now {
        Now {
            unix_ms: crate::util::unix_ms(),
        }
    }

    /// The same moment, RFC 3339 with milliseconds, UTC.
    pub fn rfc3339(&self) -> String {
        chrono::DateTime::from_timestamp_millis(self.unix_ms as i64)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }
}

/// What happens to one consumed record.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The job id every record about it carries.
    pub job_id: String,
    /// Provider calls made for the job on this step, over every round.
    pub attempts: u32,
    /// The job's A/B variant, when its route has variants.
    pub variant: Option<String>,
    /// The pipeline's steps the job has finished (this one last, when it answered).
    pub steps_done: Vec<String>,
    /// Where it goes.
    pub action: Action,
}

/// Where a record goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The step's answer: a new record.
    Answer {
        /// The next step's topic, or the results topic.
        topic: String,
        /// The result envelope (last step) or the next step's job.
        payload: Vec<u8>,
        /// Whether this is the pipeline's final result.
        is_result: bool,
        /// What the job has been billed so far, all steps and rounds, USD.
        job_cost_usd: f64,
        /// The model that answered.
        model: String,
        /// A copy for a person, when the step's `review_when` held.
        review: Option<Review>,
    },
    /// The original record, to a retry tier.
    Retry {
        /// The tier's topic.
        topic: String,
        /// The tier's name (`30s`), for metrics.
        tier_name: String,
        /// Its place in the tiers and when it is due.
        retry: RetryHeaders,
        /// What the job has been billed so far, USD.
        job_cost_usd: f64,
        /// What this step's rounds have been billed so far, USD.
        step_cost_usd: f64,
        /// The retry history (JSON), this round included.
        history: String,
        /// Why the round failed.
        class: ErrorClass,
        /// The last model tried.
        last_model: Option<String>,
    },
    /// The original record, as a terminal failure.
    Fail {
        /// The dead-letter topic, or the review topic.
        topic: String,
        /// Whether it goes to a person (the review topic).
        escalate: bool,
        /// Why.
        class: ErrorClass,
        /// A readable message (never the prompt).
        message: String,
        /// The last model tried.
        last_model: Option<String>,
        /// The retry history (JSON), when the job went through retry tiers.
        history: Option<String>,
        /// When it failed (RFC 3339).
        failed_at: String,
    },
}

/// A copy of a step's result for a person, sent to the review topic beside the result.
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    /// The review topic.
    pub topic: String,
    /// Why (the `review_when` that held, or why it could not be evaluated).
    pub reason: String,
    /// The step's result envelope, with the trail so far.
    pub payload: Vec<u8>,
}

/// What a decision is about: the step, the tier the record came from, its metadata.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// The record's step.
    pub step: &'a StepConfig,
    /// The retry tier it was consumed from (`None`: the step's input topic).
    pub tier: Option<usize>,
    /// Its metadata.
    pub meta: &'a RecordMeta,
    /// When the job was first consumed (at any step) and how long it had waited for that.
    pub times: JobTimes,
}

/// The outcome of a decoded job whose step ended as `outcome`.
pub fn decide(r: Record<'_>, job: &Job, outcome: StepOutcome, now: &Now) -> Outcome {
    let mut o = match outcome {
        StepOutcome::Done(result) => answer(r, job, *result, now),
        StepOutcome::Failed(f) => failed(r, &job.id, f, now),
    };
    let mut done: Vec<String> = job.trail.iter().map(|t| t.step.clone()).collect();
    if let Action::Answer { .. } = o.action {
        done.push(r.step.name.clone());
    }
    o.steps_done = done;
    o
}

/// The outcome of an answer: the result reports the step's cost and calls over every round,
/// the job's total cost and time, and (for a pipeline of several steps) the trail.
fn answer(r: Record<'_>, job: &Job, mut result: JobResult, now: &Now) -> Outcome {
    let round_cost = result.cost_usd;
    result.total_ms = now.unix_ms.saturating_sub(r.times.first_consumed_ms);
    result.queue_ms = r.times.queue_ms;
    result.cost_usd = round_usd(r.meta.step_cost_usd + round_cost);
    result.attempts += r.meta.attempts;
    if let Some(t) = r.tier {
        result.retries = t as u32 + 1;
    }
    let job_cost_usd = r.meta.job_cost_usd + round_cost;
    result.total_cost_usd = round_usd(job_cost_usd);
    let mut trail = job.trail.clone();
    trail.push(trail_entry(&result));
    let several_steps = !(r.step.is_last && r.step.previous.is_none());
    if several_steps {
        result.trail = trail.clone();
    }
    let review = review_reason(r, job, &result).map(|reason| Review {
        topic: r.config.topics.review.clone(),
        reason,
        payload: serde_json::to_vec(&result).expect("envelopes serialize"),
    });
    let payload = if r.step.is_last {
        serde_json::to_vec(&result)
    } else {
        serde_json::to_vec(&next_step_job(job, trail))
    };
    Outcome {
        job_id: job.id.clone(),
        attempts: result.attempts,
        variant: result.variant.clone(),
        steps_done: Vec::new(),
        action: Action::Answer {
            topic: r.step.output_topic.clone(),
            payload: payload.expect("envelopes serialize"),
            is_result: r.step.is_last,
            job_cost_usd,
            model: result.model,
            review,
        },
    }
}

/// The step's line in the trail.
fn trail_entry(result: &JobResult) -> TrailEntry {
    TrailEntry {
        step: result.step.clone(),
        model: result.model.clone(),
        provider: result.provider.clone(),
        variant: result.variant.clone(),
        usage: result.usage,
        cost_usd: result.cost_usd,
        latency_ms: result.latency_ms,
        attempts: result.attempts,
        output: result.output.clone(),
    }
}

/// Why the step's result goes to a person too: its `review_when` held, or could not be
/// evaluated (a person looks rather than the flag being lost).
fn review_reason(r: Record<'_>, job: &Job, result: &JobResult) -> Option<String> {
    let expr = r.step.review_when.as_deref()?;
    let templates = &r.config.templates;
    match template::review_reason(templates, expr, job, &r.step.name, &result.output) {
        Ok(reason) => reason,
        Err(e) => Some(format!("review_when could not be evaluated: {e}")),
    }
}

/// The outcome of a failed round: a retry tier, or a terminal record.
pub fn failed(r: Record<'_>, job_id: &str, f: StepFailure, now: &Now) -> Outcome {
    let step = r.step;
    let history = meta::append(
        r.meta.history.clone(),
        Round {
            at: now.rfc3339(),
            topic: r
                .tier
                .map_or(&step.topic, |t| &step.retry_topics[t])
                .clone(),
            error_class: f.class,
            model: f.last_model.clone(),
            attempts: f.attempts,
        },
    );
    let history = serde_json::to_string(&history).expect("histories serialize");
    let route = &r.config.routes[step.route];
    let tiers = &r.config.retry_tiers;
    let action = match plan::after_round(f.class, r.tier, tiers, f.retry_after, &route.review) {
        Plan::RetryTier { tier, delay } => Action::Retry {
            topic: step.retry_topics[tier].clone(),
            tier_name: tiers[tier].name.clone(),
            retry: RetryHeaders {
                tier,
                due_ms: now.unix_ms + delay.as_millis() as u64,
                count: tier as u32 + 1,
            },
            job_cost_usd: r.meta.job_cost_usd + f.cost_usd,
            step_cost_usd: r.meta.step_cost_usd + f.cost_usd,
            history,
            class: f.class,
            last_model: f.last_model.clone(),
        },
        Plan::Terminal {
            escalate,
            tiers_spent,
        } => {
            let message = if tiers_spent {
                format!("{} (after {} retry tiers)", f.message, tiers.len())
            } else {
                f.message
            };
            // The history goes with a job that went through retry tiers.
            let history = r.tier.map(|_| history);
            fail_action(
                r,
                escalate,
                f.class,
                message,
                f.last_model.clone(),
                history,
                now,
            )
        }
    };
    Outcome {
        job_id: job_id.to_string(),
        attempts: r.meta.attempts + f.attempts,
        variant: f.variant,
        steps_done: Vec::new(),
        action,
    }
}

/// The outcome of a record that failed before any round (undecodable, or a bug): a terminal
/// record of `class`.
pub fn terminal(
    r: Record<'_>,
    job_id: &str,
    class: ErrorClass,
    message: String,
    now: &Now,
) -> Outcome {
    let escalate = plan::escalates(class, &r.config.routes[r.step.route].review);
    Outcome {
        job_id: job_id.to_string(),
        attempts: 0,
        variant: None,
        steps_done: Vec::new(),
        action: fail_action(r, escalate, class, message, None, None, now),
    }
}

/// A terminal record of `class`, to the review topic when `escalate`, else the dead-letter
/// topic; `history` is the retry history (JSON) of a job that went through retry tiers.
fn fail_action(
    r: Record<'_>,
    escalate: bool,
    class: ErrorClass,
    message: String,
    last_model: Option<String>,
    history: Option<String>,
    now: &Now,
) -> Action {
    Action::Fail {
        topic: if escalate {
            r.config.topics.review.clone()
        } else {
            TopicNames::dlq_of(&r.step.topic)
        },
        escalate,
        class,
        message,
        last_model,
        history,
        failed_at: now.rfc3339(),
    }
}

impl Action {
    /// The topic the record goes to.
    pub fn topic(&self) -> &str {
        match self {
            Action::Answer { topic, .. }
            | Action::Retry { topic, .. }
            | Action::Fail { topic, .. } => topic,
        }
    }
}

impl Outcome {
    /// What replaces an outcome whose record the broker refused for good (too large): a
    /// terminal `output_rejected` record. `None` for a terminal record itself (the worker then
    /// sends it without the original value).
    pub fn rejected(&self, r: Record<'_>, size: usize, error: &str, now: &Now) -> Option<Outcome> {
        match &self.action {
            Action::Answer {
                model,
                job_cost_usd,
                ..
            } => {
                let failure = StepFailure {
                    class: ErrorClass::OutputRejected,
                    message: format!(
                        "the broker rejected the output ({size} bytes) for good: {error}"
                    ),
                    last_model: Some(model.clone()),
                    attempts: self.attempts - r.meta.attempts,
                    variant: self.variant.clone(),
                    retry_after: None,
                    cost_usd: job_cost_usd - r.meta.job_cost_usd,
                };
                let mut o = failed(r, &self.job_id, failure, now);
                o.steps_done = self.steps_done.clone();
                o.steps_done.pop();
                Some(o)
            }
            Action::Retry { history, .. } => {
                // The record came in at this size: a refusal now is a broker/topic mismatch.
                let message = format!("the broker refused the retry record for good: {error}");
                let class = ErrorClass::OutputRejected;
                let escalate = plan::escalates(class, &r.config.routes[r.step.route].review);
                let history = Some(history.clone());
                Some(Outcome {
                    job_id: self.job_id.clone(),
                    attempts: self.attempts,
                    variant: self.variant.clone(),
                    steps_done: self.steps_done.clone(),
                    action: fail_action(r, escalate, class, message, None, history, now),
                })
            }
            Action::Fail { .. } => None,
        }
    }

    /// The outcome's record headers (the one place they are written): `origin` is where the
    /// consumed record came from (topic, partition, offset), for a terminal record.
    pub fn out_meta<'a>(
        &'a self,
        step_label: &'a str,
        meta: &'a RecordMeta,
        origin: (&'a str, i32, i64),
    ) -> OutMeta<'a> {
        let mut out = OutMeta {
            job_id: &self.job_id,
            step: step_label,
            attempt: self.attempts,
            traceparent: &meta.traceparent,
            variant: self.variant.as_deref(),
            job_cost_usd: None,
            step_cost_usd: None,
            retry: None,
            history: None,
            dead: None,
            review_reason: None,
            times: None,
        };
        match &self.action {
            Action::Answer { job_cost_usd, .. } => out.job_cost_usd = Some(*job_cost_usd),
            Action::Retry {
                retry,
                job_cost_usd,
                step_cost_usd,
                history,
                ..
            } => {
                out.retry = Some(*retry);
                out.job_cost_usd = Some(*job_cost_usd);
                out.step_cost_usd = Some(*step_cost_usd);
                out.history = Some(history);
            }
            Action::Fail {
                class,
                message,
                last_model,
                history,
                failed_at,
                ..
            } => {
                out.history = history.as_deref();
                out.dead = Some(DeadLetterHeaders {
                    error_class: class.as_str(),
                    error: message,
                    topic: origin.0,
                    partition: origin.1,
                    offset: origin.2,
                    last_model: last_model.as_deref(),
                    failed_at,
                });
            }
        }
        out
    }
}

/// The job the next step of a pipeline receives: the job as it came (id, input, policy,
/// tenant, metadata...) with the trail of its finished steps, this one last.
pub fn next_step_job(job: &Job, trail: Vec<TrailEntry>) -> Job {
    Job {
        trail,
        ..job.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::kafka::meta::RecordMeta;

    const CONFIG: &str = r#"
[models.m]
base_url = "http://127.0.0.1:1/v1"

[[pipelines.p.steps]]
name = "first"
model = "m"
review = ["content_filter"]

[[pipelines.p.steps]]
name = "last"
model = "m"
"#;

    fn config() -> Config {
        Config::from_toml(CONFIG, None).unwrap()
    }

    fn now() -> Now {
        Now { unix_ms: 1_000_000 }
    }

    fn job() -> Job {
        serde_json::from_str(r#"{"id":"j1","input":"hello"}"#).unwrap()
    }

    fn result(step: &str) -> JobResult {
        serde_json::from_value(serde_json::json!({
            "id": "j1", "pipeline": "p", "step": step,
            "output": {"text": "the answer"}, "model": "m", "provider": "openai",
            "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
            "cost_usd": 0.5, "latency_ms": 10, "attempts": 2,
            "route": {}, "started_at": "", "finished_at": ""
        }))
        .unwrap()
    }

    fn failure(class: ErrorClass) -> StepFailure {
        StepFailure {
            class,
            message: "it failed".into(),
            last_model: Some("m".into()),
            attempts: 3,
            variant: Some("b".into()),
            retry_after: None,
            cost_usd: 0.25,
        }
    }

    /// Metadata of a record from retry tier `tier` whose earlier rounds made 4 calls.
    fn retried(tier: Option<usize>) -> RecordMeta {
        RecordMeta {
            job_cost_usd: 1.0,
            step_cost_usd: if tier.is_some() { 0.75 } else { 0.0 },
            attempts: if tier.is_some() { 4 } else { 0 },
            ..RecordMeta::default()
        }
    }

    fn record<'a>(
        c: &'a Config,
        step: usize,
        tier: Option<usize>,
        meta: &'a RecordMeta,
    ) -> Record<'a> {
        Record {
            config: c,
            step: &c.steps[step],
            tier,
            meta,
            times: JobTimes::default(),
        }
    }

    #[test]
    fn now_reads_as_rfc3339() {
        assert_eq!(now().rfc3339(), "1970-01-01T00:16:40.000Z");
    }

    #[test]
    fn the_last_steps_answer_is_the_result_with_every_rounds_cost_and_calls() {
        let (c, meta) = (config(), retried(Some(1)));
        let r = record(&c, 1, Some(1), &meta);
        let done = StepOutcome::Done(Box::new(result("last")));
        let o = decide(r, &job(), done, &now());
        let Action::Answer {
            topic,
            payload,
            is_result,
            job_cost_usd,
            ..
        } = &o.action
        else {
            panic!("{o:?}")
        };
        assert_eq!((topic.as_str(), *is_result), ("baton.results", true));
        assert_eq!(*job_cost_usd, 1.5);
        let published: JobResult = serde_json::from_slice(payload).unwrap();
        assert_eq!(published.cost_usd, 1.25);
        assert_eq!((published.attempts, published.retries), (6, 2));
        assert_eq!(o.attempts, 6);
    }

    #[test]
    fn an_earlier_steps_answer_is_the_next_steps_job() {
        let (c, meta) = (config(), retried(None));
        let done = StepOutcome::Done(Box::new(result("first")));
        let o = decide(record(&c, 0, None, &meta), &job(), done, &now());
        let Action::Answer {
            topic,
            payload,
            is_result,
            ..
        } = &o.action
        else {
            panic!("{o:?}")
        };
        assert_eq!((topic.as_str(), *is_result), ("p.last", false));
        // The next step's worker decodes it as it decodes any job: against the job schema.
        let next = crate::envelope::decode_envelope(payload).unwrap();
        assert_eq!(
            (next.id.as_str(), next.input.as_deref()),
            ("j1", Some("hello"))
        );
        assert_eq!(next.trail.len(), 1);
        assert_eq!(next.trail[0].output.text, "the answer");
        // Without a `user` template, the next step's model sees the previous answer.
        let request = crate::context::ChatRequest::for_step(&c.templates, &c.steps[1], &next);
        assert_eq!(request.unwrap().messages[0].content, "the answer");
    }

    #[test]
    fn a_failure_a_later_round_may_fix_goes_to_the_next_tier_with_its_history() {
        let (c, meta) = (config(), retried(None));
        let f = StepOutcome::Failed(failure(ErrorClass::ProviderError));
        let o = decide(record(&c, 0, None, &meta), &job(), f, &now());
        let Action::Retry {
            topic,
            tier_name,
            retry,
            job_cost_usd,
            step_cost_usd,
            history,
            class,
            ..
        } = &o.action
        else {
            panic!("{o:?}")
        };
        assert_eq!(*class, ErrorClass::ProviderError);
        assert_eq!(
            (topic.as_str(), tier_name.as_str()),
            ("p.first.retry.30s", "30s")
        );
        assert_eq!(
            (retry.tier, retry.count, retry.due_ms),
            (0, 1, 1_000_000 + 30_000)
        );
        assert_eq!((*job_cost_usd, *step_cost_usd), (1.25, 0.25));
        let rounds: Vec<Round> = serde_json::from_str(history).unwrap();
        assert_eq!(rounds.len(), 1);
        assert_eq!(
            (rounds[0].topic.as_str(), rounds[0].attempts),
            ("p.first", 3)
        );
        assert_eq!((o.attempts, o.variant.as_deref()), (3, Some("b")));
    }

    #[test]
    fn a_long_retry_after_makes_the_tier_due_later() {
        let (c, meta) = (config(), retried(None));
        let mut f = failure(ErrorClass::RateLimited);
        f.retry_after = Some(Duration::from_secs(900));
        let o = decide(
            record(&c, 0, None, &meta),
            &job(),
            StepOutcome::Failed(f),
            &now(),
        );
        let Action::Retry { retry, .. } = o.action else {
            panic!()
        };
        assert_eq!(retry.due_ms, 1_000_000 + 900_000);
    }

    #[test]
    fn after_the_last_tier_the_dead_letter_carries_the_history() {
        let (c, mut meta) = (config(), retried(Some(2)));
        meta.history = vec![Round {
            at: "earlier".into(),
            topic: "p.first".into(),
            error_class: ErrorClass::ProviderError,
            model: Some("m".into()),
            attempts: 3,
        }];
        let f = StepOutcome::Failed(failure(ErrorClass::ProviderError));
        let o = decide(record(&c, 0, Some(2), &meta), &job(), f, &now());
        let Action::Fail {
            topic,
            escalate,
            message,
            history,
            ..
        } = &o.action
        else {
            panic!("{o:?}")
        };
        assert_eq!((topic.as_str(), *escalate), ("p.first.dlq", false));
        assert_eq!(message, "it failed (after 3 retry tiers)");
        let rounds: Vec<Round> = serde_json::from_str(history.as_deref().unwrap()).unwrap();
        assert_eq!(rounds.len(), 2);
        assert_eq!(rounds[1].topic, "p.first.retry.30m");
        assert_eq!(o.attempts, 7);
    }

    #[test]
    fn a_failure_no_round_can_fix_is_dead_lettered_or_escalated_at_once() {
        let (c, meta) = (config(), retried(None));
        let f = StepOutcome::Failed(failure(ErrorClass::BadRequest));
        let o = decide(record(&c, 0, None, &meta), &job(), f, &now());
        let Action::Fail { topic, history, .. } = &o.action else {
            panic!("{o:?}")
        };
        assert_eq!((topic.as_str(), history), ("p.first.dlq", &None));
        let f = StepOutcome::Failed(failure(ErrorClass::ContentFilter));
        let o = decide(record(&c, 0, None, &meta), &job(), f, &now());
        let Action::Fail {
            topic, escalate, ..
        } = &o.action
        else {
            panic!("{o:?}")
        };
        assert_eq!((topic.as_str(), *escalate), ("baton.review", true));
        // The next step's route does not escalate it.
        let f = StepOutcome::Failed(failure(ErrorClass::ContentFilter));
        let o = decide(record(&c, 1, None, &meta), &job(), f, &now());
        assert_eq!(o.action.topic(), "p.last.dlq");
    }

    #[test]
    fn a_record_the_broker_refuses_becomes_an_output_rejected_dead_letter() {
        let (c, meta) = (config(), retried(Some(0)));
        let r = record(&c, 1, Some(0), &meta);
        let done = decide(
            r,
            &job(),
            StepOutcome::Done(Box::new(result("last"))),
            &now(),
        );
        let rejected = done.rejected(r, 9000, "too large", &now()).unwrap();
        let Action::Fail {
            class,
            message,
            last_model,
            ..
        } = &rejected.action
        else {
            panic!("{rejected:?}")
        };
        assert_eq!(*class, ErrorClass::OutputRejected);
        assert!(message.contains("9000 bytes"), "{message}");
        assert_eq!(last_model.as_deref(), Some("m"));
        // The calls of every round, counted once.
        assert_eq!(rejected.attempts, 6);
        // A dead letter itself has nothing smaller to become.
        assert_eq!(rejected.rejected(r, 1, "x", &now()), None);
        let retry = decide(
            r,
            &job(),
            StepOutcome::Failed(failure(ErrorClass::ProviderError)),
            &now(),
        );
        let refused = retry.rejected(r, 1, "too large", &now()).unwrap();
        let Action::Fail { class, history, .. } = &refused.action else {
            panic!()
        };
        assert_eq!(*class, ErrorClass::OutputRejected);
        assert!(history.is_some());
    }

    #[test]
    fn each_outcome_writes_its_own_headers() {
        let (c, meta) = (config(), retried(None));
        let r = record(&c, 0, None, &meta);
        let retry = decide(
            r,
            &job(),
            StepOutcome::Failed(failure(ErrorClass::ProviderError)),
            &now(),
        );
        let m = retry.out_meta("p.first", &meta, ("p.first", 2, 7));
        assert_eq!((m.job_id, m.attempt, m.variant), ("j1", 3, Some("b")));
        assert!(m.retry.is_some() && m.history.is_some() && m.dead.is_none());
        assert_eq!((m.job_cost_usd, m.step_cost_usd), (Some(1.25), Some(0.25)));
        let dead = terminal(r, "k", ErrorClass::InvalidJson, "bad".into(), &now());
        let m = dead.out_meta("p.first", &meta, ("p.first", 2, 7));
        let d = m.dead.unwrap();
        assert_eq!(
            (d.error_class, d.partition, d.offset),
            ("invalid_json", 2, 7)
        );
        assert!(m.job_cost_usd.is_none() && m.retry.is_none());
    }
}
