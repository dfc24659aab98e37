//! JSON out of an answer's text. Parsing is serde_json's; this module only says where to look.

use serde_json::Value;

/// How many places in the text [`find`] tries a parse from, so a long answer full of braces
/// cannot make it quadratic.
const MAX_STARTS: usize = 64;

/// The answer parsed as JSON when the whole answer is a JSON object or array (optionally in a
/// code fence): what a step that asked for no JSON still gets parsed.
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

/// The JSON an answer holds, wherever it is: the whole answer, a fenced code block, or the
/// first object or array in the surrounding prose that parses.
pub fn find(text: &str) -> Option<Value> {
    if let Some(v) = extract(text) {
        return Some(v);
    }
    if let Some(v) = fenced(text) {
        return Some(v);
    }
    // The longest value wins: a citation like "[3]" before the answer is not the answer.
    text.match_indices(['{', '['])
        .take(MAX_STARTS)
        .filter_map(|(i, _)| first_value(&text[i..]))
        .max_by_key(|(_, len)| *len)
        .map(|(v, _)| v)
}

/// The first fenced code block (```` ```json ```` or ```` ``` ````) that is JSON.
fn fenced(text: &str) -> Option<Value> {
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let body_start = after.find('\n').map_or(after.len(), |n| n + 1);
        let body = &after[body_start..];
        let close = body.find("```")?;
        if let Some(v) = extract(&body[..close]) {
            return Some(v);
        }
        rest = &body[close + 3..];
    }
    None
}

/// The JSON object or array `text` starts with (ignoring whatever follows it), and how many
/// bytes of `text` it takes.
fn first_value(text: &str) -> Option<(Value, usize)> {
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    match values.next() {
        Some(Ok(v)) if v.is_object() || v.is_array() => Some((v, values.byte_offset())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_answers_are_parsed() {
        assert_eq!(extract(r#" {"a":1} "#), Some(json!({"a":1})));
        assert_eq!(extract("```json\n[1,2]\n```"), Some(json!([1, 2])));
        assert_eq!(extract("plain text"), None);
        assert_eq!(extract("{broken"), None);
    }

    #[test]
    fn json_is_found_in_fences_and_prose() {
        assert_eq!(
            find("Here you go:\n```json\n{\"a\": 1}\n```\nAnything else?"),
            Some(json!({"a": 1}))
        );
        assert_eq!(
            find("The parties {are} listed: {\"parties\": [\"A\", \"B\"]} as asked."),
            Some(json!({"parties": ["A", "B"]}))
        );
        assert_eq!(find("no json {at all"), None);
        assert_eq!(
            find("Per clause [3], here is the JSON: {\"risk\": \"high\"}"),
            Some(json!({"risk": "high"}))
        );
        assert_eq!(find("```\nnot json\n```"), None);
    }
}
