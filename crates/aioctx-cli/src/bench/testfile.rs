//! The one file every client of a bench reads and writes, and the page-cache state each run
//! starts from.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::workload::{Cache, IoLoad};
use crate::sys;

pub struct TestFile {
    pub path: PathBuf,
    pub size: u64,
    /// Made by the bench in a temp dir: removed on drop.
    temporary: bool,
}

impl TestFile {
    /// A temp file of `size` bytes in `dir`, removed when this is dropped.
    pub fn temporary(dir: &Path, size: u64) -> Result<TestFile, String> {
        let path = dir.join(format!("aioctx-bench-{}.dat", std::process::id()));
        let file = TestFile {
            path,
            size,
            temporary: true,
        };
        file.fill(0)
            .map_err(|e| format!("{}: {e}", file.path.display()))?;
        Ok(file)
    }

    /// The user's file: its first `size` bytes (all of it if `size` is None), filled up
    /// to `size` if it is shorter; kept afterwards.
    pub fn named(path: &Path, size: Option<u64>) -> Result<TestFile, String> {
        let describe = |e: io::Error| format!("{}: {e}", path.display());
        let existing = match std::fs::metadata(path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(describe(e)),
        };
        let size = match size {
            Some(size) => size,
            None if existing > 0 => existing,
            None => 512 << 20,
        };
        let file = TestFile {
            path: path.to_owned(),
            size,
            temporary: false,
        };
        if existing < size {
            file.fill(existing).map_err(describe)?;
        }
        Ok(file)
    }

    /// Writes a pattern from `from` up to `size` and makes it durable, so a later drop of the
    /// cache leaves no dirty page behind.
    fn fill(&self, from: u64) -> io::Result<()> {
        let mut writer = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&self.path)?;
        let chunk: Vec<u8> = (0..1usize << 20).map(|i| (i * 31 % 251) as u8).collect();
        let mut at = from;
        std::io::Seek::seek(&mut writer, std::io::SeekFrom::Start(from))?;
        while at < self.size {
            let n = (self.size - at).min(chunk.len() as u64) as usize;
            writer.write_all(&chunk[..n])?;
            at += n as u64;
        }
        writer.sync_all()
    }

    /// The file opened for a client, with or without O_DIRECT.
    pub fn open(&self, direct: bool) -> io::Result<Arc<File>> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if direct {
            options.custom_flags(libc::O_DIRECT);
        }
        options.open(&self.path).map(Arc::new).map_err(|e| {
            if direct && e.raw_os_error() == Some(libc::EINVAL) {
                io::Error::other(format!(
                    "{}: the file system does not support O_DIRECT; pick another with --dir",
                    self.path.display()
                ))
            } else {
                e
            }
        })
    }

    /// Bytes of the file in the page cache now.
    pub fn cached_bytes(&self) -> io::Result<u64> {
        sys::cached_bytes(&File::open(&self.path)?, self.size)
    }

    /// Puts the page cache where the load wants it before a run; returns the bytes cached
    /// when the run starts. Cold means none: dropped with `posix_fadvise(DONTNEED)` and
    /// checked with `mincore`, or the run does not start.
    pub fn prepare(&self, load: &IoLoad) -> Result<u64, String> {
        let describe = |e: io::Error| format!("{}: {e}", self.path.display());
        if load.direct {
            return self.cached_bytes().map_err(describe);
        }
        match load.cache {
            Cache::Hot => {
                if self.cached_bytes().map_err(describe)? < self.size {
                    self.read_through().map_err(describe)?;
                }
                self.cached_bytes().map_err(describe)
            }
            Cache::Cold => {
                let file = File::open(&self.path).map_err(describe)?;
                for _ in 0..5 {
                    // Dirty pages are not dropped: write them back first.
                    file.sync_data().map_err(describe)?;
                    sys::drop_cached_pages(&file).map_err(describe)?;
                    if self.cached_bytes().map_err(describe)? == 0 {
                        return Ok(0);
                    }
                }
                Err(format!(
                    "{}: {} bytes stay in the page cache after posix_fadvise(DONTNEED); \
                     a cold run cannot start",
                    self.path.display(),
                    self.cached_bytes().map_err(describe)?
                ))
            }
        }
    }

    fn read_through(&self) -> io::Result<()> {
        let mut file = File::open(&self.path)?;
        let mut chunk = vec![0u8; 1 << 20];
        while file.read(&mut chunk)? > 0 {}
        Ok(())
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
