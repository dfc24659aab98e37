//! The route's classifier call: one guarded call, no retries (a failed or off-label answer
//! means the default class). The classifier sees the job's data, so the job's policy binds it
//! like any model (the router gates the call).

use super::call::{CallSpec, Skipped};
use super::StepRunner;
use crate::config::StepConfig;
use crate::context::Prompt;
use crate::envelope::{ClassifierCall, Job};
use crate::router::{self, ClassChoice};

impl StepRunner {
    /// Asks the step's route's classifier for the class of `job`. Returns the choice, the
    /// call's record, and what it cost.
    pub(super) async fn classify(
        &self,
        step: &StepConfig,
        job: &Job,
        prompt: &Prompt,
        spent_before: f64,
        variant: Option<&str>,
    ) -> (ClassChoice, Option<ClassifierCall>, f64) {
        let route = &self.config.routes[step.route];
        let gated =
            router::gated_classifier_request(&self.config, route, job, prompt, spent_before);
        let Some((m, gated)) = gated else {
            return (ClassChoice::Default("no rule matched".into()), None, 0.0);
        };
        let model = &self.config.models[m];
        let (request, prompt_tokens) = match gated {
            Ok(r) => r,
            Err(why) => {
                let (choice, call) = router::classifier_skipped(&model.name, why);
                return (choice, Some(call), 0.0);
            }
        };
        let spec = CallSpec {
            step,
            variant,
            policy: route.content_filter,
            tokens: prompt_tokens + u64::from(request.max_tokens.unwrap_or(0)),
            deadline: None,
        };
        // Not recorded in the latency window: a one-word answer is not the model's latency for
        // real work.
        let made = match self.guarded_call(m, &request, spec).await {
            Ok(made) => made,
            Err(skipped) => {
                let why = match skipped {
                    Skipped::CircuitOpen => format!("{}'s circuit is open", model.name),
                    Skipped::NoCapacity => format!("no rate-limit capacity on {}", model.name),
                    Skipped::Cooling(_) => format!("{} is cooling down after a 429", model.name),
                };
                let (choice, call) = router::classifier_skipped(&model.name, why);
                return (choice, Some(call), 0.0);
            }
        };
        match made.result {
            Ok(c) => {
                let cost = model.usage_cost_usd(&c.usage);
                let (choice, call) = router::classifier_answered(route, &model.name, &c.text, cost);
                (choice, Some(call), cost)
            }
            Err((e, _)) => {
                let (choice, call) =
                    router::classifier_failed(&model.name, e.class().as_str(), &e.to_string());
                (choice, Some(call), 0.0)
            }
        }
    }
}
