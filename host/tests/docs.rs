//! The docs stay true: every fenced `toml` block in README.md and docs/*.md is read by the
//! configuration reader (`li3g_host::config`) as li3g would read it, every named configuration
//! and environment it defines, and every relative link between the docs names a file that
//! exists. A Cargo manifest shown in the docs (a block with `[package]`, `[dependencies]`, ...) is
//! checked as TOML.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

/// README.md and docs/*.md, in name order.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("read docs/")
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    docs.insert(0, root().join("README.md"));
    docs
}

/// The fenced blocks of `text` whose info string is `lang`, with the line each starts on.
fn blocks(text: &str, lang: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut open: Option<(usize, bool, String, String)> = None; // (line, wanted, fence, body)
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.as_mut() {
            None if trimmed.starts_with("```") => {
                let info = trimmed.trim_start_matches('`').trim();
                let fence = trimmed[..trimmed.len() - trimmed.trim_start_matches('`').len()].to_string();
                open = Some((n + 1, info.split_whitespace().next() == Some(lang), fence, String::new()));
            }
            None => {}
            Some((start, wanted, fence, body)) => {
                if trimmed.starts_with(fence.as_str()) && trimmed.trim_start_matches('`').trim().is_empty() {
                    if *wanted {
                        found.push((*start, std::mem::take(body)));
                    }
                    open = None;
                } else {
                    // A block may be indented in a list item; TOML ignores indentation.
                    body.push_str(line.trim_start());
                    body.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "an unclosed fenced block");
    found
}

/// Top-level tables that make a block a Cargo manifest (or a part of one).
const CARGO_KEYS: &[&str] = &["package", "lib", "dependencies", "dev-dependencies", "patch", "workspace"];

#[test]
fn every_toml_block_in_the_docs_is_read_by_the_configuration_reader() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("read a doc");
        let name = doc.strip_prefix(root()).unwrap().display().to_string();
        for (line, block) in blocks(&text, "toml") {
            let at = format!("{name}:{line}");
            let table: toml::Table = match toml::from_str(&block) {
                Ok(table) => table,
                Err(err) => {
                    failures.push(format!("{at}: not TOML: {err}"));
                    continue;
                }
            };
            checked += 1;
            if CARGO_KEYS.iter().any(|key| table.contains_key(*key)) {
                continue; // a Cargo manifest (or a part of one), not li3g's configuration
            }
            let path = Path::new(&at);
            for (config, value) in &table {
                let mut environments = vec![None];
                if let Some(envs) = value.get("environments").and_then(toml::Value::as_table) {
                    environments.extend(envs.keys().map(|env| Some(env.as_str())));
                }
                for env in environments {
                    if let Err(err) = li3g_host::config::parse(path, &block, config, env) {
                        // A file the example names where it would be deployed (a CA under
                        // /etc/li3g) is not on this machine: every key before that check was read.
                        let text = err.to_string();
                        if text.contains("/etc/li3g/") && text.contains("No such file or directory") {
                            continue;
                        }
                        failures.push(format!("{at}: configuration {config} (environment {env:?}): {err}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 3, "only {checked} toml blocks found: the docs moved?");
}

#[test]
fn every_relative_link_in_the_docs_names_a_file() {
    let mut missing = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("read a doc");
        let dir = doc.parent().unwrap();
        for (n, line) in text.lines().enumerate() {
            for part in line.split("](").skip(1) {
                let Some(target) = part.split(')').next() else { continue };
                if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                    continue;
                }
                let file = target.split('#').next().unwrap();
                if !dir.join(file).exists() {
                    missing.push(format!("{}:{}: {target}", doc.display(), n + 1));
                }
            }
        }
    }
    assert!(missing.is_empty(), "links to missing files:\n{}", missing.join("\n"));
}
