//! A step's JSON Schema at work: validating an answer (the validator is the `jsonschema`
//! crate's, compiled once when the config loads), and a [`sample`] instance of a schema, which
//! `baton check` renders templates against and `baton mock-llm` answers with.

use serde_json::{json, Map, Value};

use crate::config::ResponseSchema;

/// How many validation errors a rejection keeps (the repair prompt and the dead letter say
/// these; the rest are usually consequences).
const MAX_ERRORS: usize = 5;

/// Checks `value` against `schema`: `Err` holds the errors, each as `<where>: <what>`.
pub fn validate(schema: &ResponseSchema, value: &Value) -> Result<(), Vec<String>> {
    if schema.validator.is_valid(value) {
        return Ok(());
    }
    let errors: Vec<String> = schema
        .validator
        .iter_errors(value)
        .take(MAX_ERRORS)
        .map(|e| {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".to_string() } else { at };
            format!("{at}: {}", crate::util::excerpt(&e.to_string(), 200))
        })
        .collect();
    Err(errors)
}

/// An instance of `schema` (objects get their properties, arrays one item, an `enum` one of
/// its values), varied by `seed` where the schema leaves a choice, so different prompts get
/// different (still valid) answers. Covers the keywords structured-output schemas use
/// (`type`, `properties`, `required`, `items`, `enum`, `const`, `anyOf`/`oneOf`, `minItems`,
/// `minimum`); `$ref` and the rarer keywords are not followed.
pub fn sample(schema: &Value, seed: u64) -> Value {
    sample_at(schema, seed, 0)
}

fn sample_at(schema: &Value, seed: u64, depth: u32) -> Value {
    let Some(s) = schema.as_object() else {
        return Value::Null;
    };
    if depth > 16 {
        return Value::Null;
    }
    if let Some(c) = s.get("const") {
        return c.clone();
    }
    if let Some(Value::Array(values)) = s.get("enum") {
        if !values.is_empty() {
            return values[pick(seed, depth, values.len())].clone();
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(options)) = s.get(key) {
            if let Some(first) = options.first() {
                return sample_at(first, seed, depth + 1);
            }
        }
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts.iter().find_map(Value::as_str).unwrap_or("null"),
        _ if s.contains_key("properties") => "object",
        _ if s.contains_key("items") => "array",
        _ => "string",
    };
    match ty {
        "object" => object(s, seed, depth),
        "array" => {
            let n = s
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .max(1);
            let item = s.get("items").cloned().unwrap_or(json!({}));
            (0..n.min(8))
                .map(|i| sample_at(&item, seed.wrapping_add(i), depth + 1))
                .collect()
        }
        "integer" => json!(s.get("minimum").and_then(Value::as_i64).unwrap_or(1)),
        "number" => json!(s.get("minimum").and_then(Value::as_f64).unwrap_or(1.0)),
        "boolean" => json!(pick(seed, depth, 2) == 1),
        "null" => Value::Null,
        _ => json!(format!("sample-{}", pick(seed, depth, 1000))),
    }
}

fn object(s: &Map<String, Value>, seed: u64, depth: u32) -> Value {
    let mut out = Map::new();
    if let Some(Value::Object(props)) = s.get("properties") {
        for (i, (name, p)) in props.iter().enumerate() {
            out.insert(
                name.clone(),
                sample_at(p, seed.wrapping_add(i as u64 * 7919), depth + 1),
            );
        }
    }
    Value::Object(out)
}

/// A choice among `n`, spread by seed and depth.
fn pick(seed: u64, depth: u32, n: usize) -> usize {
    let h =
        xxhash_rust::xxh3::xxh3_64(&[seed.to_le_bytes(), u64::from(depth).to_le_bytes()].concat());
    (h % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract() -> Value {
        json!({
            "type": "object",
            "required": ["parties", "risk", "effective_date"],
            "additionalProperties": false,
            "properties": {
                "parties": {"type": "array", "minItems": 2, "items": {"type": "string"}},
                "risk": {"enum": ["low", "medium", "high"]},
                "effective_date": {"type": "string"},
                "value_usd": {"type": ["number", "null"], "minimum": 0},
                "auto_renews": {"type": "boolean"}
            }
        })
    }

    #[test]
    fn samples_satisfy_their_schema_and_vary_by_seed() {
        let s = ResponseSchema::compile("contract", contract()).unwrap();
        let mut risks = std::collections::BTreeSet::new();
        for seed in 0..40 {
            let v = sample(&contract(), seed);
            assert_eq!(validate(&s, &v), Ok(()), "{v}");
            risks.insert(v["risk"].as_str().unwrap().to_string());
        }
        assert_eq!(risks.len(), 3, "every enum value shows up: {risks:?}");
    }

    #[test]
    fn errors_say_where() {
        let s = ResponseSchema::compile("contract", contract()).unwrap();
        let errors = validate(&s, &json!({"parties": ["A"], "risk": "extreme"})).unwrap_err();
        let all = errors.join("\n");
        assert!(all.contains("/parties"), "{all}");
        assert!(all.contains("/risk"), "{all}");
        assert!(all.contains("effective_date"), "{all}");
    }
}
