//! The module map is the import graph.
//!
//! `src/lib.rs` declares the layers, top to bottom, as `// Layer <Name>: ...` comments above the
//! `pub mod` lines they hold, and the modules kept apart from them (`// Apart <Name>: ...`), which
//! may use the lowest layer only. These tests read every `crate::` path in the code of `src/`
//! (comments and `#[cfg(test)]` modules aside: a test may build its fixtures from any layer) and
//! fail on a path that points up the map, on a cycle between top-level modules, on a module the
//! map does not place, and on tonic outside the modules that speak gRPC.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges that run against the map or close a cycle, each waiting for the move that removes it.
/// The test fails on such an edge missing from here, and on an entry that no longer applies, so
/// the list only shrinks.
const ALLOWED: &[(&str, &str)] = &[];

/// The only modules that may name tonic: the Flight service, the server that runs it, and the
/// client that calls it.
const SPEAK_GRPC: &[&str] = &["flight", "server", "client"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The layers of `lib.rs`, top first, and the modules kept apart.
#[derive(Debug, Default)]
struct Map {
    layers: Vec<(String, Vec<String>)>,
    apart: Vec<String>,
}

impl Map {
    fn parse(lib: &str) -> Map {
        let mut map = Map::default();
        let mut in_apart = false;
        for line in lib.lines() {
            if let Some(rest) = line.strip_prefix("// Layer ") {
                let name = rest.split(':').next().unwrap_or(rest).trim().to_string();
                map.layers.push((name, Vec::new()));
                in_apart = false;
            } else if line.starts_with("// Apart ") {
                in_apart = true;
            } else if let Some(rest) = line.strip_prefix("pub mod ") {
                let module = rest.trim_end_matches(';').trim().to_string();
                match (in_apart, map.layers.last_mut()) {
                    (true, _) => map.apart.push(module),
                    (false, Some((_, modules))) => modules.push(module),
                    (false, None) => panic!("`pub mod {module}` comes before the first `// Layer`"),
                }
            }
        }
        map
    }

    /// The layer index of `module` (0 is the top), `usize::MAX` for modules kept apart.
    fn level(&self, module: &str) -> Option<usize> {
        if self.apart.iter().any(|m| m == module) {
            return Some(usize::MAX);
        }
        self.layers.iter().position(|(_, modules)| modules.iter().any(|m| m == module))
    }

    fn modules(&self) -> BTreeSet<String> {
        self.layers.iter().flat_map(|(_, m)| m.iter().cloned()).chain(self.apart.iter().cloned()).collect()
    }

    /// Why `from -> to` runs against the map, if it does.
    fn against(&self, from: &str, to: &str) -> Option<String> {
        let (Some(a), Some(b)) = (self.level(from), self.level(to)) else {
            return Some(format!("{from} -> {to}: a module the map does not place"));
        };
        let lowest = self.layers.len() - 1;
        if b == usize::MAX {
            return Some(format!("{from} -> {to}: {to} is kept apart; nothing uses it"));
        }
        if a == usize::MAX {
            return (b != lowest).then(|| format!("{from} -> {to}: {from} may use the lowest layer only"));
        }
        (b < a).then(|| format!("{from} -> {to}: up from {} to {}", self.layers[a].0, self.layers[b].0))
    }
}

/// The code of a file: line comments and `#[cfg(test)]` modules removed (rustfmt puts such a
/// module's closing brace alone at the start of a line).
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" && lines.peek().is_some_and(|next| next.starts_with("mod ")) {
            let header = lines.next().unwrap_or_default();
            if header.trim_end().ends_with('{') {
                for inner in lines.by_ref() {
                    if inner == "}" {
                        break;
                    }
                }
            }
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        // A trailing comment: `//` outside a string (an even number of quotes before it).
        let mut cut = line.len();
        for (i, _) in line.match_indices("//") {
            if line[..i].matches('"').count() % 2 == 0 {
                cut = i;
                break;
            }
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

/// The top-level modules a piece of code names through `crate::`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        items.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            items.push(item);
            out.extend(items.iter().filter_map(|i| first_ident(i.trim())));
        } else if let Some(name) = first_ident(rest) {
            out.insert(name);
        }
    }
    out
}

fn first_ident(text: &str) -> Option<String> {
    let name: String = text.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The top-level module a file belongs to; `None` for the crate root and the binary.
fn top_module(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts = rel.components();
    let first = parts.next()?.as_os_str().to_str()?.to_string();
    if parts.next().is_some() {
        return Some(first);
    }
    let stem = first.trim_end_matches(".rs");
    (!matches!(stem, "lib" | "main")).then(|| stem.to_string())
}

/// Module -> the modules it names, for every file of `src/` except tests kept in files of their own.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src()) {
        let Some(from) = top_module(&file) else { continue };
        let entry = edges.entry(from.clone()).or_default();
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        entry.extend(crate_paths(&code(&text)).into_iter().filter(|to| *to != from));
    }
    edges
}

/// Every cycle's members, as strongly connected components of more than one module.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reach = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.to_string()];
        while let Some(m) = stack.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for module in edges.keys() {
        let from_here = reach(module);
        let component: Vec<String> = edges
            .keys()
            .filter(|other| *other == module || (from_here.contains(*other) && reach(other).contains(module.as_str())))
            .cloned()
            .collect();
        if component.len() > 1 {
            found.insert(component);
        }
    }
    found.into_iter().collect()
}

