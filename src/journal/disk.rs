//! Production storage: a directory of O_DIRECT segment files.
//!
//! Frame writes and fdatasyncs go through the shard's own io_uring ([`super::uring`]):
//! submitted the moment a frame is sealed, reaped the moment they complete, from buffers
//! reused across frames. glommio opens the files and prepares new segments.
//!
//! A new segment is created under a temporary name, preallocated with `fallocate`, written
//! through with zeros (appending past EOF or into unwritten extents adds a metadata flush to
//! every later fdatasync; overwriting written blocks does not), given its two header copies,
//! fdatasync'ed, renamed to its final name, and then the directory is fsync'ed. Only then is
//! it opened for frames, so a segment visible under a `.seg` name is always complete. The
//! zero-fill goes through a descriptor without `O_DSYNC` and one fdatasync at the end: one
//! device cache flush per segment rather than one per megabyte, which the frames written
//! meanwhile would wait behind.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

use super::device::{list_spare_dir, segment_file_name, spare_file_name, SegmentFile, Storage};
use super::uring::{AlignedBuf, Completion, Driver, Submit};
use crate::constants::BLOCK_BYTES;

/// Bytes written per zero-fill request while preparing a segment.
const ZERO_FILL_CHUNK_BYTES: usize = 1024 * 1024;

// Directory fsyncs (`durable::sync_dir`) are a blocking call on the shard thread, once per
// segment created, recycled or removed (about a millisecond): glommio 0.9's
// `Directory::open` fails intermittently with EBADF when several executors run, so the plain
// syscall is used.
use crate::durable::sync_dir;

/// Writes a segment's header block at the start of `buf` and its copy in the second block.
fn put_header_blocks(buf: &mut [u8], header_block: &[u8]) {
    buf[..header_block.len()].copy_from_slice(header_block);
    buf[BLOCK_BYTES..BLOCK_BYTES + header_block.len()].copy_from_slice(header_block);
}

/// How a frame is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Segment files are opened with `O_DSYNC`: a write completes only once durable (the
    /// kernel issues a FUA write or a cache flush), so a frame costs one io_uring operation.
    Dsync,
    /// Each frame's write is followed by an `fdatasync` (two operations, one after the other).
    Fdatasync,
}

/// A segment directory on a real filesystem.
pub struct DiskStorage {
    dir: PathBuf,
    mode: WriteMode,
    submit: Submit,
}

impl DiskStorage {
    /// Uses `dir` (created if missing) for segment files. Leftover temporary files from an
    /// interrupted segment preparation are removed.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().ends_with(".seg.tmp") {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(DiskStorage {
            dir,
            mode: WriteMode::Dsync,
            submit: Submit::Inline,
        })
    }

    /// Chooses who issues frame writes (the default is [`Submit::Inline`]).
    pub fn with_submit(mut self, submit: Submit) -> Self {
        self.submit = submit;
        self
    }

    /// Chooses how frames are made durable (the default is [`WriteMode::Dsync`]).
    pub fn with_write_mode(mut self, mode: WriteMode) -> Self {
        self.mode = mode;
        self
    }

    fn open_flags(&self) -> i32 {
        match self.mode {
            WriteMode::Dsync => libc::O_DSYNC,
            WriteMode::Fdatasync => 0,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(segment_file_name(seq))
    }

    /// Puts a prepared segment in place: its bytes durable, then renamed from its temporary
    /// name to `final_path`, and the rename durable (a crash before leaves a temporary file,
    /// which [`DiskStorage::open`] removes).
    async fn install(&self, file: DmaFile, final_path: &Path) -> io::Result<()> {
        file.fdatasync().await?;
        file.rename(final_path).await?;
        sync_dir(&self.dir)?;
        file.close().await?;
        Ok(())
    }
}

/// An O_DIRECT segment file: writes through the shard's io_uring, reads by `pread` on a
/// second O_DIRECT descriptor.
///
/// Reads are `pread`s rather than glommio's DMA reads: glommio 0.9 submits reads into its
/// registered-buffer pool as `READ_FIXED`, which failed here with EOPNOTSUPP on ext4/virtio.
/// They bypass the page cache like the writes: the device copies straight into the reader's
/// buffer, where a buffered read would copy every byte again from the page cache on the
/// shard's thread (14% of the shard while consumers of a group read a backlog behind the
/// ring, docs/BENCHMARKS.md). A read is a blocking call on the shard thread; reads of recent
/// events are served from memory, so journal reads are catch-up and recovery work, and the
/// journal reads a window of a megabyte at a time ([`crate::constants::JOURNAL_READ_WINDOW_BYTES`]).
pub struct DiskFile {
    /// Keeps the O_DIRECT descriptor the driver writes through open.
    file: DmaFile,
    /// O_DIRECT, for reads: offsets, lengths and buffers aligned to [`BLOCK_BYTES`].
    reader: std::fs::File,
    driver: Rc<Driver>,
    dsync: bool,
    /// Frame writes go to io_uring's workers ([`Driver::workers`]).
    workers: bool,
}

