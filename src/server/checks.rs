//! What evringd checks and sets up before it serves: io_uring and O_DIRECT available, the
//! data directory's lock, ports free (waiting briefly for a stopped evringd's listener), the
//! listening sockets (SO_REUSEADDR and SO_REUSEPORT), and the open-file limit.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::net::TcpListener;

use crate::error::StartError;

/// Writes and syncs one aligned block with O_DIRECT in the data directory, so a filesystem
/// that refuses direct I/O is reported at start-up in one line instead of as a journal error.
/// `EVRINGD_INJECT_ODIRECT_FAILURE=1` makes the probe fail (for tests: the filesystems at
/// hand all accept O_DIRECT).
pub(super) fn probe_direct_io(data_dir: &std::path::Path) -> Result<(), StartError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(".direct-io-probe");
    let result = (|| -> std::io::Result<()> {
        if std::env::var_os("EVRINGD_INJECT_ODIRECT_FAILURE").is_some() {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)?;
        let layout = std::alloc::Layout::from_size_align(4096, 4096).expect("valid layout");
        // SAFETY: the layout has a non-zero size; the block is freed below.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(std::io::Error::other("out of memory"));
        }
        // SAFETY: `ptr` points to 4096 zeroed bytes owned here until the dealloc below.
        let block = unsafe { std::slice::from_raw_parts(ptr, 4096) };
        let written = file.write_all(block).and_then(|()| file.sync_data());
        // SAFETY: allocated above with this layout, not used after this point.
        unsafe { std::alloc::dealloc(ptr, layout) };
        written
    })();
    let _ = std::fs::remove_file(&path);
    result.map_err(|source| StartError::DirectIo {
        data_dir: data_dir.to_path_buf(),
        source,
    })
}

/// Sets up (and closes) one small io_uring, so a kernel where io_uring is disabled
/// (`kernel.io_uring_disabled` sysctl, a seccomp filter, an old kernel) is reported at start-up
/// in one line instead of as an executor panic.
pub(super) fn probe_io_uring() -> Result<(), StartError> {
    // struct io_uring_params is 120 bytes on every architecture; zeroed means "defaults".
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes exactly one struct io_uring_params (120 bytes),
    // which `params` provides; the returned descriptor is closed right below.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        let hint = match e.raw_os_error() {
            Some(libc::ENOSYS) => "this kernel has no io_uring (Linux 5.8 or newer is needed)",
            Some(libc::EPERM) | Some(libc::EACCES) => {
                "it is disabled: check `sysctl kernel.io_uring_disabled` (must be 0, or 1 with \
                 evringd's group in kernel.io_uring_group) and any seccomp/SystemCallFilter= \
                 that denies io_uring_setup"
            }
            Some(libc::ENOMEM) => "not enough locked memory: raise RLIMIT_MEMLOCK (ulimit -l)",
            _ => "check the kernel's io_uring support",
        };
        return Err(StartError::IoUring { hint, source: e });
    }
    // SAFETY: `fd` is the descriptor io_uring_setup just returned, owned here and closed once.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// File descriptors evringd keeps besides client connections: per partition its journals'
/// segment files and directories and a snapshot being written; per shard its io_uring
/// instances, event descriptors and listeners; the metrics endpoint's connections; the data
/// directory's lock, standard streams and the like.
pub(super) fn reserved_files(partitions: u32, shards: usize) -> u64 {
    64 + 16 * u64::from(partitions) + 16 * shards as u64 + 17
}

