//! What the command-line programs (evringd, evring, evring-inspect) share.

/// `--print-man` as the only argument: prints the program's manual page (roff, rendered from
/// its clap definition) and returns `true`; the caller then exits.
pub fn print_man_if_asked<C: clap::CommandFactory>() -> bool {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("--print-man") || args.next().is_some() {
        return false;
    }
    let man = clap_mangen::Man::new(C::command());
    let mut out = std::io::stdout().lock();
    if let Err(e) = man.render(&mut out) {
        eprintln!("cannot render the manual page: {e}");
        std::process::exit(1);
    }
    true
}
