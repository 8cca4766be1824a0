//! `evring-inspect`'s help and manual page: every subcommand shows an example, every argument
//! has help, and the manual page names no page that does not exist.

#[path = "../../tests/common/help.rs"]
mod help;

use std::path::Path;
use std::process::Command;

#[test]
fn every_subcommand_has_an_example_and_every_argument_has_help() {
    let (problems, checked) = help::help_problems(Path::new(env!("CARGO_BIN_EXE_evring-inspect")));
    assert!(
        checked.len() >= 7,
        "the top level and its six subcommands: {checked:?}"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_manual_page_describes_each_subcommand_and_names_only_existing_pages() {
    let out = Command::new(env!("CARGO_BIN_EXE_evring-inspect"))
        .arg("--print-man")
        .output()
        .unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH evring-inspect 1"), "{page}");
    for sub in ["list", "dump", "verify", "stats", "kv", "backup"] {
        assert!(
            page.contains(&format!(".SS \"evring-inspect {sub}\"")),
            "evring-inspect(1) describes {sub}"
        );
    }
    for name in help::man_references(&page) {
        assert!(
            ["evringd", "evring", "evring-inspect"].contains(&name.as_str()),
            "evring-inspect(1) refers to {name}(1), which does not exist"
        );
    }
}
