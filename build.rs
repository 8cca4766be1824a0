//! Build script of the `evring` crate: only the durability negative controls.
//!
//! `EVRING_DURABILITY_MUTANT=<rule>` at build time compiles the journal with one durability
//! rule deliberately broken (`--cfg evring_mutant="<rule>"`), so `scripts/durability-mutants.sh`
//! can show that the test suite catches each break. A server built that way refuses to start.
//! Unset (always, outside that script), this does nothing.

fn main() {
    println!("cargo:rerun-if-env-changed=EVRING_DURABILITY_MUTANT");
    if let Ok(rule) = std::env::var("EVRING_DURABILITY_MUTANT") {
        if !rule.is_empty() {
            println!("cargo:rustc-cfg=evring_mutant=\"{rule}\"");
            println!("cargo:rustc-env=EVRING_BUILT_WITH_MUTANT={rule}");
            println!(
                "cargo:warning=evring built with the durability rule `{rule}` broken on purpose \
                 (EVRING_DURABILITY_MUTANT): for the negative controls only"
            );
        }
    }
}
