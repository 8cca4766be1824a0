//! The journal's view of storage: a directory of segment files and the operations the journal
//! needs from each file (allocate an aligned buffer, write it at an offset, fdatasync, read,
//! and start the durable write of a sealed frame with a completion callback).
//!
//! I/O is a parameter so that the real journal code runs unchanged on three back ends:
//! - [`crate::journal::DiskStorage`]: O_DIRECT files, frames written through the shard's
//!   own io_uring (production);
//! - [`crate::journal::SimStorage`]: a deterministic in-memory disk that keeps written and
//!   durable bytes apart and injects faults (tests);
//! - [`StdStorage`]: read-only blocking access through `std::fs`, used by `evring-inspect`
//!   through [`block_on`] (no executor, no locked memory needed).
//!
//! Contract every implementation keeps: `write_at` is not durable until a later `sync` on the
//! same file has returned `Ok`; `create_segment` returns only once the new file, zero-filled
//! to its full size with the header block in blocks 0 and 1, is durable under its final name
//! (data synced, then renamed from a temporary name, then the directory synced), so a crash
//! never leaves a half-prepared segment under a segment name.

use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A buffer the journal fills with one frame before handing it to `write_at`.
pub trait FrameBuf {
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
    /// Shortens the buffer to `len` bytes (a multiple of the block size).
    fn trim(&mut self, len: usize);
}

impl FrameBuf for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
    fn trim(&mut self, len: usize) {
        self.truncate(len);
    }
}

/// One segment file.
// The journal runs on one thread per shard, so these futures never need to be `Send`.
#[allow(async_fn_in_trait)]
pub trait SegmentFile: 'static {
    type Buf: FrameBuf + 'static;
    /// A buffer of `len` bytes aligned for direct I/O. Its contents are unspecified: the
    /// journal writes every byte it submits (records, then zero padding).
    fn alloc_buf(&self, len: usize) -> Self::Buf;
    /// Writes the whole buffer at `pos`; a short write is an error.
    async fn write_at(&self, buf: Self::Buf, pos: u64) -> io::Result<()>;
    /// fdatasync: every write that returned before this call is durable when it returns `Ok`.
    async fn sync(&self) -> io::Result<()>;
    /// Whether a write that returned `Ok` is already durable (an `O_DSYNC` file), so the
    /// journal acknowledges after the write alone instead of following it with [`Self::sync`].
    fn write_is_durable(&self) -> bool {
        false
    }
    /// Starts making a sealed frame durable at `pos`: its write, then (unless
    /// [`Self::write_is_durable`]) an fdatasync. `done` is called once with the result, and
    /// may be called before this returns (so the caller holds no borrow across the call).
    /// The default is [`write_then_sync`]; a device with its own submission path overrides
    /// it.
    fn write_durable(
        self: Rc<Self>,
        buf: Self::Buf,
        pos: u64,
        done: Box<dyn FnOnce(io::Result<()>)>,
    ) where
        Self: Sized,
    {
        write_then_sync(self, buf, pos, done)
    }
    /// Reads `len` bytes at `pos` (fewer only at the end of the file).
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>>;
    /// [`Self::read_at`] into `buf`, whose contents it replaces; a device that can reuses
    /// `buf`'s allocation.
    async fn read_into(&self, pos: u64, len: usize, buf: &mut Vec<u8>) -> io::Result<()> {
        *buf = self.read_at(pos, len).await?;
        Ok(())
    }
}

/// [`SegmentFile::write_durable`] through the file's futures: [`SegmentFile::write_at`], then
/// [`SegmentFile::sync`] unless the file's writes are durable, in a task on the current
/// glommio executor (which polls it at once, so futures that never wait finish before this
/// returns).
pub fn write_then_sync<F: SegmentFile>(
    file: Rc<F>,
    buf: F::Buf,
    pos: u64,
    done: Box<dyn FnOnce(io::Result<()>)>,
) {
    glommio::spawn_local(async move {
        let result = match file.write_at(buf, pos).await {
            Ok(()) if file.write_is_durable() => Ok(()),
            Ok(()) => file.sync().await,
            Err(e) => Err(e),
        };
        // Negative control (build.rs): a failed fdatasync is retried, and a retry that
        // succeeds counts as durable (after a failure the kernel may have dropped the pages).
        #[cfg(evring_mutant = "retry_after_fsync_failure")]
        let result = match result {
            Err(_) => file.sync().await,
            ok => ok,
        };
        done(result);
    })
    .detach();
}

