//! The eventfds a context has checked for `IOCB_FLAG_RESFD`.
//!
//! Whether a descriptor is an eventfd can only be learnt from user space by reading its
//! `/proc/self/fd` link, about 3 µs, and programs such as QEMU pass the same eventfd with
//! every request. So a context remembers the few it has seen: a request whose eventfd is
//! one of them (the same `Arc<File>`) is not checked again, and a C caller's descriptor
//! number that still names the same open file (`kcmp`) resolves to the remembered one
//! without a new dup. A remembered eventfd stays open until the context is dropped or it
//! is pushed out by newer ones; an eventfd has no other end, so that is not observable.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, RawFd};
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use crate::sys::fd;

/// How many eventfds a context remembers.
const REMEMBERED: usize = 4;

#[derive(Default)]
pub(crate) struct KnownEventfds {
    /// Checked eventfds, newest last, with the C caller's number where one named it.
    known: Mutex<Vec<(Option<RawFd>, Arc<File>)>>,
}

impl KnownEventfds {
    /// Whether `file` is an eventfd, checking it only if it is not one already remembered.
    pub(crate) fn is_eventfd(&self, file: &Arc<File>) -> bool {
        if lock(&self.known)
            .iter()
            .any(|(_, known)| Arc::ptr_eq(known, file))
        {
            return true;
        }
        let eventfd = fd::is_eventfd(file.as_fd());
        if eventfd {
            self.remember(None, Arc::clone(file));
        }
        eventfd
    }

    /// The file a C caller's descriptor number names now, held open for a request: the
    /// remembered eventfd if the number still names it, else a fresh dup (remembered if it
    /// is an eventfd). `EBADF` for a number that names nothing.
    pub(crate) fn resolve(&self, raw: RawFd) -> io::Result<Arc<File>> {
        let remembered = lock(&self.known)
            .iter()
            .filter(|(number, _)| *number == Some(raw))
            .map(|(_, file)| Arc::clone(file))
            .next_back();
        if let Some(file) = remembered {
            if fd::same_file(raw, file.as_fd()) {
                return Ok(file);
            }
        }
        let file = Arc::new(File::from(fd::dup_raw(raw)?));
        if fd::is_eventfd(file.as_fd()) {
            self.remember(Some(raw), Arc::clone(&file));
        }
        Ok(file)
    }

    fn remember(&self, number: Option<RawFd>, file: Arc<File>) {
        let mut known = lock(&self.known);
        known.retain(|(n, _)| number.is_none() || *n != number);
        if known.len() == REMEMBERED {
            known.remove(0);
        }
        known.push((number, file));
    }
}
