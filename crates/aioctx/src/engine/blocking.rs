//! Running a request with the plain blocking syscalls, on whatever thread calls it: the
//! thread pool's workers, and the engines' fallbacks.

use std::io;
use std::os::fd::RawFd;

use crate::request::{Opcode, Request, RwFlags};

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
    let fd = match request.raw_fd() {
        Some(fd) => fd,
        None if request.opcode == Opcode::Noop => return 0,
        None => return -(libc::EBADF as i64),
    };
    let flags = (request.rw_flags | extra).bits() as libc::c_int;
    let result = match request.opcode {
        Opcode::Noop => Ok(0),
        // SAFETY: fsync/fdatasync take no memory arguments.
        Opcode::Fsync => cvt(unsafe { libc::fsync(fd) } as isize),
        // SAFETY: as above.
        Opcode::Fdsync => cvt(unsafe { libc::fdatasync(fd) } as isize),
        Opcode::Pread | Opcode::Preadv => transfer(fd, request, flags, limit, Direction::Read),
        Opcode::Pwrite | Opcode::Pwritev => transfer(fd, request, flags, limit, Direction::Write),
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
    limit: usize,
    dir: Direction,
) -> io::Result<usize> {
    let mut left = limit;
    let iovecs: Vec<libc::iovec> = request
        .buffers
        .segments()
        .into_iter()
        .map(|(base, len)| {
            let len = len.min(left);
            left -= len;
            libc::iovec {
                iov_base: base.cast(),
                iov_len: len,
            }
        })
        .collect();
    let count = iovecs.len() as libc::c_int;
    let call = |offset: i64| {
        // SAFETY: each iovec describes memory the request owns (or a C caller lent for the
        // request's lifetime); the request is borrowed mutably for the whole call.
        let ret = unsafe {
            match dir {
                Direction::Read => libc::preadv2(fd, iovecs.as_ptr(), count, offset, flags),
                Direction::Write => libc::pwritev2(fd, iovecs.as_ptr(), count, offset, flags),
            }
        };
        cvt(ret)
    };
    match call(request.offset) {
        // Pipes, FIFOs and sockets have no offset: kernel AIO ignores it there, and so do we.
        Err(e) if e.raw_os_error() == Some(libc::ESPIPE) => call(-1),
        other => other,
    }
}

fn cvt(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}
