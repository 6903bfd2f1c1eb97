//! The shape of the crate: every top-level module ("room") sits on a layer and may use only
//! rooms on lower layers, so data flows one way (bytes → envelope → changes → plan → patches →
//! outcome), there is no circle, and no arrow goes up. docs/architecture.md draws the same
//! table. A new module must be placed here on purpose.
//!
//! `cargo test --test offline architecture -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A room may use the rooms of the layers below its own, never its own layer's
/// (the doors do not call each other) nor those above.
const LAYERS: &[(&str, &[&str])] = &[
    ("text", &["text"]),
    (
        "leaves",
        &["log_budget", "health", "metrics", "alloc", "aws", "dedupe"],
    ),
    ("decoding", &["event", "sns"]),
    ("the index", &["index"]),
    ("the cluster", &["cluster"]),
    ("the use case", &["resync"]),
    (
        "doors and tools",
        &["http", "queue", "sweep", "explain", "sample"],
    ),
    ("flags", &["config"]),
    ("wiring", &["app"]),
];

fn layer_of(room: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, rooms)| rooms.contains(&room))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/` (`src/index/filing.rs` → `[index, filing]`,
/// `src/index/mod.rs` → `[index]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The rooms a line of code names: `crate::room` and `crate::{a, b::c}`; comments are skipped.
/// Rooms reach each other by `crate::` paths; `super::` stays inside a room.
fn rooms_named(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or_default();
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0;
            let mut start = true;
            for (j, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_alphanumeric() || c == '_') => {
                        let ident: String = group[j..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        found.push(ident);
                        start = false;
                    }
                    c if !c.is_whitespace() => start = false,
                    _ => {}
                }
            }
        } else {
            let ident: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push(ident);
        }
        rest = after;
    }
    found
}

/// room → room → how many lines name it.
fn graph() -> BTreeMap<String, BTreeMap<String, usize>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let module = module_path(rel);
        let room = module[0].clone();
        if room == "lib" || room == "main" || room == "bin" {
            continue;
        }
        let arrows = graph.entry(room.clone()).or_default();
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            for to in rooms_named(line) {
                if to != room && !to.is_empty() {
                    *arrows.entry(to).or_default() += 1;
                }
            }
        }
    }
    graph
}

#[test]
fn every_arrow_goes_down() {
    let graph = graph();
    let mut wrong = Vec::new();
    println!("rooms, bottom to top:");
    for (i, (name, rooms)) in LAYERS.iter().enumerate() {
        println!("  {i} {name}: {}", rooms.join(", "));
    }
    println!("arrows (lines naming the other room):");
    for (from, arrows) in &graph {
        let Some(from_layer) = layer_of(from) else {
            wrong.push(format!(
                "{from}: a room on no layer (place it in LAYERS and docs/architecture.md)"
            ));
            continue;
        };
        for (to, n) in arrows {
            println!("  {from} -> {to} ({n})");
            match layer_of(to) {
                None => wrong.push(format!("{from} -> {to}: {to} is on no layer")),
                Some(l) if l >= from_layer => wrong.push(format!(
                    "{from} ({}) -> {to} ({}): an arrow {}",
                    LAYERS[from_layer].0,
                    LAYERS[l].0,
                    if l == from_layer { "sideways" } else { "up" }
                )),
                Some(_) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let placed: BTreeSet<&str> = LAYERS.iter().flat_map(|(_, r)| r.iter().copied()).collect();
    let present: BTreeSet<&str> = graph.keys().map(String::as_str).collect();
    let gone: Vec<_> = placed.difference(&present).collect();
    assert!(gone.is_empty(), "rooms in LAYERS but not in src/: {gone:?}");
}

#[test]
fn the_reader_finds_arrows_in_every_form() {
    assert_eq!(rooms_named("use crate::index::{Index, Target};"), ["index"]);
    assert_eq!(
        rooms_named("use crate::{event::Change, index::{Index, Lookup}};"),
        ["event", "index"]
    );
    assert_eq!(
        rooms_named("let x = crate::text::truncate(crate::sns::X);"),
        ["text", "sns"]
    );
    assert!(rooms_named("use super::patch::Trigger;").is_empty());
    assert!(rooms_named("// see crate::http").is_empty());
}
