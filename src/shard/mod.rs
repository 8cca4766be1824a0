//! Thread-per-core runtime: glommio executors pinned to CPUs, sized to the locked-memory limit.
//!
//! glommio registers its `io_memory` in three io_uring rings per executor and silently falls
//! back to unregistered buffers when that does not fit RLIMIT_MEMLOCK; it refuses to start at
//! all below 512 KiB. [`executor_builder`] therefore reads the limit first, fails with an
//! error that names the fix when it is too low, and sizes `io_memory` so three copies fit
//! with room to spare. `spin_before_park` is set because without it an fdatasync completion
//! can wait for the next scheduler tick (4 ms at 250 Hz). It is kept short (100 µs): a longer
//! spin delayed every cross-shard call by about the spin time (measured: 1 ms at 1000 µs,
//! 0.2 ms at 100 µs, one connection, one request at a time), and a spinning shard takes CPU
//! from the kernel work that completes its own writes.
//!
//! A thread inherits its creator's CPU affinity, so glommio's blocking-pool threads, spawned
//! by a pinned executor, would run on that executor's CPU. Blocking jobs (snapshot encoding
//! and writing) call [`off_shard_cpus`] first, which moves the calling thread to the CPUs no
//! shard is pinned to (all CPUs when every CPU has a shard).

pub mod task_box;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use crate::error::RuntimeError;

/// glommio refuses to start below this much locked memory, whatever the number of executors
/// (each sizes its buffers to the limit, or goes without registered buffers).
pub const MEMLOCK_MIN_BYTES: u64 = 512 * 1024;

/// Largest `io_memory` per executor we ask for.
pub const IO_MEMORY_MAX_BYTES: usize = 2 * 1024 * 1024;

/// How long an idle executor spins before it parks in the kernel.
pub const SPIN_BEFORE_PARK: Duration = Duration::from_micros(100);

/// The current RLIMIT_MEMLOCK soft limit in bytes (`u64::MAX` for unlimited).
pub fn memlock_limit_bytes() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit struct for the duration of the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return u64::MAX;
    }
    lim.rlim_cur
}

/// `io_memory` for each of `executors` executors under the current memlock limit, or the
/// error that tells the operator how to raise the limit.
pub fn io_memory_per_executor(executors: usize) -> Result<usize, RuntimeError> {
    let limit = memlock_limit_bytes();
    if limit < MEMLOCK_MIN_BYTES {
        return Err(RuntimeError::MemlockTooLow {
            have_kib: limit / 1024,
            need_kib: MEMLOCK_MIN_BYTES / 1024,
        });
    }
    // Three registrations per executor, half the limit left for everything else.
    let share = limit / 2 / (3 * executors.max(1) as u64);
    let io_memory = (share.min(IO_MEMORY_MAX_BYTES as u64) as usize) & !4095;
    Ok(io_memory.max(64 * 1024))
}

/// A builder for one shard's executor, pinned to `cpu` when `pin` is set.
pub fn executor_builder(
    name: &str,
    cpu: Option<usize>,
    executors: usize,
    spin_before_park: Duration,
) -> Result<LocalExecutorBuilder, RuntimeError> {
    let placement = match cpu {
        Some(cpu) => {
            if cpu < 64 {
                SHARD_CPUS.fetch_or(1 << cpu, Ordering::AcqRel);
            }
            Placement::Fixed(cpu)
        }
        None => Placement::Unbound,
    };
    Ok(LocalExecutorBuilder::new(placement)
        .name(name)
        .io_memory(io_memory_per_executor(executors)?)
        .spin_before_park(spin_before_park))
}

/// Runs `fut` to completion on a fresh unpinned executor on the calling thread (tests, tools).
///
/// Use it at most once per thread: glommio 0.9 leaves thread-local reactor state behind, and a
/// second executor on the same thread fails direct reads with EOPNOTSUPP.
pub fn run_local<T>(fut: impl std::future::Future<Output = T>) -> T {
    executor_builder("evring-local", None, 1, SPIN_BEFORE_PARK)
        .expect("locked-memory limit too low for a glommio executor")
        .make()
        .expect("cannot start a glommio executor")
        .run(fut)
}

/// CPUs (below 64) some executor is pinned to, as a bit mask.
static SHARD_CPUS: AtomicU64 = AtomicU64::new(0);

/// Moves the calling thread to the online CPUs no executor is pinned to (every online CPU
/// when that leaves none). For blocking-pool jobs, which would otherwise share their
/// executor's CPU. Best effort: a failure leaves the affinity as it was.
pub fn off_shard_cpus() {
    let pinned = SHARD_CPUS.load(Ordering::Acquire);
    if pinned == 0 {
        return;
    }
    // SAFETY: sysconf has no memory effects.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.clamp(1, 1024) as usize;
    // SAFETY: cpu_set_t is plain data; all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let mut any = false;
    for cpu in 0..online {
        if cpu >= 64 || pinned & (1 << cpu) == 0 {
            // SAFETY: `cpu` is below CPU_SETSIZE (1024), the size of `set`.
            unsafe { libc::CPU_SET(cpu, &mut set) };
            any = true;
        }
    }
    if !any {
        for cpu in 0..online {
            // SAFETY: as above.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    unsafe {
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
