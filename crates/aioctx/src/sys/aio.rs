//! The kernel's own Linux AIO system calls, raw (no libaio): what the kernel-AIO engine
//! runs on, and the baseline the bench measures aioctx against ([`KernelAio`]).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use super::abi::{self, IoEvent, Iocb};
use super::check;
use super::mem::SharedMem;

/// A kernel AIO context for `nr_events` requests (`io_setup`).
pub fn io_setup(nr_events: u32) -> io::Result<u64> {
    let mut id: u64 = 0;
    // SAFETY: the kernel writes the new context's id into `id`, a live local that starts at
    // zero as io_setup requires.
    check(unsafe { libc::syscall(abi::SYS_IO_SETUP, nr_events, &mut id as *mut u64) })?;
    Ok(id)
}

/// Destroys a kernel AIO context; since Linux 3.13 it returns once every request of it is
/// done.
pub fn io_destroy(id: u64) -> io::Result<()> {
    // SAFETY: io_destroy takes no pointer; an id that names no context is EINVAL.
    check(unsafe { libc::syscall(abi::SYS_IO_DESTROY, id) }).map(drop)
}

/// Submits `iocbs`; returns how many the kernel accepted (the first one's error if none).
///
/// # Safety
/// Each iocb, and the buffers, iovecs and descriptor it names, must stay valid until its
/// event is reaped (the kernel copies the iocb itself during the call but writes its
/// `aio_key` and, for a poll, reads it again at `io_cancel`).
pub unsafe fn io_submit(id: u64, iocbs: &[*mut Iocb]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe the caller's live slice; what the iocbs name
    // is the caller's promise.
    let ret = unsafe {
        libc::syscall(
            abi::SYS_IO_SUBMIT,
            id,
            iocbs.len() as libc::c_long,
            iocbs.as_ptr(),
        )
    };
    check(ret).map(|n| n as usize)
}

/// Takes up to `events.len()` events, waiting for at least `min` for `timeout` at most
/// (None: no limit). `EINTR` is the caller's to retry.
pub fn io_getevents(
    id: u64,
    min: usize,
    events: &mut [IoEvent],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let timeout = timeout.map(super::timespec);
    let timeout_ptr = timeout
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the kernel writes at most `events.len()` events into the caller's slice; the
    // timeout is null or a live local.
    let ret = unsafe {
        libc::syscall(
            abi::SYS_IO_GETEVENTS,
            id,
            min as libc::c_long,
            events.len() as libc::c_long,
            events.as_mut_ptr(),
            timeout_ptr,
        )
    };
    check(ret).map(|n| n as usize)
}

/// Asks the kernel to cancel the request whose iocb is at `iocb`: `Ok` if it was
/// (`EINPROGRESS`: its event comes through the ring), else the kernel's error (`EINVAL`:
/// no such request in flight, or one it cannot cancel).
///
/// # Safety
/// `iocb` must be the live iocb of a request submitted to `id` whose event was not reaped
/// yet, or memory the kernel may read 64 bytes of.
pub unsafe fn io_cancel(id: u64, iocb: *mut Iocb) -> io::Result<()> {
    let mut result = IoEvent::default();
    // SAFETY: the iocb is the caller's promise; the kernel may write `result`, a live local.
    let ret = unsafe { libc::syscall(abi::SYS_IO_CANCEL, id, iocb, &mut result as *mut IoEvent) };
    match check(ret) {
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(()),
        other => other.map(drop),
    }
}

/// One read or write a [`KernelAio`] context is asked for: `bs` bytes at `offset` of its
/// file, into or out of slot `slot` of its memory.
#[derive(Clone, Copy, Debug)]
pub struct KernelOp {
    /// The slot of the context's memory to read into or write from.
    pub slot: usize,
    /// A write (else a read).
    pub write: bool,
    /// The file offset.
    pub offset: u64,
}

/// A context of the kernel's own AIO, safe to use: it holds the file and the memory its
/// requests use, and its destroy (also on drop) waits for them, so requests never outlive
/// either. The bench's baseline.
pub struct KernelAio {
    id: u64,
    file: Arc<File>,
    mem: Arc<SharedMem>,
    bs: usize,
}

impl KernelAio {
    /// `io_setup(nr_events)`; requests move `bs` bytes between `file` and slots of `mem`.
    pub fn setup(
        nr_events: u32,
        file: Arc<File>,
        mem: Arc<SharedMem>,
        bs: usize,
    ) -> io::Result<KernelAio> {
        let id = io_setup(nr_events)?;
        Ok(KernelAio { id, file, mem, bs })
    }

    /// `io_submit` of the ops; returns how many the kernel accepted.
    pub fn submit(&self, ops: &[KernelOp]) -> io::Result<usize> {
        let mut iocbs = Vec::with_capacity(ops.len());
        for op in ops {
            let start = op.slot * self.bs;
            if start + self.bs > self.mem.len() {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            iocbs.push(Iocb {
                aio_data: op.slot as u64,
                aio_lio_opcode: if op.write {
                    abi::IOCB_CMD_PWRITE
                } else {
                    abi::IOCB_CMD_PREAD
                },
                aio_fildes: self.file.as_raw_fd() as u32,
                aio_buf: self.mem.ptr_at(start) as u64,
                aio_nbytes: self.bs as u64,
                aio_offset: op.offset as i64,
                ..Iocb::default()
            });
        }
        let pointers: Vec<*mut Iocb> = iocbs.iter_mut().map(|i| i as *mut Iocb).collect();
        // SAFETY: the kernel copies the iocbs during the call (they are not polls, so it
        // never reads them again); each names a slot inside `mem` and the fd of `file`, both
        // of which this context holds until its destroy has waited for every request.
        unsafe { io_submit(self.id, &pointers) }
    }

    /// `io_getevents`: waits for at least `min` events (at most `timeout`), returns up to
    /// `events.len()`; a signal's `EINTR` is retried.
    pub fn get_events(
        &self,
        min: usize,
        events: &mut [IoEvent],
        timeout: Duration,
    ) -> io::Result<usize> {
        loop {
            match io_getevents(self.id, min, events, Some(timeout)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// `io_destroy`, which waits for every request of the context.
    pub fn destroy(mut self) -> io::Result<()> {
        let result = io_destroy(self.id);
        // A context id is the address of its ring, never 0: Drop now has nothing to do.
        self.id = 0;
        result
    }
}

impl Drop for KernelAio {
    fn drop(&mut self) {
        if self.id != 0 {
            // The kernel waits for the requests still in flight before the file and the
            // memory they use are let go (after this, with the fields).
            let _ = io_destroy(self.id);
        }
    }
}