/// What is wrong with a graph against a map, allowlist aside.
fn findings(map: &Map, edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (from, tos) in edges {
        for to in tos {
            if let Some(why) = map.against(from, to) {
                out.push(why);
            }
        }
    }
    for cycle in cycles(edges) {
        out.push(format!("a cycle through {}", cycle.join(", ")));
    }
    out
}

#[test]
fn the_import_graph_follows_the_module_map() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let map = Map::parse(&lib);
    let edges = graph();
    let mut pruned = edges.clone();
    for (from, to) in ALLOWED {
        let present = pruned.get_mut(*from).is_some_and(|tos| tos.remove(*to));
        assert!(present, "{from} -> {to} is allowed but no longer imported: remove it from ALLOWED");
    }
    let found = findings(&map, &pruned);
    assert!(found.is_empty(), "the imports break the map in src/lib.rs:\n{}", found.join("\n"));
    for (from, to) in ALLOWED {
        let in_cycle = cycles(&edges).iter().any(|c| c.iter().any(|m| m == from) && c.iter().any(|m| m == to));
        assert!(
            map.against(from, to).is_some() || in_cycle,
            "{from} -> {to} follows the map now: remove it from ALLOWED"
        );
    }

    let on_disk: BTreeSet<String> = edges.keys().cloned().collect();
    assert_eq!(map.modules(), on_disk, "the modules of src/ and the map's `pub mod` lines differ");
}

#[test]
fn a_module_that_reaches_up_or_round_is_caught() {
    let map = Map::parse(
        "// Layer Execution: x\npub mod engine;\n// Layer Storage: y\npub mod store;\n\
         // Layer Foundation: z\npub mod error;\n// Apart Clients: w\npub mod client;\n",
    );
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("engine".into()).or_default().insert("store".into());
    edges.entry("store".into()).or_default().insert("error".into());
    edges.entry("client".into()).or_default().insert("error".into());
    assert!(findings(&map, &edges).is_empty());

    // `use crate::engine` in store/: up a layer, and round.
    let hand_made = code("use crate::error::Result;\nuse crate::engine::Engine;\n");
    edges.insert("store".into(), crate_paths(&hand_made));
    let found = findings(&map, &edges);
    assert!(found.iter().any(|f| f.starts_with("store -> engine: up from Storage to Execution")), "{found:?}");
    assert!(found.contains(&"a cycle through engine, store".to_string()), "{found:?}");

    edges.entry("client".into()).or_default().insert("store".into());
    assert!(findings(&map, &edges).iter().any(|f| f.starts_with("client -> store")));
}

#[test]
fn comments_and_test_modules_are_not_edges() {
    let text = "use crate::{a::b, c};\n// crate::d\nlet x = 1; // crate::e\n\
                #[cfg(test)]\nmod tests {\n    use crate::f;\n}\nfn g() { crate::h::i() }\n";
    let names: Vec<String> = crate_paths(&code(text)).into_iter().collect();
    assert_eq!(names, ["a", "c", "h"]);
}

#[test]
fn only_the_modules_that_speak_grpc_name_tonic() {
    let mut found = Vec::new();
    for file in rust_files(&src()) {
        let Some(module) = top_module(&file) else { continue };
        let text = code(&std::fs::read_to_string(&file).unwrap());
        if text.contains("tonic::") && !SPEAK_GRPC.contains(&module.as_str()) {
            found.push(file.strip_prefix(src()).unwrap().display().to_string());
        }
    }
    assert!(found.is_empty(), "tonic outside {SPEAK_GRPC:?}: {found:?}");
}

#[test]
fn the_readme_code_map_names_files_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut missing = Vec::new();
    let mut named = BTreeSet::new();
    for (at, _) in readme.match_indices("`src/") {
        let path: String = readme[at + 1..].chars().take_while(|c| *c != '`').collect();
        if !root.join(&path).exists() {
            missing.push(path.clone());
        }
        named.insert(path);
    }
    assert!(missing.is_empty(), "the README names files that do not exist: {missing:?}");
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let unnamed: Vec<String> = Map::parse(&lib)
        .modules()
        .into_iter()
        .filter(|m| !named.iter().any(|p| p == &format!("src/{m}.rs") || p.starts_with(&format!("src/{m}/"))))
        .collect();
    assert!(unnamed.is_empty(), "modules the README's code map does not name: {unnamed:?}");
}

#[test]
fn statuses_are_made_in_one_place_and_no_error_text_is_matched() {
    const MAKERS: &[&str] = &[
        "new",
        "ok",
        "cancelled",
        "unknown",
        "invalid_argument",
        "deadline_exceeded",
        "not_found",
        "already_exists",
        "permission_denied",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal",
        "unavailable",
        "data_loss",
        "unauthenticated",
        "with_details",
        "with_metadata",
        "from_error",
    ];
    let mut found = Vec::new();
    for file in rust_files(&src()) {
        let rel = file.strip_prefix(src()).unwrap().display().to_string();
        // The client is a gRPC client: its errors are the statuses its calls end with.
        if rel == "flight/status.rs" || rel.starts_with("client/") || rel.ends_with("tests.rs") {
            continue;
        }
        let text = code(&std::fs::read_to_string(&file).unwrap());
        for maker in MAKERS {
            if text.contains(&format!("Status::{maker}(")) {
                found.push(format!("{rel}: Status::{maker}"));
            }
        }
        for matcher in ["message().contains(", "to_string().contains(", "message().starts_with("] {
            if text.contains(matcher) {
                found.push(format!("{rel}: {matcher}"));
            }
        }
    }
    assert!(found.is_empty(), "statuses made, or error text matched, outside flight/status.rs: {found:?}");
}
