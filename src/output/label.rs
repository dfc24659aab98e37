//! A classifier's answer read as one of its route's labels.

use crate::config::RouteConfig;

/// The class a classifier answer names, if it is one of the labels (case, surrounding
/// whitespace, quotes and a final full stop are forgiven; anything else is off-label).
pub fn parse(route: &RouteConfig, answer: &str) -> Option<usize> {
    let quote = |c: char| c == '"' || c == '\'' || c == '`';
    let a = answer
        .trim()
        .trim_end_matches('.')
        .trim_matches(quote)
        .trim_end_matches('.')
        .trim();
    let c = route.classifier.as_ref()?;
    c.labels
        .iter()
        .copied()
        .find(|&l| route.classes[l].eq_ignore_ascii_case(a))
}
