//! Phase two for routes: resolve model names, merge classes with their route and variants,
//! compile rules, and prove what `baton check` promises (every declared sensitivity has an
//! allowed model in every class of every variant, weights are positive, names are unique).
//!
//! A step that names its models inline (`model`, `task_models`, `fallbacks`) gets a route of
//! its own: one class per task plus `default`, each trying its first choice, then the default
//! model, then the fallbacks, in that order (strategy `priority`).

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;

use super::raw::{RawClass, RawConfig, RawRoute, RawRule, RawStep};
use super::{
    err, line_of, list, ClassConfig, ClassifierConfig, ConfigError, ModelConfig, RouteConfig,
    RuleConfig, Strategy, VariantConfig,
};

type Spanned = toml::Spanned<String>;

/// Resolves a model reference, reporting an unknown one at `path` with its line.
fn resolve(
    path: &str,
    r: &Spanned,
    text: &str,
    raw: &RawConfig,
    index: &HashMap<String, usize>,
    errs: &mut Vec<ConfigError>,
) -> Option<usize> {
    match index.get(r.get_ref()) {
        Some(&i) => Some(i),
        None => {
            errs.push(err(
                path,
                Some(line_of(text, r.span().start)),
                &format!(
                    "unknown model {:?} (known: {})",
                    r.get_ref(),
                    list(raw.models.keys())
                ),
            ));
            None
        }
    }
}

/// Resolves a candidate list: every name known, none twice, not empty.
fn resolve_list(
    path: &str,
    refs: &[Spanned],
    text: &str,
    raw: &RawConfig,
    index: &HashMap<String, usize>,
    errs: &mut Vec<ConfigError>,
) -> Vec<usize> {
    let mut out = Vec::new();
    for (j, r) in refs.iter().enumerate() {
        if let Some(i) = resolve(&format!("{path}[{j}]"), r, text, raw, index, errs) {
            if out.contains(&i) {
                errs.push(err(
                    &format!("{path}[{j}]"),
                    Some(line_of(text, r.span().start)),
                    &format!("duplicate model {:?} in the list", r.get_ref()),
                ));
            } else {
                out.push(i);
            }
        }
    }
    out
}

/// Every `[routes.<name>]`, in file order.
pub(super) fn named_routes(
    raw: &RawConfig,
    text: &str,
    index: &HashMap<String, usize>,
    models: &[ModelConfig],
    errs: &mut Vec<ConfigError>,
) -> Vec<RouteConfig> {
    raw.routes
        .iter()
        .map(|(name, r)| named_route(name, r, text, raw, index, models, errs))
        .collect()
}

