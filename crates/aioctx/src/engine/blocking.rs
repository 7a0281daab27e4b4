//! Running a request with the plain syscalls, on whatever thread calls it: the thread
//! pool's workers, the engines' fallbacks, and the poller's transfers without blocking.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use super::iovecs_of;
use crate::request::{Opcode, Request, RwFlags};
use crate::sys::check;

/// Runs a read, write, sync or noop to completion; returns the event's `res`.
pub(crate) fn perform(request: &mut Request) -> i64 {
    perform_with(request, RwFlags::empty())
}

/// As `perform`, with extra `RWF_*` flags (the engines add `RWF_NOWAIT` to try a request
/// without blocking).
pub(crate) fn perform_with(request: &mut Request, extra: RwFlags) -> i64 {
    perform_up_to(request, extra, usize::MAX)
}

/// As `perform_with`, moving at most `limit` bytes (the simulator's short transfers).
pub(crate) fn perform_up_to(request: &mut Request, extra: RwFlags, limit: usize) -> i64 {
    perform_window(request, None, extra, 0..limit)
}

/// Moves the bytes of a read or write after the first `done` (the part a transfer cut
/// short has not moved yet), through `via` if given (the same file, opened again) else the
/// request's own descriptor; the file's offset advances by `done` too.
pub(crate) fn perform_rest(
    request: &mut Request,
    via: Option<BorrowedFd<'_>>,
    extra: RwFlags,
    done: usize,
) -> i64 {
    perform_window(request, via, extra, done..usize::MAX)
}

/// Runs the request on the bytes `window` of its buffers.
fn perform_window(
    request: &mut Request,
    via: Option<BorrowedFd<'_>>,
    extra: RwFlags,
    window: std::ops::Range<usize>,
) -> i64 {
    let fd = match (request.raw_fd(), via) {
        (_, Some(via)) => via.as_raw_fd(),
        (Some(fd), None) => fd,
        (None, None) if request.opcode == Opcode::Noop => return 0,
        (None, None) => return -(libc::EBADF as i64),
    };
    let flags = (request.rw_flags | extra).bits() as libc::c_int;
    let result = match request.opcode {
        Opcode::Noop => Ok(0),
        // SAFETY: fsync/fdatasync take no memory arguments.
        Opcode::Fsync => cvt(unsafe { libc::fsync(fd) } as isize),
        // SAFETY: as above.
        Opcode::Fdsync => cvt(unsafe { libc::fdatasync(fd) } as isize),
        Opcode::Pread | Opcode::Preadv => transfer(fd, request, flags, window, Direction::Read),
        Opcode::Pwrite | Opcode::Pwritev => transfer(fd, request, flags, window, Direction::Write),
        Opcode::Poll => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    match result {
        Ok(n) => n as i64,
        Err(e) => -(e.raw_os_error().unwrap_or(libc::EIO) as i64),
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Read,
    Write,
}

fn transfer(
    fd: RawFd,
    request: &mut Request,
    flags: libc::c_int,
    window: std::ops::Range<usize>,
    dir: Direction,
) -> io::Result<usize> {
    let iovecs = iovecs_of(&mut request.buffers, window.clone());
    let offset = match request.offset {
        offset if offset < 0 => offset,
        offset => offset.saturating_add(window.start as i64),
    };
    let count = iovecs.len() as libc::c_int;
    // The system call itself, not glibc's wrapper: that one is a cancellation point, which
    // costs two atomic updates per call in a threaded process (and would let a
    // `pthread_cancel` unwind through the library), where the kernel's io_submit is none.
    let number = match dir {
        Direction::Read => libc::SYS_preadv2,
        Direction::Write => libc::SYS_pwritev2,
    };
    let call = |offset: i64| {
        // SAFETY: each iovec describes memory the request owns (or a C caller lent for the
        // request's lifetime); the request is borrowed mutably for the whole call. The
        // offset goes as the low word of the kernel's (low, high) pair, whose high word a
        // 64-bit kernel ignores. Every argument is widened to a whole register: `syscall`
        // is variadic, and would pass an `int`'s upper half uninitialised.
        let ret = unsafe {
            libc::syscall(
                number,
                libc::c_long::from(fd),
                iovecs.as_ptr(),
                libc::c_long::from(count),
                offset as libc::c_long,
                0 as libc::c_long,
                libc::c_long::from(flags),
            )
        };
        cvt(ret as isize)
    };
    match call(offset) {
        // Pipes, FIFOs and sockets have no offset: kernel AIO ignores it there, and so do we;
        // but not on a remembered mode, whose ESPIPE shows the number names a stream now,
        // to be learnt before anything of it is read (a read cut short is redone).
        Err(e) if e.raw_os_error() == Some(libc::ESPIPE) && !request.mode_remembered => call(-1),
        other => other,
    }
}

fn cvt(ret: isize) -> io::Result<usize> {
    check(ret as libc::c_long).map(|n| n as usize)
}