/// Test hook for the one fault real disks cannot produce on demand: with
/// `EVRINGD_INJECT_WRITE_FAILURE_AFTER=N` set, the N-th journal write of the process fails
/// with EIO (what a failing device returns). Unset in production: one relaxed load.
fn injected_write_failure() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static AFTER: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let after = AFTER.get_or_init(|| {
        std::env::var("EVRINGD_INJECT_WRITE_FAILURE_AFTER")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    match after {
        Some(n) => WRITES.fetch_add(1, Ordering::Relaxed) + 1 == *n,
        None => false,
    }
}

impl SegmentFile for DiskFile {
    type Buf = AlignedBuf;

    fn alloc_buf(&self, len: usize) -> AlignedBuf {
        AlignedBuf::new(len)
    }

    async fn write_at(&self, buf: AlignedBuf, pos: u64) -> io::Result<()> {
        if injected_write_failure() {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let (completion, done) = Completion::new();
        self.driver
            .write(self.file.as_raw_fd(), buf, pos, false, self.workers, done);
        completion.await
    }

    async fn sync(&self) -> io::Result<()> {
        let (completion, done) = Completion::new();
        self.driver.fdatasync(self.file.as_raw_fd(), done);
        completion.await
    }

    fn write_is_durable(&self) -> bool {
        self.dsync
    }

    fn write_durable(
        self: Rc<Self>,
        buf: AlignedBuf,
        pos: u64,
        done: Box<dyn FnOnce(io::Result<()>)>,
    ) {
        if injected_write_failure() {
            return done(Err(io::Error::from_raw_os_error(libc::EIO)));
        }
        let (fd, driver, workers) = (self.file.as_raw_fd(), self.driver.clone(), self.workers);
        let sync = !self.write_is_durable();
        // The callback owns this file, so its descriptor stays open until the write is done.
        let done = Box::new(move |result| {
            drop(self);
            done(result)
        });
        driver.write(fd, buf, pos, sync, workers, done);
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_into(pos, len, &mut buf).await?;
        Ok(buf)
    }

    /// Reads the whole blocks holding [pos, pos + len) into an aligned stretch of `buf`, then
    /// moves the bytes asked for to its start.
    async fn read_into(&self, pos: u64, len: usize, buf: &mut Vec<u8>) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let block = BLOCK_BYTES as u64;
        let start = pos - pos % block;
        let span = ((pos + len as u64).next_multiple_of(block) - start) as usize;
        buf.clear();
        buf.resize(span + BLOCK_BYTES, 0);
        let addr = buf.as_ptr().addr();
        let shift = addr.next_multiple_of(BLOCK_BYTES) - addr;
        let done = read_blocks(&mut buf[shift..shift + span], start, |b, at| {
            self.reader.read_at(b, at)
        })?;
        let head = (pos - start) as usize;
        let got = done.saturating_sub(head).min(len);
        buf.copy_within(shift + head..shift + head + got, 0);
        buf.truncate(got);
        Ok(())
    }
}

/// Fills `aligned` (whole blocks) with the file's bytes from `start` (a block boundary) by
/// `read_at`; returns how many it holds: fewer only at the end of the file. A read that ends
/// inside a block is the file's tail (segments are whole blocks, so only a file not made by
/// the journal has one), and nothing is read after it: a direct read from an offset inside a
/// block is refused by file systems that check alignment.
fn read_blocks(
    aligned: &mut [u8],
    start: u64,
    mut read_at: impl FnMut(&mut [u8], u64) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut done = 0;
    while done < aligned.len() {
        let n = read_at(&mut aligned[done..], start + done as u64)?;
        done += n;
        if n == 0 || done % BLOCK_BYTES != 0 {
            break;
        }
    }
    Ok(done)
}

impl Storage for DiskStorage {
    type File = DiskFile;

    async fn list_segments(&self) -> io::Result<Vec<u64>> {
        super::device::list_segment_dir(&self.dir)
    }

    async fn open_segment(&self, seq: u64) -> io::Result<DiskFile> {
        let driver = Driver::current()?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(self.open_flags())
            .dma_open(self.path(seq))
            .await?;
        let reader = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(self.path(seq))?
        };
        let workers = driver.workers(&self.submit);
        Ok(DiskFile {
            file,
            reader,
            driver,
            dsync: self.mode == WriteMode::Dsync,
            workers,
        })
    }

    async fn create_segment(
        &self,
        seq: u64,
        bytes: u64,
        header_block: &[u8],
    ) -> io::Result<DiskFile> {
        assert_eq!(bytes % BLOCK_BYTES as u64, 0);
        assert!(header_block.len() <= BLOCK_BYTES);
        let final_path = self.path(seq);
        let tmp_path = self.dir.join(format!("{}.tmp", segment_file_name(seq)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(&tmp_path)
            .await?;
        let prepared = async {
            file.pre_allocate(bytes, false).await?;
            let mut pos = 0u64;
            while pos < bytes {
                let len = ZERO_FILL_CHUNK_BYTES.min((bytes - pos) as usize);
                let mut buf = file.alloc_dma_buffer(len);
                buf.as_bytes_mut().fill(0);
                if pos == 0 {
                    put_header_blocks(buf.as_bytes_mut(), header_block);
                }
                let written = file.write_at(buf, pos).await?;
                if written != len {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "short write while zero-filling a new segment",
                    ));
                }
                pos += len as u64;
            }
            self.install(file, &final_path).await
        }
        .await;
        if let Err(e) = prepared {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(e);
        }
        self.open_segment(seq).await
    }

    async fn remove_segment(&self, seq: u64) -> io::Result<()> {
        std::fs::remove_file(self.path(seq))?;
        sync_dir(&self.dir)
    }

    async fn retire_segment(&self, seq: u64) -> io::Result<()> {
        std::fs::rename(self.path(seq), self.dir.join(spare_file_name(seq)))?;
        sync_dir(&self.dir)
    }

    async fn list_spares(&self) -> io::Result<Vec<(u64, u64)>> {
        list_spare_dir(&self.dir)
    }

    async fn recycle_segment(
        &self,
        spare: u64,
        seq: u64,
        header_block: &[u8],
    ) -> io::Result<DiskFile> {
        assert!(header_block.len() <= BLOCK_BYTES);
        let final_path = self.path(seq);
        let tmp_path = self.dir.join(format!("{}.tmp", segment_file_name(seq)));
        // Out of the spares first: a crash from here on leaves a temporary file, which the
        // listing ignores and the next creation of `seq` truncates.
        std::fs::rename(self.dir.join(spare_file_name(spare)), &tmp_path)?;
        let prepared = async {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .dma_open(&tmp_path)
                .await?;
            let mut buf = file.alloc_dma_buffer(3 * BLOCK_BYTES);
            buf.as_bytes_mut().fill(0);
            put_header_blocks(buf.as_bytes_mut(), header_block);
            let written = file.write_at(buf, 0).await?;
            if written != 3 * BLOCK_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "short write of a recycled segment's header",
                ));
            }
            self.install(file, &final_path).await
        }
        .await;
        if let Err(e) = prepared {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(e);
        }
        self.open_segment(seq).await
    }

    async fn remove_spare(&self, spare: u64) -> io::Result<()> {
        std::fs::remove_file(self.dir.join(spare_file_name(spare)))?;
        sync_dir(&self.dir)
    }

    async fn segment_len(&self, seq: u64) -> io::Result<u64> {
        Ok(std::fs::metadata(self.path(seq))?.len())
    }

    async fn segment_age(&self, seq: u64) -> io::Result<std::time::Duration> {
        let modified = std::fs::metadata(self.path(seq))?.modified()?;
        Ok(modified.elapsed().unwrap_or_default())
    }

    fn describe(&self, seq: u64) -> String {
        self.path(seq).display().to_string()
    }

    fn poll_completions(&self) {
        Driver::reap_current();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `len` bytes read as O_DIRECT reads it where alignment is checked: a read
    /// from an offset inside a block is refused; a read past the end is short.
    fn strict_reader(len: u64) -> impl FnMut(&mut [u8], u64) -> io::Result<usize> {
        move |buf: &mut [u8], at: u64| {
            if at % BLOCK_BYTES as u64 != 0 {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            let n = (len.saturating_sub(at) as usize).min(buf.len());
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = ((at as usize + i) % 251) as u8;
            }
            Ok(n)
        }
    }

    #[test]
    fn a_tail_short_of_a_block_ends_the_read_without_an_unaligned_read() {
        let mut buf = vec![0u8; 3 * BLOCK_BYTES];
        // 10,000 bytes: two whole blocks from 0, then a tail of 1,808 bytes.
        let got = read_blocks(&mut buf, 0, strict_reader(10_000)).unwrap();
        assert_eq!(got, 10_000);
        let want: Vec<u8> = (0..10_000).map(|i| (i % 251) as u8).collect();
        assert_eq!(buf[..got], want[..]);
        let got = read_blocks(&mut buf[..BLOCK_BYTES], 8192, strict_reader(10_000)).unwrap();
        assert_eq!(got, 10_000 - 8192);
        // Whole blocks up to the end, and nothing past it.
        assert_eq!(read_blocks(&mut buf, 0, strict_reader(8192)).unwrap(), 8192);
        assert_eq!(
            read_blocks(&mut buf, 12_288, strict_reader(8192)).unwrap(),
            0
        );
    }
}
