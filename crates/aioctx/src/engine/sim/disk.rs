//! The simulated disk under real files: what of each file the machine wrote is durable, and
//! how a power loss takes the rest back.
//!
//! Writes really reach the files (the page cache plays the disk's volatile cache). Before an
//! unsynced write runs, the machine reads the bytes it will overwrite (its pre-image) into an
//! undo record; a successful `FSYNC`/`FDSYNC` of the file drops the file's records and makes
//! its current size durable; a write with `RWF_DSYNC`/`RWF_SYNC`, or to a file opened
//! `O_DSYNC`/`O_SYNC`, is durable once done: it cuts its range out of the older records and
//! raises the durable size. A crash replays the undo records newest first (bytes that were
//! beyond the end of the file come back as zeros) and truncates each file to its durable
//! size, so what is left on the real file is exactly what was made durable. Each file is
//! reached through a descriptor of the simulator's own (`/proc/self/fd`, without
//! `O_DIRECT`), opened on first touch and kept until the machine goes, so the crash can
//! restore files the caller has closed; machines share it (one per file in the process, not
//! one per context).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{Arc, Mutex, Weak};

use crate::sync::lock;

/// The bytes a write replaced: `old` at `offset`, then zeros up to `len` (bytes the file
/// did not have).
struct Undo {
    offset: u64,
    old: Vec<u8>,
    len: u64,
}

impl Undo {
    fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// The part of this record in `from..to` (of the file), if any.
    fn slice(&self, from: u64, to: u64) -> Option<Undo> {
        let (from, to) = (from.max(self.offset), to.min(self.end()));
        if from >= to {
            return None;
        }
        let start = (from - self.offset) as usize;
        let stop = ((to - self.offset) as usize).min(self.old.len());
        let old = self.old.get(start..stop.max(start)).unwrap_or(&[]).to_vec();
        Some(Undo {
            offset: from,
            old,
            len: to - from,
        })
    }
}

struct FileLog {
    /// The simulator's own descriptor of the file.
    handle: Arc<File>,
    durable_len: u64,
    /// Unsynced writes' pre-images, oldest first.
    undo: Vec<Undo>,
}

/// (device, inode): what names a file, whichever descriptor reaches it.
type FileKey = (u64, u64);

/// Files by key: every descriptor of one file shares its log.
#[derive(Default)]
pub(super) struct Disk {
    files: HashMap<FileKey, FileLog>,
}

fn key_of(file: &File) -> io::Result<FileKey> {
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

/// Whether writes through `file` are durable when done (`O_DSYNC`, which `O_SYNC` includes).
pub(super) fn opened_dsync(file: &File) -> bool {
    // SAFETY: F_GETFL takes no pointer argument.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    flags >= 0 && flags & libc::O_DSYNC != 0
}

impl Disk {
    fn log(&mut self, file: &File) -> io::Result<&mut FileLog> {
        Ok(match self.files.entry(key_of(file)?) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let handle = shared_handle(*entry.key(), file)?;
                let durable_len = handle.metadata()?.len();
                entry.insert(FileLog {
                    handle,
                    durable_len,
                    undo: Vec::new(),
                })
            }
        })
    }

    /// Called before a write of `len` bytes at `offset` runs (`None`: at the end of the
    /// file, `RWF_APPEND`/`O_APPEND`); records its pre-image unless it is `durable`.
    pub(super) fn before_write(
        &mut self,
        file: &File,
        offset: Option<u64>,
        len: u64,
        durable: bool,
    ) -> io::Result<()> {
        let log = self.log(file)?;
        if durable || len == 0 {
            return Ok(());
        }
        let size = log.handle.metadata()?.len();
        let offset = offset.unwrap_or(size);
        let have = size.saturating_sub(offset).min(len) as usize;
        let mut old = vec![0u8; have];
        log.handle.read_exact_at(&mut old, offset)?;
        log.undo.push(Undo { offset, old, len });
        Ok(())
    }

    /// After a durable write of `len` bytes at `offset` (`None`: it appended; the file now
    /// ends at its end): that range is durable.
    pub(super) fn made_durable(
        &mut self,
        file: &File,
        offset: Option<u64>,
        len: u64,
    ) -> io::Result<()> {
        let log = self.log(file)?;
        let size = log.handle.metadata()?.len();
        let offset = offset.unwrap_or(size.saturating_sub(len));
        let end = offset + len;
        log.undo = std::mem::take(&mut log.undo)
            .into_iter()
            .flat_map(|undo| [undo.slice(0, offset), undo.slice(end, u64::MAX)])
            .flatten()
            .collect();
        log.durable_len = log.durable_len.max(end);
        Ok(())
    }

    /// After a successful fsync or fdatasync of `file`: everything in it is durable.
    pub(super) fn synced(&mut self, file: &File) -> io::Result<()> {
        let log = self.log(file)?;
        log.undo.clear();
        log.durable_len = log.handle.metadata()?.len();
        Ok(())
    }

    /// Power loss: every file back to its durable state.
    pub(super) fn roll_back(&mut self) -> io::Result<()> {
        let mut first_error = Ok(());
        for log in self.files.values_mut() {
            let result = roll_back_file(log);
            if first_error.is_ok() {
                first_error = result;
            }
        }
        first_error
    }

    /// Lands `data` at `offset` of `file` as if it reached the platter at the crash.
    pub(super) fn land(&mut self, file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        let log = self.log(file)?;
        log.handle.write_all_at(data, offset)?;
        log.durable_len = log.durable_len.max(offset + data.len() as u64);
        Ok(())
    }
}

/// The process's descriptor of the file `key` names, opened through `file` if there is
/// none. (An inode number cannot be reused while a descriptor holds the inode.)
fn shared_handle(key: FileKey, file: &File) -> io::Result<Arc<File>> {
    static HANDLES: Mutex<Vec<(FileKey, Weak<File>)>> = Mutex::new(Vec::new());
    let mut handles = lock(&HANDLES);
    handles.retain(|(_, weak)| weak.strong_count() > 0);
    if let Some(handle) = handles
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, weak)| weak.upgrade())
    {
        return Ok(handle);
    }
    let handle = Arc::new(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()))?,
    );
    handles.push((key, Arc::downgrade(&handle)));
    Ok(handle)
}

fn roll_back_file(log: &mut FileLog) -> io::Result<()> {
    for undo in log.undo.drain(..).rev() {
        let mut bytes = undo.old;
        bytes.resize(undo.len as usize, 0);
        log.handle.write_all_at(&bytes, undo.offset)?;
    }
    log.handle.set_len(log.durable_len)
}
