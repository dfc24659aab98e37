//! A step's JSON Schema at work: validating an answer (the validator is the `jsonschema`
//! crate's, compiled once when the config loads). A sample instance of a schema (what `baton
//! check` renders templates against and `baton mock-llm` answers with) is the config's
//! ([`crate::config::schema::sample`]).

use serde_json::Value;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::sample;
    use serde_json::json;

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
