//! A route's variants and, in each, its classes: the most specific definition of each field
//! wins (variant class, variant, route class, route), and every class must be able to serve
//! every sensitivity the route declares.

use std::collections::HashSet;

use indexmap::IndexMap;

use super::{
    ClassConfig, ClassNames, ModelIndex, RawClass, RawRoute, RawVariant, Strategy, VariantConfig,
};
use crate::config::error::Resolver;
use crate::config::models::{Capability, ModelConfig};

/// The route's variants: the declared ones, or the route itself as the only, unnamed one.
pub(super) fn variants(
    route: &RawRoute,
    classes: &ClassNames<'_>,
    models: &ModelIndex<'_>,
    r: &mut Resolver<'_>,
) -> Vec<VariantConfig> {
    // Variants inherit the route's classes: an inherited problem is found once per variant
    // and reported once.
    let before = r.count();
    let path = classes.path;
    let route_models = models.resolve_list(&format!("{path}.models"), &route.models, r);
    let declared: Vec<Option<(usize, &RawVariant)>> = if route.variants.is_empty() {
        vec![None]
    } else {
        route.variants.iter().enumerate().map(Some).collect()
    };
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for v in declared {
        let vpath = match v {
            Some((i, _)) => format!("{path}.variants[{i}]"),
            None => path.to_string(),
        };
        if let Some((_, v)) = v {
            check_variant(v, &vpath, &mut names, classes, r);
        }
        let scope = Scope {
            route,
            variant: v.map(|(_, v)| v),
            vpath: &vpath,
            route_models: &route_models,
            models,
        };
        out.push(scope.variant(classes, r));
    }
    let total: f64 = out.iter().map(|v| v.weight).sum();
    if !total.is_finite() {
        r.err(
            &format!("{path}.variants"),
            "the weights' sum overflows; use smaller weights",
        );
    }
    r.dedup_since(before);
    out
}

/// A declared variant's own fields: a unique name, a positive weight, known classes.
fn check_variant(
    v: &RawVariant,
    vpath: &str,
    names: &mut HashSet<String>,
    classes: &ClassNames<'_>,
    r: &mut Resolver<'_>,
) {
    if v.name.trim().is_empty() {
        r.err(&format!("{vpath}.name"), "must not be empty");
    } else if !names.insert(v.name.clone()) {
        r.err(
            &format!("{vpath}.name"),
            format!("duplicate variant name {:?}", v.name),
        );
    }
    if !(v.weight > 0.0 && v.weight.is_finite()) {
        r.err(
            &format!("{vpath}.weight"),
            format!("must be positive, got {}", v.weight),
        );
    }
    for c in v.classes.keys() {
        classes.find(&format!("{vpath}.classes.{c}"), c, r);
    }
}

/// What one variant's classes are resolved against.
struct Scope<'a> {
    route: &'a RawRoute,
    variant: Option<&'a RawVariant>,
    vpath: &'a str,
    route_models: &'a [usize],
    models: &'a ModelIndex<'a>,
}

impl Scope<'_> {
    fn variant(&self, classes: &ClassNames<'_>, r: &mut Resolver<'_>) -> VariantConfig {
        let variant_models = self.variant.and_then(|v| v.models.as_ref()).map(|m| {
            self.models
                .resolve_list(&format!("{}.models", self.vpath), m, r)
        });
        let classes = classes
            .names
            .iter()
            .map(|c| self.class(classes.path, c, variant_models.as_deref(), r))
            .collect();
        VariantConfig {
            name: self.variant.map(|v| v.name.clone()),
            weight: self.variant.map_or(1.0, |v| v.weight),
            classes,
        }
    }

    /// Class `c` in this variant.
    fn class(
        &self,
        path: &str,
        c: &str,
        variant_models: Option<&[usize]>,
        r: &mut Resolver<'_>,
    ) -> ClassConfig {
        let (route, vpath) = (self.route, self.vpath);
        let base = route.classes.get(c).cloned().unwrap_or_default();
        let own: RawClass = self
            .variant
            .and_then(|v| v.classes.get(c).cloned())
            .unwrap_or_default();
        let (models_path, models) = if let Some(m) = &own.models {
            let p = format!("{vpath}.classes.{c}.models");
            let ids = self.models.resolve_list(&p, m, r);
            (p, ids)
        } else if let Some(ids) = variant_models {
            (format!("{vpath}.models"), ids.to_vec())
        } else if let Some(m) = &base.models {
            let p = format!("{path}.classes.{c}.models");
            let ids = self.models.resolve_list(&p, m, r);
            (p, ids)
        } else {
            (format!("{path}.models"), self.route_models.to_vec())
        };
        let strategy = own
            .strategy
            .or(self.variant.and_then(|v| v.strategy))
            .or(base.strategy)
            .unwrap_or(route.strategy);
        let (weights_path, weights_map) = match (&own.weights, &base.weights) {
            (Some(w), _) => (format!("{vpath}.classes.{c}.weights"), w),
            (None, Some(w)) => (format!("{path}.classes.{c}.weights"), w),
            (None, None) => (format!("{path}.weights"), &route.weights),
        };
        let all = self.models.models;
        let weights = class_weights(&weights_path, strategy, weights_map, &models, all, r);
        let mut requires = base.requires.clone();
        requires.extend(
            own.requires
                .iter()
                .copied()
                .filter(|x| !base.requires.contains(x)),
        );
        if models.is_empty() {
            r.err(&models_path, format!("class {c:?} has no candidate models"));
        } else {
            self.check_sensitivities(c, &models_path, &models, &requires, r);
        }
        ClassConfig {
            models,
            strategy,
            weights,
            requires,
            expected_output_tokens: own
                .expected_output_tokens
                .or(base.expected_output_tokens)
                .or(route.expected_output_tokens),
        }
    }

    /// What `baton check` promises: each declared sensitivity can be served by a candidate
    /// with the capabilities the class requires.
    fn check_sensitivities(
        &self,
        c: &str,
        models_path: &str,
        ids: &[usize],
        requires: &[Capability],
        r: &mut Resolver<'_>,
    ) {
        let all = self.models.models;
        for &s in &self.route.sensitivities {
            let ok = ids.iter().any(|&m| {
                all[m].sensitivities.contains(&s)
                    && requires.iter().all(|x| all[m].capabilities.contains(x))
            });
            if ok {
                continue;
            }
            let with = if requires.is_empty() {
                String::new()
            } else {
                let names: Vec<&str> = requires.iter().map(|x| x.as_str()).collect();
                format!(" with {}", names.join(", "))
            };
            r.err(
                models_path,
                format!(
                    "class {c:?} has no candidate allowed to receive {} data{with} \
                     (the route declares it in `sensitivities`)",
                    s.as_str()
                ),
            );
        }
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
    r: &mut Resolver<'_>,
) -> Vec<f64> {
    let weighted = strategy == Strategy::Weighted;
    for (name, w) in map {
        if !(*w > 0.0 && w.is_finite()) {
            r.err(
                &format!("{path}.{name}"),
                format!("must be positive, got {w}"),
            );
        }
        if weighted && !ids.iter().any(|&m| &models[m].name == name) {
            r.err(
                &format!("{path}.{name}"),
                format!("{name:?} is not one of the candidate models"),
            );
        }
    }
    ids.iter()
        .map(|&m| match map.get(&models[m].name) {
            Some(&w) if weighted => w,
            None if weighted => {
                r.err(
                    path,
                    format!(
                        "strategy \"weighted\" needs a weight for {:?}",
                        models[m].name
                    ),
                );
                1.0
            }
            _ => 1.0,
        })
        .collect()
}
