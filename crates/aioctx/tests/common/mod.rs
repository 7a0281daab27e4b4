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
    Arc::new(aioctx::ffi::eventfd().unwrap())
}

pub fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// Descriptors of this process open on any of the files `on` (whichever descriptor opened
/// them), other than the descriptors `except`: what the library still holds of them.
pub fn descriptors_on(on: &[&File], except: &[&File]) -> Vec<i32> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let id = |m: std::fs::Metadata| (m.dev(), m.ino());
    let targets: Vec<_> = on.iter().map(|f| id(f.metadata().unwrap())).collect();
    let mine: Vec<i32> = except.iter().map(|f| f.as_raw_fd()).collect();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|fd| !mine.contains(fd))
        .filter(|fd| {
            std::fs::metadata(format!("/proc/self/fd/{fd}")).is_ok_and(|m| targets.contains(&id(m)))
        })
        .collect()
}