fn named_route(
    name: &str,
    r: &RawRoute,
    text: &str,
    raw: &RawConfig,
    index: &HashMap<String, usize>,
    models: &[ModelConfig],
    errs: &mut Vec<ConfigError>,
) -> RouteConfig {
    let path = format!("routes.{name}");
    let default_name = r.default_class.clone().unwrap_or_else(|| "default".into());
    let class_names: Vec<String> = if r.classes.is_empty() {
        vec![default_name.clone()]
    } else {
        r.classes.keys().cloned().collect()
    };
    let default_class = match &r.default_class {
        None => 0,
        Some(d) => match class_names.iter().position(|c| c == d) {
            Some(i) => i,
            None => {
                errs.push(err(
                    &format!("{path}.default_class"),
                    None,
                    &format!(
                        "unknown class {d:?} (classes: {})",
                        list(class_names.iter())
                    ),
                ));
                0
            }
        },
    };
    let class_of = |p: &str, c: &str, errs: &mut Vec<ConfigError>| -> Option<usize> {
        let found = class_names.iter().position(|n| n == c);
        if found.is_none() {
            errs.push(err(
                p,
                None,
                &format!(
                    "unknown class {c:?} (classes: {})",
                    list(class_names.iter())
                ),
            ));
        }
        found
    };

    // Variants inherit the route's classes: an inherited problem is found once per variant
    // and reported once.
    let errs_before = errs.len();
    let route_models = resolve_list(&format!("{path}.models"), &r.models, text, raw, index, errs);
    let base = |c: &str| r.classes.get(c).cloned().unwrap_or_default();

    // Variants: the route itself is the only, unnamed one when none are declared.
    let mut variants = Vec::new();
    let declared: Vec<Option<(usize, &super::raw::RawVariant)>> = if r.variants.is_empty() {
        vec![None]
    } else {
        r.variants.iter().enumerate().map(Some).collect()
    };
    let mut variant_names = HashSet::new();
    for v in declared {
        let vpath = match v {
            Some((i, _)) => format!("{path}.variants[{i}]"),
            None => path.clone(),
        };
        if let Some((_, v)) = v {
            if v.name.trim().is_empty() {
                errs.push(err(&format!("{vpath}.name"), None, "must not be empty"));
            } else if !variant_names.insert(v.name.clone()) {
                errs.push(err(
                    &format!("{vpath}.name"),
                    None,
                    &format!("duplicate variant name {:?}", v.name),
                ));
            }
            if !(v.weight > 0.0 && v.weight.is_finite()) {
                errs.push(err(
                    &format!("{vpath}.weight"),
                    None,
                    &format!("must be positive, got {}", v.weight),
                ));
            }
            for c in v.classes.keys() {
                class_of(&format!("{vpath}.classes.{c}"), c, errs);
            }
        }
        let variant_models = v
            .and_then(|(_, v)| v.models.as_ref())
            .map(|m| resolve_list(&format!("{vpath}.models"), m, text, raw, index, errs));
        let mut classes = Vec::new();
        for c in &class_names {
            let b = base(c);
            let o: RawClass = v
                .and_then(|(_, v)| v.classes.get(c).cloned())
                .unwrap_or_default();
            // The most specific definition wins: variant class, variant, route class, route.
            let (models_path, model_ids) = if let Some(m) = &o.models {
                let p = format!("{vpath}.classes.{c}.models");
                let ids = resolve_list(&p, m, text, raw, index, errs);
                (p, ids)
            } else if let Some(ids) = &variant_models {
                (format!("{vpath}.models"), ids.clone())
            } else if let Some(m) = &b.models {
                let p = format!("{path}.classes.{c}.models");
                let ids = resolve_list(&p, m, text, raw, index, errs);
                (p, ids)
            } else {
                (format!("{path}.models"), route_models.clone())
            };
            let strategy = o
                .strategy
                .or(v.and_then(|(_, v)| v.strategy))
                .or(b.strategy)
                .unwrap_or(r.strategy);
            let weights_map = o
                .weights
                .as_ref()
                .or(b.weights.as_ref())
                .unwrap_or(&r.weights);
            let weights_path = if o.weights.is_some() {
                format!("{vpath}.classes.{c}.weights")
            } else if b.weights.is_some() {
                format!("{path}.classes.{c}.weights")
            } else {
                format!("{path}.weights")
            };
            let weights = class_weights(
                &weights_path,
                strategy,
                weights_map,
                &model_ids,
                models,
                errs,
            );
            let mut requires = b.requires.clone();
            requires.extend(
                o.requires
                    .iter()
                    .copied()
                    .filter(|c| !b.requires.contains(c)),
            );
            if model_ids.is_empty() {
                errs.push(err(
                    &models_path,
                    None,
                    &format!("class {c:?} has no candidate models"),
                ));
            }
            // What `baton check` promises: each declared sensitivity can be served.
            if !model_ids.is_empty() {
                for &s in &r.sensitivities {
                    let ok = model_ids.iter().any(|&m| {
                        models[m].sensitivities.contains(&s)
                            && requires.iter().all(|c| models[m].capabilities.contains(c))
                    });
                    if !ok {
                        errs.push(err(
                            &models_path,
                            None,
                            &format!(
                                "class {c:?} has no candidate allowed to receive {} data{} \
                                 (the route declares it in `sensitivities`)",
                                s.as_str(),
                                if requires.is_empty() {
                                    String::new()
                                } else {
                                    format!(
                                        " with {}",
                                        requires
                                            .iter()
                                            .map(|c| c.as_str())
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    )
                                }
                            ),
                        ));
                    }
                }
            }
            classes.push(ClassConfig {
                models: model_ids,
                strategy,
                weights,
                requires,
                expected_output_tokens: o
                    .expected_output_tokens
                    .or(b.expected_output_tokens)
                    .or(r.expected_output_tokens),
            });
        }
        variants.push(VariantConfig {
            name: v.map(|(_, v)| v.name.clone()),
            weight: v.map_or(1.0, |(_, v)| v.weight),
            classes,
        });
    }

    let total: f64 = variants.iter().map(|v| v.weight).sum();
    if !total.is_finite() {
        errs.push(err(
            &format!("{path}.variants"),
            None,
            "the weights' sum overflows; use smaller weights",
        ));
    }
    let mut seen = HashSet::new();
    let mut i = errs_before;
    while i < errs.len() {
        if seen.insert(errs[i].to_string()) {
            i += 1;
        } else {
            errs.remove(i);
        }
    }

    let mut rules = Vec::new();
    let mut rule_names = HashSet::new();
    for (i, rule) in r.rules.iter().enumerate() {
        let rpath = format!("{path}.rules[{i}]");
        let class = match class_names.iter().position(|n| n == rule.class.get_ref()) {
            Some(c) => c,
            None => {
                errs.push(err(
                    &format!("{rpath}.class"),
                    Some(line_of(text, rule.class.span().start)),
                    &format!(
                        "unknown class {:?} (classes: {})",
                        rule.class.get_ref(),
                        list(class_names.iter())
                    ),
                ));
                0
            }
        };
        let built = rule_config(&rpath, i, rule, class, errs);
        if !rule_names.insert(built.name.clone()) {
            errs.push(err(
                &format!("{rpath}.name"),
                None,
                &format!("duplicate rule name {:?}", built.name),
            ));
        }
        rules.push(built);
    }

    let classifier = r.classifier.as_ref().and_then(|c| {
        let cpath = format!("{path}.classifier");
        let model = resolve(&format!("{cpath}.model"), &c.model, text, raw, index, errs);
        let names = c.labels.clone().unwrap_or_else(|| class_names.clone());
        let mut labels = Vec::new();
        for (j, l) in names.iter().enumerate() {
            if let Some(i) = class_of(&format!("{cpath}.labels[{j}]"), l, errs) {
                if labels.contains(&i) {
                    errs.push(err(
                        &format!("{cpath}.labels[{j}]"),
                        None,
                        &format!("duplicate label {l:?}"),
                    ));
                }
                labels.push(i);
            }
        }
        if names.is_empty() {
            errs.push(err(&format!("{cpath}.labels"), None, "must not be empty"));
        }
        if c.max_tokens == 0 {
            errs.push(err(
                &format!("{cpath}.max_tokens"),
                None,
                "must be positive",
            ));
        }
        let prompt = c.prompt.clone().unwrap_or_else(|| {
            format!(
                "Classify the user's request into exactly one of these labels: {}. \
                 Answer with the label only.",
                names.join(", ")
            )
        });
        Some(ClassifierConfig {
            model: model?,
            labels,
            prompt,
            max_tokens: c.max_tokens,
        })
    });

    RouteConfig {
        name: name.to_string(),
        classes: class_names,
        default_class,
        rules,
        classifier,
        variants,
        sensitivities: r.sensitivities.clone(),
        hash_seed: xxhash_rust::xxh3::xxh3_64(name.as_bytes()),
        review: r.review.clone(),
        content_filter: r.content_filter,
    }
}

