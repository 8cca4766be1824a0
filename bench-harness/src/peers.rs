//! The servers a comparison runs against, started by the harness on loopback in directories
//! under `--dir` (on the disk being measured), and stopped by PID when dropped — also when a
//! run fails half-way.
//!
//! - Redis (`redis-server`): `appendonly yes` + `appendfsync always` (every write command is
//!   in the AOF and fsynced before the reply), or persistence off (`appendonly no`, no RDB
//!   saves) as the in-memory reference line.
//! - PostgreSQL (`initdb` + `postgres` from `/usr/lib/postgresql/*/bin`): `fsync = on`,
//!   `synchronous_commit = on` (a COMMIT returns after its WAL is flushed), trust
//!   authentication on 127.0.0.1. As root, it runs as the `postgres` user (PostgreSQL refuses
//!   to run as root).
//!
//! `scripts/install-peers.sh` installs both from apt when they are missing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::codecs::{Codec, Decoded, PgCodec};

/// A server process started for a comparison.
pub struct Peer {
    pub addr: String,
    child: Child,
    /// Removed when the peer stops (None: kept, e.g. a PostgreSQL cluster used again).
    dir: Option<PathBuf>,
    /// The signal that stops it cleanly.
    stop_signal: libc::c_int,
}

impl Peer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid has no memory effects.
        unsafe {
            libc::kill(self.child.id() as i32, self.stop_signal);
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn wait_listening(child: &mut Child, addr: &str, what: &str, log: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            bail!("{what} exited during start-up ({status}): {}", tail.trim());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("{what} did not listen on {addr} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn missing(what: &str) -> anyhow::Error {
    anyhow!("{what} is not installed: run scripts/install-peers.sh (apt-get install redis-server postgresql)")
}

/// Starts `redis-server` with the AOF fsynced on every write (`persist`) or no persistence.
pub fn redis(base: &Path, persist: bool) -> anyhow::Result<Peer> {
    let exe = which("redis-server").ok_or_else(|| missing("redis-server"))?;
    std::fs::create_dir_all(base)?;
    // redis-server changes into --dir before it opens --logfile: absolute paths only.
    let base = &std::fs::canonicalize(base)?;
    let dir = base.join(format!("redis-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let log = dir.join("redis.log");
    let mut cmd = Command::new(exe);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--protected-mode", "no", "--daemonize", "no", "--save", ""])
        .arg("--dir")
        .arg(&dir)
        .arg("--logfile")
        .arg(&log);
    if persist {
        cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
    } else {
        cmd.args(["--appendonly", "no"]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start redis-server")?;
    let addr = format!("127.0.0.1:{port}");
    let peer_dir = dir.clone();
    if let Err(e) = wait_listening(&mut child, &addr, "redis-server", &log) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(Peer {
        addr,
        child,
        dir: Some(peer_dir),
        stop_signal: libc::SIGTERM,
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn pg_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| missing("PostgreSQL"))?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| missing("PostgreSQL"))
}

/// The uid/gid to run PostgreSQL as: ours, or the `postgres` user's when we are root.
fn pg_user() -> anyhow::Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam with a valid C string; the result is read at once, before any other
    // call that could reuse its static buffer.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("running as root needs the `postgres` user (created by the postgresql package)");
    }
    // SAFETY: `pw` is non-null and points to a valid passwd struct (see above).
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
}

fn chown_tree(path: &Path, user: Option<(u32, u32)>) -> anyhow::Result<()> {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

/// A PostgreSQL cluster initialised for a comparison (`initdb` once); each round starts the
/// server, runs, and stops it, so its background work (checkpoints, autovacuum) never runs
/// during another target's round. The directory is removed when the cluster is dropped.
pub struct PgCluster {
    dir: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    user: Option<(u32, u32)>,
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Initialises a cluster in a fresh directory under `base`.
pub fn postgres_init(base: &Path) -> anyhow::Result<PgCluster> {
    let bin = pg_bin()?;
    let user = pg_user()?;
    std::fs::create_dir_all(base)?;
    let base = &std::fs::canonicalize(base)?;
    let dir = base.join(format!("postgres-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    chown_tree(&dir, user)?;
    let data = dir.join("data");
    let log = dir.join("initdb.log");
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-instructions",
        ])
        .stdout(std::fs::File::create(&log)?)
        .stderr(Stdio::inherit())
        .current_dir(&dir);
    as_user(&mut initdb, user);
    let status = initdb.status().context("run initdb")?;
    let cluster = PgCluster {
        dir,
        data,
        bin,
        user,
    };
    if !status.success() {
        bail!("initdb failed ({status}); see above");
    }
    Ok(cluster)
}

impl PgCluster {
    /// Starts `postgres` on a free port and (re)creates the events table.
    pub fn start(&self) -> anyhow::Result<Peer> {
        let port = free_port()?;
        let log = self.dir.join("postgres.log");
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
                "-c",
                "full_page_writes=on",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=256MB",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .current_dir(&self.dir);
        as_user(&mut cmd, self.user);
        let mut child = cmd.spawn().context("start postgres")?;
        let addr = format!("127.0.0.1:{port}");
        if let Err(e) = wait_listening(&mut child, &addr, "postgres", &log) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        let peer = Peer {
            addr,
            child,
            dir: None,
            // SIGINT: "fast shutdown" (roll back open transactions, checkpoint, exit).
            stop_signal: libc::SIGINT,
        };
        pg_exec(&peer.addr, crate::codecs::PG_SCHEMA)?;
        Ok(peer)
    }
}

/// Runs one simple query on a fresh connection and waits for it to complete.
pub fn pg_exec(addr: &str, sql: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut s = loop {
        // The postmaster listens before it accepts logins ("the database system is starting
        // up"); retry for a while.
        match pg_connect(addr) {
            Ok(s) => break s,
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    };
    let mut out = Vec::new();
    s.1.encode_sql(&mut out, sql);
    s.0.write_all(&out)?;
    loop {
        match read_pg(&mut s)? {
            Decoded::Done { error: Some(e), .. } => bail!("PostgreSQL: {e}"),
            Decoded::Done { .. } => return Ok(()),
            _ => {}
        }
    }
}

type PgConn = (TcpStream, PgCodec, Vec<u8>);

fn pg_connect(addr: &str) -> anyhow::Result<PgConn> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut codec = PgCodec::default();
    let mut out = Vec::new();
    codec.handshake(&mut out);
    s.write_all(&out)?;
    let mut conn = (s, codec, Vec::new());
    loop {
        if let Decoded::Ready = read_pg(&mut conn)? {
            return Ok(conn);
        }
    }
}

fn read_pg(conn: &mut PgConn) -> anyhow::Result<Decoded> {
    loop {
        if let Some((used, d)) = conn.1.decode(&conn.2)? {
            conn.2.drain(..used);
            return Ok(d);
        }
        let mut chunk = [0u8; 8192];
        let n = conn.0.read(&mut chunk)?;
        if n == 0 {
            bail!("PostgreSQL closed the connection");
        }
        conn.2.extend_from_slice(&chunk[..n]);
    }
}
