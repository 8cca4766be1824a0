//! Manual pages: `--print-man` renders each program's help as roff, one page per program
//! with its subcommands described in it, naming no page that does not exist.

#[path = "common/help.rs"]
mod help;

use std::process::Command;

fn man(bin: &str) -> String {
    let out = Command::new(bin).arg("--print-man").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn evringd_and_evring_render_manual_pages() {
    let d = man(env!("CARGO_BIN_EXE_evringd"));
    assert!(d.contains(".TH evringd 1"), "{d}");
    assert!(d.contains("\\-\\-data\\-dir") && d.contains("\\-\\-print\\-config"));
    let c = man(env!("CARGO_BIN_EXE_evring"));
    assert!(c.contains(".TH evring 1"));
    for sub in ["append", "read", "subscribe", "aggregate", "stats"] {
        assert!(c.contains(sub), "evring(1) lists {sub}");
    }
}

/// The pages scripts/man.sh writes (and the Debian package installs).
fn pages_written() -> Vec<String> {
    let script = include_str!("../scripts/man.sh");
    let line = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("for bin in "))
        .expect("scripts/man.sh loops over the programs");
    line.trim_end_matches("; do")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_pages_describe_every_subcommand_and_name_only_pages_that_exist() {
    let pages = pages_written();
    assert_eq!(pages, ["evringd", "evring", "evring-inspect"]);
    for bin in [env!("CARGO_BIN_EXE_evringd"), env!("CARGO_BIN_EXE_evring")] {
        let page = man(bin);
        for name in help::man_references(&page) {
            assert!(
                pages.contains(&name),
                "{bin}'s manual page refers to {name}(1), a page scripts/man.sh does not write"
            );
        }
        assert!(page.contains(".SH EXAMPLES"), "{bin}(1) has examples");
    }
    let c = man(env!("CARGO_BIN_EXE_evring"));
    for sub in [
        "ping",
        "append",
        "read",
        "subscribe",
        "aggregate",
        "info",
        "stats",
        "execute",
        "query",
        "kv",
        "kv set",
        "kv get",
        "kv delete",
        "kv cas",
        "kv list",
    ] {
        let heading = format!(".SS \"evring {sub}\"");
        let at = c
            .find(&heading)
            .unwrap_or_else(|| panic!("evring(1) has no section for `evring {sub}`"));
        let section = &c[at..];
        let end = section[1..].find(".SS").map_or(section.len(), |e| e + 1);
        assert!(
            section[..end].contains(&format!("evring {sub}"))
                && section[..end].contains("Examples"),
            "evring(1)'s section on `evring {sub}` shows an example"
        );
    }
}