/// Raises the soft open-file limit (RLIMIT_NOFILE) to what `max_connections` client
/// connections and [`reserved_files`] need, up to the hard limit, and returns the number of
/// connections the server will accept: `max_connections`, or fewer (with a warning) when the
/// hard limit is lower — so the connections beyond get error 30 instead of an accept failing
/// with EMFILE. Shells start processes with a soft limit of 1024, which `max_connections =
/// 1024` alone exceeds.
pub(super) fn raise_open_file_limit(
    max_connections: u32,
    partitions: u32,
    shards: usize,
) -> Result<u32, StartError> {
    let reserved = reserved_files(partitions, shards);
    let need = u64::from(max_connections) + reserved;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct rlimit, which `lim` provides.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(StartError::OpenFileLimit(
            "read",
            std::io::Error::last_os_error(),
        ));
    }
    if lim.rlim_cur >= need {
        return Ok(max_connections);
    }
    let raised = libc::rlimit {
        rlim_cur: need.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads one struct rlimit; raising the soft limit up to the hard limit
    // needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(StartError::OpenFileLimit(
            "raised",
            std::io::Error::last_os_error(),
        ));
    }
    if raised.rlim_cur >= need {
        tracing::info!(
            from = lim.rlim_cur,
            to = raised.rlim_cur,
            "raised the open-file limit for max_connections = {max_connections}"
        );
        return Ok(max_connections);
    }
    let fit = raised.rlim_cur.saturating_sub(reserved);
    if fit == 0 {
        return Err(StartError::NoFilesForConnections {
            hard: lim.rlim_max,
            reserved,
            partitions,
        });
    }
    let fit = fit.min(u64::from(max_connections)) as u32;
    tracing::warn!(
        hard_limit = lim.rlim_max,
        needed = need,
        "the open-file limit (RLIMIT_NOFILE) is below what max_connections = {max_connections} \
         needs; serving at most {fit} connections (the rest get error 30). Raise the limit \
         (LimitNOFILE= in the systemd unit, ulimit -Hn) or lower max_connections"
    );
    Ok(fit)
}

/// How long start-up waits for a port held by a listener in LISTEN state (see [`probe_port`]).
pub(super) const PORT_BUSY_WAIT: Duration = Duration::from_secs(5);

/// Fails if another socket listens on `addr`: a plain bind (SO_REUSEADDR, no SO_REUSEPORT)
/// that is dropped at once. A port still held after [`PORT_BUSY_WAIT`] is refused.
///
/// Why wait at all: an evringd that was just killed or stopped can leave its listener in
/// LISTEN state for a moment after the process is gone, because the kernel tears the
/// process's io_uring instances (which hold the listener for their pending accepts) down
/// asynchronously. A restart at once (systemd's `Restart=`) would be refused without the wait.
pub(super) fn probe_port(addr: SocketAddr, what: &str) -> Result<(), StartError> {
    let started = Instant::now();
    let mut logged = false;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(probe) => {
                drop(probe);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if started.elapsed() >= PORT_BUSY_WAIT {
                    return Err(StartError::PortInUse {
                        addr,
                        what: what.to_string(),
                        waited_secs: PORT_BUSY_WAIT.as_secs(),
                    });
                }
                if !logged {
                    tracing::info!(%addr, "the port is in use; waiting up to {} s for it (a stopped evringd's listener lingers briefly)", PORT_BUSY_WAIT.as_secs());
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(StartError::Listen {
                    addr,
                    what: what.to_string(),
                    source,
                })
            }
        }
    }
}

/// A listening socket on `addr` for this shard's executor, with SO_REUSEPORT (every shard
/// listens on the client port) and SO_REUSEADDR.
///
/// SO_REUSEADDR is what lets a restarted evringd bind its port at once: the sockets of
/// connections a stopped or killed evringd accepted linger in FIN-WAIT-2 or TIME-WAIT for up
/// to a minute, they inherit the listener's options, and the kernel lets a new bind past them
/// only when they carry SO_REUSEADDR (glommio's own `TcpListener::bind` sets SO_REUSEPORT
/// alone). Another process still *listening* on the port is refused all the same; the plain
/// probe bind ([`probe_port`]) reports it first.
pub(super) fn listen_on(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::unix::io::{FromRawFd, IntoRawFd};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    // SAFETY: the descriptor is a bound, listening TCP socket that `into_raw_fd` gave up;
    // the listener takes sole ownership of it (and closes it when dropped). It stays
    // blocking: the network ring accepts on it (a non-blocking socket would make io_uring
    // answer EAGAIN instead of waiting).
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// An exclusive advisory lock (`flock`) on `DATA_DIR/LOCK`, held for the life of the server:
/// two evringd processes writing one journal would overwrite each other's frames.
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Takes the lock or says who (which file) holds it.
    pub fn acquire(data_dir: &std::path::Path) -> Result<DataDirLock, StartError> {
        use std::os::unix::io::AsRawFd;
        let at = |what: &'static str, path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| StartError::Path { what, path, source }
        };
        std::fs::create_dir_all(data_dir).map_err(at("create data directory", data_dir))?;
        let path = data_dir.join("LOCK");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(at("open", &path))?;
        // SAFETY: flock on a descriptor we own; no memory is passed to the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Err(StartError::Locked {
                    data_dir: data_dir.to_path_buf(),
                    lock: path,
                });
            }
            return Err(at("lock", &path)(e));
        }
        Ok(DataDirLock { _file: file })
    }
}
