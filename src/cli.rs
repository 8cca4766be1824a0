//! What the command-line programs (evringd, evring, evring-inspect) share.

use std::io::Write;

use clap_mangen::roff::{bold, italic, roman, Inline, Roff};

/// The programs that have a manual page (section 1), for SEE ALSO.
pub const PROGRAMS: &[&str] = &["evringd", "evring", "evring-inspect"];

/// `--print-man` as the only argument: prints the program's manual page (roff, rendered from
/// its clap definition by [`render_man`]) and returns `true`; the caller then exits.
pub fn print_man_if_asked<C: clap::CommandFactory>() -> bool {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("--print-man") || args.next().is_some() {
        return false;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = render_man(C::command(), &mut out) {
        eprintln!("cannot render the manual page: {e}");
        std::process::exit(1);
    }
    true
}

/// Writes the manual page of a program: NAME, SYNOPSIS, DESCRIPTION and OPTIONS as clap
/// defines them, then for a program with subcommands a COMMANDS section giving each one
/// (nested ones too) its usage, arguments and examples, then the program's EXAMPLES and SEE
/// ALSO. One page per program: it names no page but the three programs' own.
pub fn render_man(cmd: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let name = cmd.get_name().to_string();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    let mut roff = Roff::new();
    if cmd.has_subcommands() {
        roff.control("SH", ["COMMANDS"]);
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            subcommand(&mut roff, &name, sub);
        }
    }
    if let Some(text) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        roff.control("SH", ["EXAMPLES"]);
        preformatted(&mut roff, &text.to_string());
    }
    roff.control("SH", ["SEE ALSO"]);
    let others: Vec<String> = PROGRAMS
        .iter()
        .filter(|p| **p != name)
        .map(|p| format!("{p}(1)"))
        .collect();
    roff.text([roman(others.join(", "))]);
    roff.to_writer(out)?;
    if cmd.get_version().is_some() {
        man.render_version_section(out)?;
    }
    Ok(())
}

/// Lines kept as they are (no filling), without a leading "Examples:" heading.
fn preformatted(roff: &mut Roff, text: &str) {
    roff.control("nf", []);
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || (trimmed.starts_with("Example") && trimmed.ends_with(':')) {
            continue;
        }
        roff.text([roman(trimmed)]);
    }
    roff.control("fi", []);
}

/// One subcommand in COMMANDS: heading, description, usage, arguments, examples; then its
/// own subcommands.
fn subcommand(roff: &mut Roff, parent: &str, cmd: &clap::Command) {
    let path = format!("{parent} {}", cmd.get_name());
    roff.control("SS", [path.as_str()]);
    if let Some(about) = cmd.get_long_about().or_else(|| cmd.get_about()) {
        for para in about.to_string().split("\n\n") {
            roff.text([roman(para.replace('\n', " "))]);
            roff.control("PP", []);
        }
    }
    let usage = cmd
        .clone()
        .bin_name(&path)
        .render_usage()
        .to_string()
        .trim_start_matches("Usage:")
        .trim()
        .to_string();
    roff.text([italic("Usage: "), bold(usage)]);
    for arg in cmd.get_arguments() {
        if arg.is_hide_set()
            || arg.is_global_set()
            || ["help", "version"].contains(&arg.get_id().as_str())
        {
            continue;
        }
        roff.control("TP", []);
        roff.text([bold(arg_spec(arg))]);
        let mut text: Vec<Inline> = Vec::new();
        if let Some(help) = arg.get_long_help().or_else(|| arg.get_help()) {
            text.push(roman(help.to_string().replace('\n', " ")));
        }
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| match v.get_help() {
                Some(h) => format!("{}: {h}", v.get_name()),
                None => v.get_name().to_string(),
            })
            .collect();
        if !values.is_empty() {
            text.push(roman(format!(". One of: {}.", values.join("; "))));
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .filter(|v| !v.is_empty())
            .collect();
        if !defaults.is_empty() && arg.get_num_args().is_some_and(|n| n.takes_values()) {
            text.push(roman(format!(" [default: {}]", defaults.join(", "))));
        }
        roff.text(text);
    }
    if let Some(text) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        roff.control("PP", []);
        roff.text([italic("Examples:")]);
        preformatted(roff, &text.to_string());
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        subcommand(roff, &path, sub);
    }
}

/// How an argument is written: `<STREAM>`, `[NAME]`, `--from <FROM>`, `-h, --help`.
fn arg_spec(arg: &clap::Arg) -> String {
    let value = arg
        .get_value_names()
        .and_then(|v| v.first().map(|n| n.to_string()))
        .unwrap_or_else(|| arg.get_id().as_str().to_ascii_uppercase());
    if arg.is_positional() {
        return if arg.is_required_set() {
            format!("<{value}>")
        } else {
            format!("[{value}]")
        };
    }
    let mut spec = match (arg.get_short(), arg.get_long()) {
        (Some(s), Some(l)) => format!("-{s}, --{l}"),
        (Some(s), None) => format!("-{s}"),
        (None, Some(l)) => format!("--{l}"),
        (None, None) => arg.get_id().to_string(),
    };
    if arg.get_num_args().is_some_and(|n| n.takes_values()) {
        spec.push_str(&format!(" <{value}>"));
    }
    spec
}