/// A directory of segment files named by their sequence number.
#[allow(async_fn_in_trait)]
pub trait Storage {
    type File: SegmentFile;
    /// Sequence numbers of the segments present, ascending. Leftover temporary files from an
    /// interrupted `create_segment` are ignored (and may be removed).
    async fn list_segments(&self) -> io::Result<Vec<u64>>;
    async fn open_segment(&self, seq: u64) -> io::Result<Self::File>;
    /// Creates segment `seq`: `bytes` long, zero-filled, `header_block` in blocks 0 and 1,
    /// durable under its final name before this returns.
    async fn create_segment(
        &self,
        seq: u64,
        bytes: u64,
        header_block: &[u8],
    ) -> io::Result<Self::File>;
    async fn remove_segment(&self, seq: u64) -> io::Result<()>;
    /// Takes segment `seq` out of the journal but keeps its file as a spare for
    /// [`Storage::recycle_segment`] (retention retires segments this way instead of deleting
    /// them, so the next segment needs no zero-fill). A spare is never listed as a segment.
    /// The default has no spares: it removes the segment.
    async fn retire_segment(&self, seq: u64) -> io::Result<()> {
        self.remove_segment(seq).await
    }
    /// The spares, by the sequence number they had as segments: `(seq, bytes)`, ascending.
    async fn list_spares(&self) -> io::Result<Vec<(u64, u64)>> {
        Ok(Vec::new())
    }
    /// Makes spare `spare` segment `seq`, as durable under its final name as
    /// [`Storage::create_segment`] makes a new one: `header_block` in blocks 0 and 1 and
    /// block 2 (where the first frame goes) zeroed; the rest keeps the old segment's bytes,
    /// whose frames name another segment and so are never taken for this one's.
    async fn recycle_segment(
        &self,
        _spare: u64,
        _seq: u64,
        _header_block: &[u8],
    ) -> io::Result<Self::File> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this storage keeps no spare segments",
        ))
    }
    /// Deletes spare `spare`.
    async fn remove_spare(&self, _spare: u64) -> io::Result<()> {
        Ok(())
    }
    /// Size of segment `seq` in bytes.
    async fn segment_len(&self, seq: u64) -> io::Result<u64>;
    /// How to name segment `seq` in a message (its path on disk).
    fn describe(&self, seq: u64) -> String;
    /// Delivers completions of durable writes that have arrived (the journal calls this on
    /// every append, so a busy journal sees its completions without waiting for a poll).
    fn poll_completions(&self) {}
    /// The journal acknowledged the frame of `len` bytes at `offset` in segment `seq`: its
    /// blocks hold acknowledged data and must never be written again. Real devices ignore
    /// it; the simulated disk asserts the rule on every later write.
    fn acknowledged(&self, _seq: u64, _offset: u64, _len: u64) {}
    /// How long ago segment `seq` was last modified (retention by age); zero if unknown.
    async fn segment_age(&self, _seq: u64) -> io::Result<std::time::Duration> {
        Ok(std::time::Duration::ZERO)
    }
}

/// The file name of segment `seq`.
pub fn segment_file_name(seq: u64) -> String {
    format!("{seq:016x}.seg")
}

/// Parses a segment file name back to its sequence number.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Lists segment sequence numbers in a directory with `std::fs`.
/// The file name of spare `seq` (a retired segment kept for reuse).
pub fn spare_file_name(seq: u64) -> String {
    format!("{seq:016x}.spare")
}

/// The spares of a segment directory: `(seq, bytes)`, ascending.
pub fn list_spare_dir(dir: &Path) -> io::Result<Vec<(u64, u64)>> {
    let mut spares = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".spare")) else {
            continue;
        };
        if hex.len() == 16 {
            if let Ok(seq) = u64::from_str_radix(hex, 16) {
                spares.push((seq, entry.metadata()?.len()));
            }
        }
    }
    spares.sort_unstable();
    Ok(spares)
}

pub fn list_segment_dir(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Read-only access to a segment directory through blocking `std::fs` calls, for offline
/// tools. Its futures never wait, so [`block_on`] drives them.
pub struct StdStorage {
    dir: PathBuf,
    only: Option<u64>,
}

impl StdStorage {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StdStorage {
            dir: dir.into(),
            only: None,
        }
    }
    /// The one segment `seq` of `dir`, as if it were the whole journal (to inspect a single
    /// file).
    pub fn only(dir: impl Into<PathBuf>, seq: u64) -> Self {
        StdStorage {
            dir: dir.into(),
            only: Some(seq),
        }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A segment file opened read-only with `std::fs`.
pub struct StdFile {
    file: std::fs::File,
}

fn read_only() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "StdStorage is read-only")
}

impl SegmentFile for StdFile {
    type Buf = Vec<u8>;
    fn alloc_buf(&self, len: usize) -> Vec<u8> {
        vec![0; len]
    }
    async fn write_at(&self, _buf: Vec<u8>, _pos: u64) -> io::Result<()> {
        Err(read_only())
    }
    async fn sync(&self) -> io::Result<()> {
        Err(read_only())
    }
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = self.file.read_at(&mut buf[done..], pos + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }
}

impl Storage for StdStorage {
    type File = StdFile;
    async fn list_segments(&self) -> io::Result<Vec<u64>> {
        match self.only {
            Some(seq) => Ok(vec![seq]),
            None => list_segment_dir(&self.dir),
        }
    }
    async fn open_segment(&self, seq: u64) -> io::Result<StdFile> {
        let file = std::fs::File::open(self.dir.join(segment_file_name(seq)))?;
        Ok(StdFile { file })
    }
    async fn create_segment(&self, _: u64, _: u64, _: &[u8]) -> io::Result<StdFile> {
        Err(read_only())
    }
    async fn remove_segment(&self, _: u64) -> io::Result<()> {
        Err(read_only())
    }
    async fn segment_len(&self, seq: u64) -> io::Result<u64> {
        Ok(std::fs::metadata(self.dir.join(segment_file_name(seq)))?.len())
    }
    fn describe(&self, seq: u64) -> String {
        self.dir.join(segment_file_name(seq)).display().to_string()
    }
}

/// Runs a future that never waits (one whose I/O completes synchronously, as [`StdStorage`]
/// and [`crate::journal::SimStorage`] do) to completion on the calling thread.
///
/// Panics if the future returns `Pending`: that would mean it needs a real executor.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("block_on: the future waited; it needs an executor"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(0x2a), "000000000000002a.seg");
        assert_eq!(parse_segment_file_name("000000000000002a.seg"), Some(0x2a));
        assert_eq!(parse_segment_file_name("2a.seg"), None);
        assert_eq!(parse_segment_file_name("000000000000002a.seg.tmp"), None);
    }
}
