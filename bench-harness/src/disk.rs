//! `evring-bench disk`: the raw ceiling of the device for the journal's write pattern.
//!
//! One file, preallocated and fully written first (the journal's segments are too), opened
//! with O_DIRECT. `depth` slots each loop: one contiguous write of `frame_bytes` at the next
//! offset, linked (IOSQE_IO_LINK) to an fdatasync, submitted through one io_uring; a slot is
//! done when its fdatasync completes. That is exactly what the journal does per frame, with
//! nothing else: no records, no checksums, no executor.
//!
//! With `dsync` the file is opened with `O_DSYNC` and each slot is one write that completes
//! once durable (the journal's default write mode), instead of a write linked to an fdatasync.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use io_uring::{opcode, squeue, types, IoUring};

use crate::report;

/// A zeroed, 4096-aligned buffer for O_DIRECT (and `floor.rs`'s provided buffers).
pub(crate) struct Aligned {
    ptr: *mut u8,
    layout: Layout,
}

impl Aligned {
    pub(crate) fn new(len: usize) -> Aligned {
        let layout = Layout::from_size_align(len.max(4096), 4096).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        Aligned { ptr, layout }
    }
    /// The first byte; `len` bytes (at least 4096) from it are ours.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr
    }
    fn fill(&mut self, byte: u8) {
        // SAFETY: ptr points to layout.size() bytes we own exclusively.
        unsafe { std::ptr::write_bytes(self.ptr, byte, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout and not freed since.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

pub struct DiskResult {
    pub flushes: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

impl DiskResult {
    /// A placeholder with no flushes (for moving results out of a list).
    pub fn empty() -> DiskResult {
        DiskResult {
            flushes: 0,
            bytes: 0,
            elapsed: Duration::from_secs(1),
            latency: report::histogram(),
        }
    }

    pub fn row(&self, name: &str) -> report::Row {
        let secs = self.elapsed.as_secs_f64();
        report::Row::new(name)
            .cell("flushes/s", format!("{:.0}", self.flushes as f64 / secs))
            .cell("MB/s", format!("{:.1}", self.bytes as f64 / secs / 1e6))
            .latency(&self.latency)
    }
}

/// Creates `path` with `len` bytes written and synced.
pub fn prepare_file(path: &Path, len: u64) -> anyhow::Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(())
}

pub fn run(
    path: &Path,
    file_bytes: u64,
    frame_bytes: usize,
    depth: usize,
    duration: Duration,
    dsync: bool,
) -> anyhow::Result<DiskResult> {
    if frame_bytes == 0 || !frame_bytes.is_multiple_of(4096) {
        bail!("frame size must be a positive multiple of 4096");
    }
    if depth == 0 || depth > 256 {
        bail!("depth must be 1..=256");
    }
    let file_bytes =
        file_bytes.max((frame_bytes * depth) as u64) / frame_bytes as u64 * frame_bytes as u64;
    prepare_file(path, file_bytes)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT | if dsync { libc::O_DSYNC } else { 0 })
        .open(path)
        .with_context(|| format!("open {} with O_DIRECT", path.display()))?;
    let fd = types::Fd(file.as_raw_fd());
    let mut ring = IoUring::new((depth * 2).next_power_of_two() as u32)?;
    let mut bufs: Vec<Aligned> = (0..depth).map(|_| Aligned::new(frame_bytes)).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        b.fill(b'a' + i as u8);
    }
    let mut started = vec![Instant::now(); depth];
    let mut next_offset = 0u64;
    let mut latency = report::histogram();
    let (mut flushes, mut bytes) = (0u64, 0u64);
    let t0 = Instant::now();
    let deadline = t0 + duration;
    let mut in_flight = 0usize;
    let submit =
        |ring: &mut IoUring, slot: usize, buf: &Aligned, offset: u64| -> anyhow::Result<()> {
            let write = opcode::Write::new(fd, buf.ptr, frame_bytes as u32)
                .offset(offset)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data((slot as u64) << 1);
            let sync = opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data(((slot as u64) << 1) | 1);
            if dsync {
                // One operation per slot: the O_DSYNC write completes once durable.
                let write = opcode::Write::new(fd, buf.ptr, frame_bytes as u32)
                    .offset(offset)
                    .build()
                    .user_data(((slot as u64) << 1) | 1);
                // SAFETY: the buffer outlives the operation: `bufs` lives until every
                // submitted operation completed (the loop below drains in-flight slots before
                // returning), and a slot's buffer is not reused before its write completed.
                unsafe {
                    ring.submission()
                        .push(&write)
                        .map_err(|_| anyhow::anyhow!("submission queue full"))?;
                }
                return Ok(());
            }
            // SAFETY: as above; a slot's buffer is not reused before its fdatasync completed.
            unsafe {
                let mut sq = ring.submission();
                sq.push(&write)
                    .map_err(|_| anyhow::anyhow!("submission queue full"))?;
                sq.push(&sync)
                    .map_err(|_| anyhow::anyhow!("submission queue full"))?;
            }
            Ok(())
        };
    for (slot, buf) in bufs.iter().enumerate() {
        submit(&mut ring, slot, buf, next_offset)?;
        next_offset = (next_offset + frame_bytes as u64) % file_bytes;
        started[slot] = Instant::now();
        in_flight += 1;
    }
    while in_flight > 0 {
        ring.submit_and_wait(1)?;
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (user, res) in done {
            let slot = (user >> 1) as usize;
            if res < 0 {
                bail!(
                    "{} failed: {}",
                    if user & 1 == 0 || dsync {
                        "write"
                    } else {
                        "fdatasync"
                    },
                    std::io::Error::from_raw_os_error(-res)
                );
            }
            let is_write = user & 1 == 0 || dsync;
            if is_write && res as usize != frame_bytes {
                bail!("short write: {res} of {frame_bytes} bytes");
            }
            if user & 1 == 0 {
                continue; // a linked write: its fdatasync completes the slot
            }
            flushes += 1;
            bytes += frame_bytes as u64;
            report::record(&mut latency, started[slot].elapsed());
            if Instant::now() < deadline {
                submit(&mut ring, slot, &bufs[slot], next_offset)?;
                next_offset = (next_offset + frame_bytes as u64) % file_bytes;
                started[slot] = Instant::now();
            } else {
                in_flight -= 1;
            }
        }
    }
    let elapsed = t0.elapsed();
    drop(file);
    let _ = std::fs::remove_file(path);
    Ok(DiskResult {
        flushes,
        bytes,
        elapsed,
        latency,
    })
}
