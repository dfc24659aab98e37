//! The route of a step that names its models inline (`model`, `task_models`, `fallbacks`):
//! one class per task plus `default`, each trying its first choice, then the default model,
//! then the fallbacks, in that order (strategy `priority`).

use super::{ClassConfig, ModelIndex, RouteConfig, RuleConfig, Strategy, VariantConfig};
use crate::config::error::Resolver;
use crate::config::pipelines::RawStep;

/// The route called `name` of the step `s` at `spath`.
pub fn route(
    name: &str,
    spath: &str,
    s: &RawStep,
    models: &ModelIndex<'_>,
    r: &mut Resolver<'_>,
) -> RouteConfig {
    let default_model = s
        .model
        .as_ref()
        .and_then(|m| models.resolve(&format!("{spath}.model"), m, r));
    let fallbacks: Vec<usize> = s
        .fallbacks
        .iter()
        .enumerate()
        .filter_map(|(j, m)| models.resolve(&format!("{spath}.fallbacks[{j}]"), m, r))
        .collect();
    let chain = |first: Option<usize>| {
        let mut order: Vec<usize> = Vec::new();
        for m in first
            .into_iter()
            .chain(default_model)
            .chain(fallbacks.iter().copied())
        {
            if !order.contains(&m) {
                order.push(m);
            }
        }
        ClassConfig {
            weights: vec![1.0; order.len()],
            models: order,
            strategy: Strategy::Priority,
            requires: Vec::new(),
            expected_output_tokens: None,
        }
    };
    let mut classes = vec!["default".to_string()];
    let mut class_configs = vec![chain(None)];
    let mut rules = Vec::new();
    for (task, m) in &s.task_models {
        let first = models.resolve(&format!("{spath}.task_models.{task}"), m, r);
        rules.push(RuleConfig::for_task(task, classes.len()));
        classes.push(task.clone());
        class_configs.push(chain(first));
    }
    RouteConfig {
        name: name.to_string(),
        classes,
        default_class: 0,
        rules,
        classifier: None,
        variants: vec![VariantConfig {
            name: None,
            weight: 1.0,
            classes: class_configs,
        }],
        sensitivities: Vec::new(),
        hash_seed: xxhash_rust::xxh3::xxh3_64(name.as_bytes()),
        review: s.review.clone(),
        content_filter: s.content_filter,
    }
}
