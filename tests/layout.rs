//! The tree shows the architecture, and stays that way: each room of `src/` imports only rooms
//! on the floors below it (so there is no import circle), and no function outside tests is
//! longer than 100 lines. Both are read from the source text, test code excluded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The floors, ground first: a room may import rooms of lower floors only.
const FLOORS: &[&[&str]] = &[
    &["util", "config"],
    &["envelope"],
    &["telemetry", "output", "context"],
    &["providers", "router"],
    &["fallback"],
    &["kafka"],
    &["pipeline"],
    &["worker"],
    &["mock_llm"],
    &["demo", "bench"],
    &["cli"],
    &["main", "lib"],
];

/// The longest function allowed, in lines.
const MAX_FN_LINES: usize = 100;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its room (the first path component under `src/`).
fn sources(dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(src()).unwrap();
            let first = rel.components().next().unwrap().as_os_str();
            let room = first.to_string_lossy().trim_end_matches(".rs").to_string();
            out.push((room, path));
        }
    }
}

/// The file's production code: without `tests.rs` files and `#[cfg(test)]` items (a
/// declaration such as `mod tests;`, or a block up to its closing brace).
fn production_code(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "#[cfg(test)]" {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let Some(item) = lines.next() else { break };
        if item.trim_end().ends_with(';') {
            continue;
        }
        for inner in lines.by_ref() {
            let at = inner.len() - inner.trim_start().len();
            if at == indent && inner.trim_start().starts_with('}') {
                break;
            }
        }
    }
    out
}

fn floor(room: &str) -> usize {
    FLOORS
        .iter()
        .position(|f| f.contains(&room))
        .unwrap_or_else(|| panic!("room {room:?} is on no floor: add it to FLOORS"))
}

#[test]
fn each_room_imports_only_the_floors_below_it() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let mut wrong: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (room, path) in &files {
        for line in production_code(path).lines() {
            let code = line.split("//").next().unwrap_or("");
            for prefix in ["crate::", "baton::"] {
                for part in code.split(prefix).skip(1) {
                    let used: String = part
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if used.is_empty() || used == *room {
                        continue;
                    }
                    if floor(&used) >= floor(room) {
                        let rel = path.strip_prefix(src()).unwrap().display().to_string();
                        wrong
                            .entry(format!("{room} -> {used}"))
                            .or_default()
                            .push(rel);
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports of a room on the same or a higher floor (see FLOORS): {wrong:#?}"
    );
}

/// Functions longer than `max` lines in `text`: a function runs from its `fn` line to the first
/// later line that closes a brace at the same indentation.
fn long_functions(text: &str, max: usize) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        if let Some((start, ind, name)) = &open {
            if indent == *ind && trimmed.starts_with('}') {
                let len = i - start + 1;
                if len > max {
                    out.push((len, start + 1, name.clone()));
                }
                open = None;
            }
            continue;
        }
        let Some(after) = fn_name(trimmed) else {
            continue;
        };
        let one_line = trimmed.contains('{') && trimmed.trim_end().ends_with('}');
        if !trimmed.trim_end().ends_with(';') && !one_line {
            open = Some((i, indent, after));
        }
    }
    out
}

/// The name of the function a line declares, if it declares one.
fn fn_name(line: &str) -> Option<String> {
    let mut rest = line;
    for word in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(word).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("async ").unwrap_or(rest);
    let name = rest.strip_prefix("fn ")?;
    Some(
        name.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect(),
    )
}

#[test]
fn no_function_is_longer_than_a_screenful_or_two() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let mut long = Vec::new();
    for (_, path) in &files {
        for (len, line, name) in long_functions(&production_code(path), MAX_FN_LINES) {
            let rel = path.strip_prefix(src()).unwrap().display().to_string();
            long.push(format!("{len} lines: {rel}:{line} {name}"));
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines, each several named steps waiting to be split:\n{}",
        long.join("\n")
    );
}

#[test]
fn test_items_are_left_out_and_the_rest_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.rs");
    let text = "#[cfg(test)]\nmod tests;\n\nfn kept() {}\n\n#[cfg(test)]\nmod t {\n    fn gone() {}\n}\nfn also_kept() {}\n";
    std::fs::write(&path, text).unwrap();
    let code = production_code(&path);
    assert!(
        code.contains("fn kept") && code.contains("fn also_kept"),
        "{code}"
    );
    assert!(
        !code.contains("gone") && !code.contains("mod tests"),
        "{code}"
    );
}

#[test]
fn the_length_check_sees_a_long_function() {
    let body = "    let x = 1;\n".repeat(120);
    let text = format!("fn short() {{}}\n\npub async fn long() {{\n{body}}}\n");
    let found = long_functions(&text, MAX_FN_LINES);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].0, found[0].2.as_str()), (122, "long"));
}
