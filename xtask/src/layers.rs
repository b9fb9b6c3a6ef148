//! The architecture, enforced: every module uses only modules of its own layer or below, the
//! module graph has no cycle, `main.rs` only parses and dispatches, no source file grows past
//! ~600 lines, and processes are started only through the context (xshell) and the transport
//! (duct), never `std::process::Command` directly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → layer. A module may use modules of a lower or equal layer, never higher.
const LAYERS: &[(&str, u8)] = &[
    ("core", 0),
    ("ctx", 1),
    ("sandbox_state", 1),
    ("config", 2),
    ("transport", 3),
    ("compose", 2),
    ("registry", 3),
    ("plan", 4),
    ("server", 5),
    ("ops", 6),
    ("verbs", 7),
    ("main", 8),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `ops/snapshot.rs` → `ops::snapshot`; `ops/mod.rs` → `ops`; `main.rs` → `main`.
fn module_of(p: &Path) -> String {
    let rel = p.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The code outside `#[cfg(test)] mod tests`.
fn code(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

fn idents_after<'t>(text: &'t str, prefix: &str) -> Vec<Vec<&'t str>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let path: Vec<&str> = rest
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .next()
            .unwrap_or("")
            .split("::")
            .filter(|s| !s.is_empty())
            .collect();
        out.push(path);
    }
    out
}

/// module → the modules it uses (`crate::`, `super::`, and its declared child modules).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut all = Vec::new();
    files(&src(), &mut all);
    let modules: BTreeSet<String> = all.iter().map(|p| module_of(p)).collect();
    let resolve = |path: &[&str]| -> Option<String> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|m| modules.contains(m))
    };
    let mut g = BTreeMap::new();
    for p in &all {
        let m = module_of(p);
        if m == "layers" {
            continue;
        }
        let text = std::fs::read_to_string(p).unwrap();
        let text = code(&text);
        let mut deps = BTreeSet::new();
        for path in idents_after(text, "crate::") {
            if let Some(d) = resolve(&path) {
                deps.insert(d);
            }
        }
        let parent: Vec<&str> = if m == "main" {
            vec![]
        } else {
            let mut v: Vec<&str> = m.split("::").collect();
            v.pop();
            v
        };
        for path in idents_after(text, "super::") {
            let mut full = parent.clone();
            full.extend(path.iter().copied());
            if let Some(d) = resolve(&full) {
                deps.insert(d);
            }
        }
        for child in idents_after(text, "mod ") {
            let _ = child; // declarations are not uses
        }
        for l in text.lines() {
            let l = l.trim_start();
            if let Some(rest) = l.strip_prefix("use ") {
                let first = rest.split("::").next().unwrap_or("");
                let child = if m == "main" {
                    first.to_string()
                } else {
                    format!("{m}::{first}")
                };
                if modules.contains(&child) {
                    deps.insert(child);
                }
            }
        }
        deps.remove(&m);
        g.insert(m, deps);
    }
    g
}

fn layer(m: &str) -> u8 {
    let top = m.split("::").next().unwrap();
    LAYERS
        .iter()
        .find(|(n, _)| *n == top)
        .unwrap_or_else(|| panic!("module `{m}` has no layer in layers.rs"))
        .1
}

#[test]
fn no_module_uses_a_higher_layer() {
    let mut bad = Vec::new();
    for (m, deps) in graph() {
        for d in deps {
            if layer(&d) > layer(&m) {
                bad.push(format!(
                    "{m} (layer {}) uses {d} (layer {})",
                    layer(&m),
                    layer(&d)
                ));
            }
        }
    }
    assert!(bad.is_empty(), "upward dependencies:\n{}", bad.join("\n"));
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = graph();
    // Depth-first search with colours; report the first cycle found.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            match state.get(d.as_str()).copied().unwrap_or(0) {
                1 => {
                    let i = stack.iter().position(|s| s == d).unwrap();
                    let mut c = stack[i..].to_vec();
                    c.push(d.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(d, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(m, &g, &mut state, &mut Vec::new()) {
                panic!("module cycle: {}", c.join(" → "));
            }
        }
    }
}

#[test]
fn main_dispatches_and_files_stay_small() {
    let mut all = Vec::new();
    files(&src(), &mut all);
    for p in all {
        let text = std::fs::read_to_string(&p).unwrap();
        let n = text.lines().count();
        let limit = if p.ends_with("main.rs") { 120 } else { 650 };
        assert!(n <= limit, "{} has {n} lines (limit {limit})", p.display());
        if !p.ends_with("layers.rs") {
            assert!(
                !text.contains(concat!("Command", "::new")),
                "{} starts a process directly: use xshell (ctx) or duct (transport)",
                p.display()
            );
        }
    }
}
