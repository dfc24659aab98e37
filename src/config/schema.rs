//! A step's `response_format`: the JSON Schema its answers must satisfy, written inline or read
//! from a file (relative to the config file, e.g. `schemas/extract.json`), checked and compiled
//! once when the config loads; and a [`sample`] instance of a schema, which `baton check`
//! renders templates against and `baton mock-llm` answers with.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// `response_format = { schema = {...} }` or `{ schema_file = "schemas/x.json" }` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponseFormat {
    /// The schema's name, sent to providers that want one (default: the step's name).
    pub name: Option<String>,
    /// The schema, inline (a TOML table is its JSON object).
    pub schema: Option<Value>,
    /// A file holding the schema as JSON, relative to the config file.
    pub schema_file: Option<String>,
}

/// A compiled JSON Schema for a step's answers.
#[derive(Clone)]
pub struct ResponseSchema {
    /// Its name (letters, digits, `_` and `-`, as providers require).
    pub name: String,
    /// The schema itself.
    pub schema: Arc<Value>,
    /// The compiled validator.
    pub validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for ResponseSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseSchema")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ResponseSchema {
    /// Compiles `schema`; the error says what is wrong with it.
    pub fn compile(name: &str, schema: Value) -> Result<ResponseSchema, String> {
        if !schema.is_object() {
            return Err("a JSON Schema must be an object".into());
        }
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| format!("not a valid JSON Schema: {e}"))?;
        Ok(ResponseSchema {
            name: name.to_string(),
            schema: Arc::new(schema),
            validator: Arc::new(validator),
        })
    }

    /// The OpenAI-style `response_format` asking for answers in this schema.
    pub fn wire_format(&self) -> Value {
        serde_json::json!({
            "type": "json_schema",
            "json_schema": {"name": self.name, "schema": *self.schema},
        })
    }
}

impl RawResponseFormat {
    /// The compiled schema; `default_name` names it when the config does not.
    pub fn resolve(
        &self,
        default_name: &str,
        base_dir: Option<&Path>,
    ) -> Result<ResponseSchema, String> {
        let schema = match (&self.schema, &self.schema_file) {
            (Some(s), None) => s.clone(),
            (None, Some(file)) => read_schema(file, base_dir)?,
            _ => return Err("set exactly one of `schema` (inline) and `schema_file`".into()),
        };
        let name = self.name.as_deref().unwrap_or(default_name);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "name {name:?} may use only letters, digits, '_' and '-'"
            ));
        }
        ResponseSchema::compile(name, schema)
    }
}

fn read_schema(file: &str, base_dir: Option<&Path>) -> Result<Value, String> {
    let path = match base_dir {
        Some(dir) => dir.join(file),
        None => Path::new(file).to_path_buf(),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read schema file {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("schema file {} is not JSON: {e}", path.display()))
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
