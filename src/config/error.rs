//! Configuration errors and the resolution context every section reports into.
//!
//! An error names its dotted key path and, when the key is written in the file, its line:
//! `pipelines.support.steps[0].model (line 31): unknown model "gpt5"`. Sections report every
//! problem they find ([`Resolver::err`]) and go on, so one run of `baton check` lists them all;
//! the resolver finds each path's line in the source ([`super::source::SourceMap`]), so a
//! range check needs no span of its own to get one.

use super::source::SourceMap;

/// A configuration error: the key path it concerns, the line when known, and what is wrong.
/// Displays as `path (line N): message`; an error about no key (the file cannot be read, is
/// not TOML at all) shows only what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    /// Dotted key path, e.g. `pipelines.support.steps[0].model`.
    pub path: String,
    /// 1-based line in the TOML source, when known.
    pub line: Option<usize>,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path)?;
        if let Some(l) = self.line {
            write!(f, " (line {l})")?;
        }
        if !self.path.is_empty() || self.line.is_some() {
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}

impl ConfigError {
    /// An error at `path` with no known line.
    pub fn new(path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.to_string(),
            line: None,
            message: message.into(),
        }
    }
}

/// All errors found in one file; validation reports every problem at once.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid configuration{}:\n  {}", source_name.as_ref().map(|s| format!(" in {s}")).unwrap_or_default(), errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  "))]
pub struct ConfigErrors {
    /// Where the configuration came from (a path), when known.
    pub source_name: Option<String>,
    /// Every problem found.
    pub errors: Vec<ConfigError>,
}

/// What phase two needs while it resolves a section: the source text and where each key is
/// written in it (for lines), and the errors found so far.
pub struct Resolver<'a> {
    text: &'a str,
    source: SourceMap<'a>,
    errors: Vec<ConfigError>,
}

impl<'a> Resolver<'a> {
    /// A resolver over the TOML source `text`.
    pub fn new(text: &'a str) -> Self {
        Resolver {
            text,
            source: SourceMap::new(text),
            errors: Vec::new(),
        }
    }

    /// Reports a problem at `path`, with the line where the key is written (or, when it is
    /// not, where the table it belongs in is).
    pub fn err(&mut self, path: &str, message: impl Into<String>) {
        let line = self.source.span(path).map(|s| line_of(self.text, s.start));
        self.errors.push(ConfigError {
            path: path.to_string(),
            line,
            message: message.into(),
        });
    }

    /// Reports a problem at `path`, whose value starts at byte `offset` of the source.
    pub fn err_at(&mut self, path: &str, offset: usize, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.to_string(),
            line: Some(line_of(self.text, offset)),
            message: message.into(),
        });
    }

    /// How many problems were reported so far.
    pub fn count(&self) -> usize {
        self.errors.len()
    }

    /// Drops repeats of the same problem reported since the first `since` errors (a variant
    /// inherits its route's classes, so an inherited problem is found once per variant).
    pub fn dedup_since(&mut self, since: usize) {
        let mut seen = std::collections::HashSet::new();
        let mut i = since;
        while i < self.errors.len() {
            if seen.insert(self.errors[i].to_string()) {
                i += 1;
            } else {
                self.errors.remove(i);
            }
        }
    }

    /// Every problem, or `Ok` when there were none.
    pub fn finish(self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors {
                source_name: None,
                errors: self.errors,
            })
        }
    }
}

/// `names` quoted and comma-separated, for "known: ..." hints.
pub fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    names
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `s` may be part of a topic name: letters, digits, `-` and `_`.
pub fn valid_topic_part(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Turns a TOML parse error (syntax, unknown key, wrong type) into a [`ConfigError`].
pub fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().to_string();
    match e.span() {
        Some(span) => ConfigError {
            path: key_path_at(text, span.start),
            line: Some(line_of(text, span.start)),
            message,
        },
        None => ConfigError {
            path: String::new(),
            line: None,
            message,
        },
    }
}

/// The dotted key path of the `key = value` line holding `offset`: the nearest table header
/// above it, plus the key. The toml parser reports spans, not paths, so this recovers the path
/// a user searches for.
fn key_path_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let key = match line.split_once('=') {
        Some((k, _)) if !line.starts_with('[') => k.trim().trim_matches('"').to_string(),
        _ => String::new(),
    };
    let header_of = |l: &str| l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
    let header = if line.starts_with('[') {
        Some(header_of(line))
    } else {
        text[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(header_of)
    };
    match (header, key.is_empty()) {
        (Some(h), false) => format!("{h}.{key}"),
        (Some(h), true) => h,
        (None, _) => key,
    }
}
