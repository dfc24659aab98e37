//! JSON out of an answer's text.

use serde_json::Value;

/// The answer parsed as JSON when it is a JSON object or array (optionally in a code fence).
pub fn extract(text: &str) -> Option<Value> {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|r| r.strip_suffix("```"))
        .map(str::trim)
        .unwrap_or(t);
    if !(t.starts_with('{') || t.starts_with('[')) {
        return None;
    }
    serde_json::from_str(t).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_are_parsed() {
        assert_eq!(extract(r#" {"a":1} "#), Some(serde_json::json!({"a":1})));
        assert_eq!(
            extract("```json\n[1,2]\n```"),
            Some(serde_json::json!([1, 2]))
        );
        assert_eq!(extract("plain text"), None);
        assert_eq!(extract("{broken"), None);
    }
}
