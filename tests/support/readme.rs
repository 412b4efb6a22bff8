//! Reading README.md from the tests: sections, fenced code blocks, shell commands in them.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};

/// The workspace root (the directory with Cargo.lock), from any package's tests.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .expect("a Cargo.lock above CARGO_MANIFEST_DIR")
        .to_path_buf()
}

pub fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap()
}

/// The text under `## <heading>` (up to the next `## `), without the heading line.
pub fn section(markdown: &str, heading: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in markdown.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            inside = h.trim() == heading;
            continue;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(!out.is_empty(), "README.md has no section `## {heading}`");
    out
}

/// A fenced code block: its info string (`sh`, `yaml`, ...), its text and its section heading.
#[derive(Debug, Clone)]
pub struct Block {
    pub lang: String,
    pub text: String,
    pub section: String,
}

pub fn code_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut section = String::new();
    let mut current: Option<Block> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            None => {
                if let Some(h) = line.strip_prefix("## ") {
                    section = h.trim().to_owned();
                } else if let Some(info) = line.trim_start().strip_prefix("```") {
                    current = Some(Block {
                        lang: info.trim().to_owned(),
                        text: String::new(),
                        section: section.clone(),
                    });
                }
            }
            Some(block) => {
                if line.trim_start().starts_with("```") {
                    blocks.push(current.take().unwrap());
                } else {
                    block.text.push_str(line);
                    block.text.push('\n');
                }
            }
        }
    }
    assert!(current.is_none(), "README.md has an unclosed code block");
    blocks
}

/// The commands of a shell block: comments dropped, `\` continuations joined, words split the way
/// a POSIX shell would for the simple quoting READMEs use ('...' and "...").
pub fn commands(block: &Block) -> Vec<Vec<String>> {
    let mut joined = Vec::new();
    let mut pending = String::new();
    for line in block.text.lines() {
        let line = line.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                joined.push(std::mem::take(&mut pending));
            }
        }
    }
    assert!(pending.is_empty(), "a command ends with `\\`: {pending}");
    joined.iter().map(|c| words(c)).collect()
}

fn words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for ch in command.chars() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(ch);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(quote.is_none(), "unbalanced quotes in `{command}`");
    if in_word {
        words.push(word);
    }
    words
}

/// Words a README command passes after `--` to the program `cargo run` builds.
pub fn cargo_run_args(command: &[String]) -> Option<Vec<String>> {
    if command.first().map(String::as_str) != Some("cargo")
        || command.get(1).map(String::as_str) != Some("run")
    {
        return None;
    }
    let dashes = command.iter().position(|w| w == "--")?;
    Some(command[dashes + 1..].to_vec())
}

/// `name{a,b}` (or a bare `name`) metric references in backticks: (name, label names).
pub fn metric_references(text: &str, prefix: &str) -> Vec<(String, Option<Vec<String>>)> {
    let mut out = Vec::new();
    for (i, chunk) in text.split('`').enumerate() {
        // Odd chunks are inside backticks.
        if i % 2 == 0 || !chunk.starts_with(prefix) {
            continue;
        }
        let (name, labels) = match chunk.split_once('{') {
            Some((name, rest)) => {
                let labels = rest.trim_end_matches('}');
                (
                    name.to_owned(),
                    Some(labels.split(',').map(|l| l.trim().to_owned()).collect()),
                )
            }
            None => (chunk.to_owned(), None),
        };
        if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push((name, labels));
        }
    }
    out
}

/// The text outside fenced code blocks.
pub fn prose(text: &str) -> String {
    let mut fenced = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The spans in backticks outside code blocks, whitespace (line breaks) collapsed to single
/// spaces.
pub fn backticked(text: &str) -> Vec<String> {
    prose(text)
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, span)| span.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The paragraphs of a text (separated by blank lines), each joined into one line.
pub fn paragraphs(text: &str) -> Vec<String> {
    text.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect()
}

/// The body rows of the first Markdown table in a text (header and `|---|` line skipped), each
/// a list of trimmed cells.
pub fn table_rows(text: &str) -> Vec<Vec<String>> {
    let text = prose(text);
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with('|'))
        .take_while(|l| l.trim_start().starts_with('|'))
        .collect();
    assert!(lines.len() > 2, "no Markdown table in:\n{text}");
    assert!(
        lines[1].contains("---"),
        "the table's second line is not a separator: {}",
        lines[1]
    );
    lines[2..]
        .iter()
        .map(|line| {
            let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
            inner.split('|').map(|c| c.trim().to_owned()).collect()
        })
        .collect()
}
