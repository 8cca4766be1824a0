//! Walking a program's `--help`: every subcommand's help must show an example, and every
//! argument must have a line of help. Shared by tests/cli.rs (evring, evringd) and
//! tools/tests/help.rs (evring-inspect).

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Runs `bin path… --help` and returns its standard output.
fn help_text(bin: &Path, path: &[String]) -> String {
    let out = Command::new(bin)
        .args(path)
        .arg("--help")
        .env_remove("EVRING_ADDR")
        .env_remove("EVRING_TOKEN")
        .output()
        .expect("run --help");
    assert!(
        out.status.success(),
        "{} {path:?} --help: {out:?}",
        bin.display()
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The lines of section `title` ("Options:", "Arguments:", "Commands:"): up to the next line
/// that is not indented.
fn section<'a>(text: &'a str, title: &str) -> Vec<&'a str> {
    let mut lines = text.lines().skip_while(|l| *l != title);
    if lines.next().is_none() {
        return Vec::new();
    }
    lines
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .collect()
}

/// Each entry of an Arguments or Options section: its spec (`--from <FROM>`) and its help
/// text, without clap's `[default: …]`, `[env: …]` and possible-value notes.
fn entries(lines: &[&str]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in lines {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let starts_entry = indent <= 6
            && (trimmed.starts_with('-') || trimmed.starts_with('<') || trimmed.starts_with('['));
        if starts_entry {
            let (spec, help) = match trimmed.find("  ") {
                Some(at) => (&trimmed[..at], trimmed[at..].trim()),
                None => (trimmed, ""),
            };
            out.push((spec.to_string(), help.to_string()));
        } else if let Some(last) = out.last_mut() {
            last.1.push(' ');
            last.1.push_str(trimmed);
        }
    }
    for (_, help) in &mut out {
        let mut text = help.clone();
        for note in ["[default: ", "[env: ", "[possible values: ", "[aliases: "] {
            while let Some(at) = text.find(note) {
                let end = text[at..].find(']').map_or(text.len(), |e| at + e + 1);
                text.replace_range(at..end, "");
            }
        }
        // A value enum's list ("Possible values: - stream: …") is not the argument's help.
        if let Some(at) = text.find("Possible values:") {
            text.truncate(at);
        }
        *help = text.trim().to_string();
    }
    out
}

/// Walks `bin`'s help and every subcommand's (nested ones too). Returns what is wrong (an
/// argument without help, a help without an example naming the command) and the commands
/// checked.
pub fn help_problems(bin: &Path) -> (Vec<String>, Vec<String>) {
    let name = bin.file_name().unwrap().to_string_lossy().into_owned();
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = todo.pop() {
        let text = help_text(bin, &path);
        let command = std::iter::once(name.clone())
            .chain(path.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        checked.push(command.clone());
        for title in ["Arguments:", "Options:"] {
            for (spec, help) in entries(&section(&text, title)) {
                if help.is_empty() {
                    problems.push(format!("`{command} --help`: {spec} has no help text"));
                }
            }
        }
        let examples: Vec<&str> = text
            .lines()
            .skip_while(|l| !(l.starts_with("Example") && l.trim_end().ends_with(':')))
            .skip(1)
            .collect();
        if !examples.iter().any(|l| l.contains(&command)) {
            problems.push(format!(
                "`{command} --help` shows no example (an \"Examples:\" section with a line that \
                 runs `{command}`)"
            ));
        }
        for line in section(&text, "Commands:") {
            let Some(sub) = line.split_whitespace().next() else {
                continue;
            };
            if sub != "help" {
                let mut next = path.clone();
                next.push(sub.to_string());
                todo.push(next);
            }
        }
    }
    (problems, checked)
}

/// The manual pages a roff text refers to (`evring-append(1)` → `evring-append`).
pub fn man_references(roff: &str) -> Vec<String> {
    let text = roff.replace("\\-", "-");
    let mut refs = Vec::new();
    for (at, _) in text.match_indices("(1)") {
        let name: String = text[..at]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if !name.is_empty() {
            refs.push(name);
        }
    }
    refs
}
