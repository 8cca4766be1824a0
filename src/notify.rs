//! systemd's readiness protocol (`sd_notify`), written directly: one datagram of
//! `KEY=VALUE` lines to the Unix socket named by `$NOTIFY_SOCKET` (a path, or an abstract
//! name when it starts with `@`). Without `$NOTIFY_SOCKET` (not run by systemd with
//! `Type=notify`) every call does nothing.
//!
//! evringd sends `READY=1` only after every partition is recovered and the client port
//! accepts, and `STOPPING=1` when a stop signal arrives, before it drains in-flight frames.

use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `"READY=1\nSTATUS=serving"`) to systemd, if it asked for it.
pub fn notify(state: &str) -> io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let path = path.to_string_lossy().into_owned();
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &path)?;
    }
    Ok(())
}
