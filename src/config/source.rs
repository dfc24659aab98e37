//! Where a key path is written in the TOML source, so that every configuration error names its
//! line, not only those whose value phase one kept a span for: a range check in phase two
//! (`worker.max_in_flight = 0`) knows its key path, and this finds the key in the file.
//!
//! The source is parsed a second time by `toml_edit` (the parser `toml` itself uses), which
//! keeps the position of every key, array element and table header. Paths are the ones errors
//! print: dotted keys and `[i]` indices (`pipelines.p.steps[1].model`); a key that itself holds
//! dots (`models."gpt-4.1"`, `kafka.consumer."fetch.min.bytes"`) is matched whole.

use std::ops::Range;

use toml_edit::{Array, ArrayOfTables, ImDocument, Item, TableLike, Value};

/// The TOML source parsed with positions, to look key paths up in.
pub struct SourceMap<'a> {
    /// `None` when the text is not TOML (phase one reports that; no line is found then).
    doc: Option<ImDocument<&'a str>>,
}

/// A place in the parsed document a path walks through.
enum Node<'d> {
    Table(&'d dyn TableLike),
    Array(&'d Array),
    Tables(&'d ArrayOfTables),
    Scalar,
}

impl<'d> Node<'d> {
    fn of_item(item: &'d Item) -> Node<'d> {
        match item {
            Item::Table(t) => Node::Table(t),
            Item::ArrayOfTables(a) => Node::Tables(a),
            Item::Value(v) => Node::of_value(v),
            Item::None => Node::Scalar,
        }
    }

    fn of_value(value: &'d Value) -> Node<'d> {
        match value {
            Value::InlineTable(t) => Node::Table(t),
            Value::Array(a) => Node::Array(a),
            _ => Node::Scalar,
        }
    }

    /// One step down `rest`: the span of what it names, where to go on, and what is left.
    fn step<'p>(&self, rest: &'p str) -> Option<(Option<Range<usize>>, Node<'d>, &'p str)> {
        match self {
            Node::Table(t) => {
                let (key, item, tail) = longest_key(*t, rest)?;
                Some((
                    key.span().or_else(|| item.span()),
                    Node::of_item(item),
                    tail,
                ))
            }
            Node::Array(a) => {
                let (i, tail) = index(rest)?;
                let v = a.get(i)?;
                Some((v.span(), Node::of_value(v), tail))
            }
            Node::Tables(a) => {
                let (i, tail) = index(rest)?;
                let t = a.get(i)?;
                Some((t.span(), Node::Table(t), tail))
            }
            Node::Scalar => None,
        }
    }
}

impl<'a> SourceMap<'a> {
    /// Parses `text`; a text that is not TOML gives a map that finds nothing.
    pub fn new(text: &'a str) -> SourceMap<'a> {
        SourceMap {
            doc: ImDocument::parse(text).ok(),
        }
    }

    /// The byte range where `path` is written: its key (`max_in_flight` of
    /// `max_in_flight = 0`), its array element, or its `[[...]]` header. A path whose last
    /// keys are not in the file (a default that is out of range, a required key left out)
    /// gets its closest written ancestor, the table the key belongs in; a path not in the
    /// file at all gets `None`.
    pub fn span(&self, path: &str) -> Option<Range<usize>> {
        let doc = self.doc.as_ref()?;
        let mut node = Node::Table(doc.as_table());
        let mut rest = path;
        let mut found = None;
        while !rest.is_empty() {
            let Some((span, next, tail)) = node.step(rest) else {
                break;
            };
            found = span.or(found);
            node = next;
            rest = tail;
        }
        found
    }
}

/// The longest key of `table` that `rest` starts with as a whole path segment (followed by
/// `.`, `[` or nothing), and what follows it.
fn longest_key<'d, 'p>(
    table: &'d dyn TableLike,
    rest: &'p str,
) -> Option<(&'d toml_edit::Key, &'d Item, &'p str)> {
    let name = table
        .iter()
        .map(|(k, _)| k)
        .filter(|k| {
            rest.strip_prefix(k)
                .is_some_and(|t| t.is_empty() || t.starts_with('.') || t.starts_with('['))
        })
        .max_by_key(|k| k.len())?;
    let (key, item) = table.get_key_value(name)?;
    let tail = &rest[name.len()..];
    Some((key, item, tail.strip_prefix('.').unwrap_or(tail)))
}

/// `[i]` at the start of `rest`: the index and what follows it.
fn index(rest: &str) -> Option<(usize, &str)> {
    let (i, tail) = rest.strip_prefix('[')?.split_once(']')?;
    Some((i.parse().ok()?, tail.strip_prefix('.').unwrap_or(tail)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::error::line_of;

    const TEXT: &str = r#"top = 1
[worker]
max_in_flight = 0

[models."gpt-4.1"]
base_url = "ftp://x"
rate_limit = { requests_per_minute = 0 }

[kafka.consumer]
"fetch.min.bytes" = "1"

[retry]
tiers = [
  "30s",
  "soon",
]

[[pipelines.p.steps]]
name = "a"
[[pipelines.p.steps]]
name = "b"
fallbacks = ["x", "y"]
classes.simple.models = ["m"]
"#;

    fn line(path: &str) -> Option<usize> {
        SourceMap::new(TEXT)
            .span(path)
            .map(|s| line_of(TEXT, s.start))
    }

    #[test]
    fn keys_elements_and_headers_have_their_lines() {
        for (path, want) in [
            ("top", 1),
            ("worker", 2),
            ("worker.max_in_flight", 3),
            ("models.gpt-4.1", 5),
            ("models.gpt-4.1.base_url", 6),
            ("models.gpt-4.1.rate_limit.requests_per_minute", 7),
            ("kafka.consumer.fetch.min.bytes", 10),
            ("retry.tiers", 13),
            ("retry.tiers[1]", 15),
            ("pipelines.p.steps[0]", 18),
            ("pipelines.p.steps[1].name", 21),
            ("pipelines.p.steps[1].fallbacks[1]", 22),
            ("pipelines.p.steps[1].classes.simple.models[0]", 23),
        ] {
            assert_eq!(line(path), Some(want), "{path}");
        }
    }

    #[test]
    fn a_key_not_written_gets_its_closest_written_ancestor() {
        assert_eq!(line("worker.max_payload_bytes"), Some(2));
        assert_eq!(line("pipelines.p.steps[1].route"), Some(20));
        assert_eq!(line("retry.tiers[7]"), Some(13));
        assert_eq!(line("circuit_breaker.failure_rate"), None);
        assert_eq!(SourceMap::new("not = = toml").span("not"), None);
    }
}
