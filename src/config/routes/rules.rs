//! `[[routes.<name>.rules]]`: conditions (all must hold) and the class they give; compiled
//! here once (keywords into one whole-word regex) so matching a job costs no parsing.

use std::collections::HashSet;

use indexmap::IndexMap;
use serde::Deserialize;

use super::{ClassNames, Spanned};
use crate::config::error::Resolver;

/// A string, or a list of strings, as written: `task = "x"` or `task = ["x", "y"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several values; any matches.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `[[routes.<name>.rules]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Name shown in decisions; `rules[i]` when absent.
    pub name: Option<String>,
    /// The class a matching job gets.
    pub class: Spanned,
    /// The job's `task` is one of these.
    pub task: Option<OneOrMany>,
    /// The job's `tenant` is one of these.
    pub tenant: Option<OneOrMany>,
    /// Each key of the job's `metadata` (or dotted path into it, `customer.plan`) equals the
    /// given value.
    #[serde(default)]
    pub metadata: IndexMap<String, toml::Value>,
    /// The content contains one of these words (case-insensitive, whole words).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// The content matches this regular expression.
    pub regex: Option<String>,
    /// The prompt has at least this many tokens.
    pub min_tokens: Option<u64>,
    /// The prompt has at most this many tokens.
    pub max_tokens: Option<u64>,
}

/// A classification rule: every condition present must hold.
#[derive(Debug, Clone)]
pub struct RuleConfig {
    /// Name shown in decisions.
    pub name: String,
    /// Class index given to a matching job.
    pub class: usize,
    /// The job's task is one of these (empty: any).
    pub task: Vec<String>,
    /// The job's tenant is one of these (empty: any).
    pub tenant: Vec<String>,
    /// Metadata keys and the JSON values they must equal.
    pub metadata: Vec<(String, serde_json::Value)>,
    /// Whole-word, case-insensitive alternation of the keywords.
    pub keywords: Option<regex::Regex>,
    /// A regular expression over the content.
    pub regex: Option<regex::Regex>,
    /// Minimum prompt tokens.
    pub min_tokens: Option<u64>,
    /// Maximum prompt tokens.
    pub max_tokens: Option<u64>,
}

impl RuleConfig {
    /// A rule that gives `class` to jobs whose task is `task` (the inline step form).
    pub fn for_task(task: &str, class: usize) -> RuleConfig {
        RuleConfig {
            name: format!("task:{task}"),
            class,
            task: vec![task.to_string()],
            tenant: Vec::new(),
            metadata: Vec::new(),
            keywords: None,
            regex: None,
            min_tokens: None,
            max_tokens: None,
        }
    }
}

/// Every rule of a route, each naming a known class and a unique name.
pub(super) fn resolve(
    rules: &[RawRule],
    classes: &ClassNames<'_>,
    r: &mut Resolver<'_>,
) -> Vec<RuleConfig> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, rule) in rules.iter().enumerate() {
        let rpath = format!("{}.rules[{i}]", classes.path);
        let class = match classes.names.iter().position(|n| n == rule.class.get_ref()) {
            Some(c) => c,
            None => {
                r.err_at(
                    &format!("{rpath}.class"),
                    rule.class.span().start,
                    classes.unknown(rule.class.get_ref()),
                );
                0
            }
        };
        let built = rule.resolve(&rpath, i, class, r);
        if !names.insert(built.name.clone()) {
            r.err(
                &format!("{rpath}.name"),
                format!("duplicate rule name {:?}", built.name),
            );
        }
        out.push(built);
    }
    out
}

impl RawRule {
    fn resolve(&self, rpath: &str, i: usize, class: usize, r: &mut Resolver<'_>) -> RuleConfig {
        let keywords = self.keywords(rpath, r);
        let regex = self.regex(rpath, r);
        if let (Some(lo), Some(hi)) = (self.min_tokens, self.max_tokens) {
            if lo > hi {
                r.err(
                    &format!("{rpath}.min_tokens"),
                    format!("min_tokens {lo} is above max_tokens {hi}"),
                );
            }
        }
        let metadata = self
            .metadata
            .iter()
            .map(|(k, v)| {
                let json = serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
                (k.clone(), json)
            })
            .collect();
        RuleConfig {
            name: self.name.clone().unwrap_or_else(|| format!("rules[{i}]")),
            class,
            task: self
                .task
                .clone()
                .map(OneOrMany::into_vec)
                .unwrap_or_default(),
            tenant: self
                .tenant
                .clone()
                .map(OneOrMany::into_vec)
                .unwrap_or_default(),
            metadata,
            keywords,
            regex,
            min_tokens: self.min_tokens,
            max_tokens: self.max_tokens,
        }
    }

    /// The keywords as one case-insensitive alternation, each a whole word where it starts or
    /// ends with a word character.
    fn keywords(&self, rpath: &str, r: &mut Resolver<'_>) -> Option<regex::Regex> {
        if self.keywords.is_empty() {
            return None;
        }
        if self.keywords.iter().any(|k| k.trim().is_empty()) {
            r.err(&format!("{rpath}.keywords"), "keywords must not be empty");
        }
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        let alternation = self
            .keywords
            .iter()
            .map(|k| {
                let start = if word(k.chars().next()) { r"\b" } else { "" };
                let end = if word(k.chars().last()) { r"\b" } else { "" };
                format!("{start}{}{end}", regex::escape(k))
            })
            .collect::<Vec<_>>()
            .join("|");
        regex::Regex::new(&format!("(?i)(?:{alternation})"))
            .map_err(|e| {
                r.err(
                    &format!("{rpath}.keywords"),
                    format!("cannot be matched: {e}"),
                )
            })
            .ok()
    }

    fn regex(&self, rpath: &str, r: &mut Resolver<'_>) -> Option<regex::Regex> {
        let re = self.regex.as_ref()?;
        regex::Regex::new(re)
            .map_err(|e| {
                r.err(
                    &format!("{rpath}.regex"),
                    format!("invalid regular expression: {e}"),
                )
            })
            .ok()
    }
}
