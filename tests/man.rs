//! Manual pages: `--print-man` renders each program's help as roff.

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
