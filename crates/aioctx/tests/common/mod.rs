//! Helpers shared by the integration tests: files with known contents, pipes, eventfds.

#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A temp file removed on drop.
pub struct TempFile {
    pub path: PathBuf,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A temp file of `len` bytes where byte i is `pattern(i)`.
pub fn temp_file(len: usize) -> TempFile {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "aioctx-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let data: Vec<u8> = (0..len).map(pattern).collect();
    File::create(&path).unwrap().write_all(&data).unwrap();
    TempFile { path }
}

pub fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

pub fn open(file: &TempFile, read: bool, write: bool) -> Arc<File> {
    Arc::new(
        OpenOptions::new()
            .read(read)
            .write(write)
            .open(&file.path)
            .unwrap(),
    )
}

pub fn open_direct(file: &TempFile) -> Arc<File> {
    Arc::new(
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&file.path)
            .unwrap(),
    )
}

/// A pipe as (read end, write end).
pub fn pipe() -> (Arc<File>, File) {
    let (r, w) = std::io::pipe().unwrap();
    (
        Arc::new(File::from(OwnedFd::from(r))),
        File::from(OwnedFd::from(w)),
    )
}

pub fn eventfd() -> Arc<File> {
    Arc::new(aioctx::sys::fd::eventfd().unwrap())
}

pub fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}