/// Weights parallel to `ids`: all 1 unless the strategy is weighted, in which case every
/// candidate needs a positive weight and every weight a candidate.
fn class_weights(
    path: &str,
    strategy: Strategy,
    map: &IndexMap<String, f64>,
    ids: &[usize],
    models: &[ModelConfig],
    errs: &mut Vec<ConfigError>,
) -> Vec<f64> {
    for (name, w) in map {
        if !(*w > 0.0 && w.is_finite()) {
            errs.push(err(
                &format!("{path}.{name}"),
                None,
                &format!("must be positive, got {w}"),
            ));
        }
        if !ids.iter().any(|&m| &models[m].name == name) && strategy == Strategy::Weighted {
            errs.push(err(
                &format!("{path}.{name}"),
                None,
                &format!("{name:?} is not one of the candidate models"),
            ));
        }
    }
    ids.iter()
        .map(|&m| match map.get(&models[m].name) {
            Some(&w) if strategy == Strategy::Weighted => w,
            None if strategy == Strategy::Weighted => {
                errs.push(err(
                    path,
                    None,
                    &format!(
                        "strategy \"weighted\" needs a weight for {:?}",
                        models[m].name
                    ),
                ));
                1.0
            }
            _ => 1.0,
        })
        .collect()
}

fn rule_config(
    rpath: &str,
    i: usize,
    rule: &RawRule,
    class: usize,
    errs: &mut Vec<ConfigError>,
) -> RuleConfig {
    let keywords = if rule.keywords.is_empty() {
        None
    } else {
        if rule.keywords.iter().any(|k| k.trim().is_empty()) {
            errs.push(err(
                &format!("{rpath}.keywords"),
                None,
                "keywords must not be empty",
            ));
        }
        let alternation = rule
            .keywords
            .iter()
            .map(|k| {
                let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                format!(
                    "{}{}{}",
                    if word(k.chars().next()) { r"\b" } else { "" },
                    regex::escape(k),
                    if word(k.chars().last()) { r"\b" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join("|");
        match regex::Regex::new(&format!("(?i)(?:{alternation})")) {
            Ok(re) => Some(re),
            Err(e) => {
                errs.push(err(
                    &format!("{rpath}.keywords"),
                    None,
                    &format!("cannot be matched: {e}"),
                ));
                None
            }
        }
    };
    let regex = rule
        .regex
        .as_ref()
        .and_then(|r| match regex::Regex::new(r) {
            Ok(re) => Some(re),
            Err(e) => {
                errs.push(err(
                    &format!("{rpath}.regex"),
                    None,
                    &format!("invalid regular expression: {e}"),
                ));
                None
            }
        });
    if let (Some(lo), Some(hi)) = (rule.min_tokens, rule.max_tokens) {
        if lo > hi {
            errs.push(err(
                &format!("{rpath}.min_tokens"),
                None,
                &format!("min_tokens {lo} is above max_tokens {hi}"),
            ));
        }
    }
    let metadata = rule
        .metadata
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
            )
        })
        .collect();
    RuleConfig {
        name: rule.name.clone().unwrap_or_else(|| format!("rules[{i}]")),
        class,
        task: rule.task.clone().map(|t| t.into_vec()).unwrap_or_default(),
        tenant: rule
            .tenant
            .clone()
            .map(|t| t.into_vec())
            .unwrap_or_default(),
        metadata,
        keywords,
        regex,
        min_tokens: rule.min_tokens,
        max_tokens: rule.max_tokens,
    }
}

/// The route of a step that names its models inline.
pub(super) fn inline_route(
    name: &str,
    spath: &str,
    s: &RawStep,
    text: &str,
    raw: &RawConfig,
    index: &HashMap<String, usize>,
    errs: &mut Vec<ConfigError>,
) -> RouteConfig {
    let default_model = s
        .model
        .as_ref()
        .and_then(|m| resolve(&format!("{spath}.model"), m, text, raw, index, errs));
    let mut fallbacks = Vec::new();
    for (j, m) in s.fallbacks.iter().enumerate() {
        if let Some(i) = resolve(
            &format!("{spath}.fallbacks[{j}]"),
            m,
            text,
            raw,
            index,
            errs,
        ) {
            fallbacks.push(i);
        }
    }
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
        let first = resolve(
            &format!("{spath}.task_models.{task}"),
            m,
            text,
            raw,
            index,
            errs,
        );
        rules.push(RuleConfig {
            name: format!("task:{task}"),
            class: classes.len(),
            task: vec![task.clone()],
            tenant: Vec::new(),
            metadata: Vec::new(),
            keywords: None,
            regex: None,
            min_tokens: None,
            max_tokens: None,
        });
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
