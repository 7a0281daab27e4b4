//! What completes on the submitting thread, before submit returns: the kernel's timing, as
//! one rule for every engine that runs real I/O (threads, kaio, uring).
//!
//! On the kernel, buffered I/O that the page cache serves completes inside `io_submit`, and
//! programs rely on it: they submit one request and call `io_getevents` with `min_nr` 0,
//! expecting the event. So here:
//! - a buffered read (a regular file, a pipe, a socket) is tried with `RWF_NOWAIT`, which
//!   returns at once if the data is not there; it stands if it was served whole (a regular
//!   file read cut short may be only partly cached: it goes asynchronous and is redone from
//!   the start, harmless for a read) or, on a pipe or socket, if anything was read;
//! - a buffered write of a regular file is tried with `RWF_NOWAIT` where the filesystem
//!   supports it; where it answers `EOPNOTSUPP` (ext4 here) it is done inline without the
//!   flag, as the kernel does. Its result stands whatever it is (a short write or an error:
//!   redoing part of a write could append twice). A write that would block (`EAGAIN`) goes
//!   asynchronous.
//!
//! What must wait for the device goes asynchronous: cold reads, direct I/O, and writes that
//! are synchronous (`O_SYNC`/`O_DSYNC` files, `RWF_SYNC`/`RWF_DSYNC`); so do requests the
//! caller flagged `RWF_NOWAIT` (its `EAGAIN` is the engine's to give) and writes to pipes,
//! sockets and devices, which may wait for a peer.
//!
//! A C caller's request may come with a mode its number's file had at an earlier call,
//! remembered without asking the kernel (see `on_remembered_mode`).

use std::io;

use super::blocking::perform_with;
use crate::core::Inflight;
use crate::request::{Request, RwFlags};
use crate::sys::clock;

const EAGAIN: i64 = -(libc::EAGAIN as i64);
const EOPNOTSUPP: i64 = -(libc::EOPNOTSUPP as i64);

/// Completes `request` on this thread if the rule above says so; otherwise hands it back,
/// untouched in effect, for the engine to run asynchronously.
pub(crate) fn complete_inline(mut request: Inflight) -> Option<Inflight> {
    if request.request.inline_tried {
        return Some(request);
    }
    match attempt(&mut request.request) {
        Attempt::Final(res) => {
            request.complete(res);
            None
        }
        Attempt::WouldWait | Attempt::NotTried => Some(request),
    }
}

/// What an inline attempt came to.
enum Attempt {
    /// The request is not one to run inline: nothing was tried.
    NotTried,
    /// The transfer ran and its result stands.
    Final(i64),
    /// The transfer found it would have to wait for the device (`EAGAIN`, or a read of a
    /// regular file served only in part): nothing of it stands, and the file the number
    /// names is one that takes this transfer (open for it, positional, `RWF_NOWAIT`
    /// capable), as the mode said.
    WouldWait,
}

/// What became of a request run on a remembered mode.
pub(crate) enum Remembered {
    /// It completed (its event is posted).
    Done,
    /// Its transfer would have waited for the device, on a file that takes it as the mode
    /// said: it goes on to the engine on that mode, with no second attempt.
    Kept(Inflight),
    /// Its file's mode is learnt now: it goes on as any request (checks, then the engine).
    Relearnt(Inflight),
    /// Its number names no open file now: submit fails with this.
    Refused(Inflight, io::Error),
}

/// Runs a request whose mode is remembered from an earlier call on its number (the C ABI
/// remembers buffered regular files, for which this is the common path), so that a
/// page-cache hit costs no `fcntl` or `fstat`. The number may name another file by now,
/// so the memory is trusted only as far as the transfer proves it: one on the number that
/// completes inline, whole and within one tick of the coarse clock stands (a pipe, socket
/// or directory fails `ESPIPE`/`EISDIR` before anything moves, as a file not open for it
/// fails `EBADF`). A transfer during which the tick moved on may have waited for a
/// device (`O_DIRECT` or `O_SYNC` set since): one that waited a tick or more is always
/// caught, a shorter wait with a chance of its share of the tick, a page-cache hit of
/// microseconds (wrongly, at the cost of one look) once in thousands; what escapes is
/// caught by the C ABI's bound on how long a memory is trusted. One that found it would
/// have to wait (`Attempt::WouldWait`) goes on to the engine on the remembered mode, since
/// it showed what the engines need of it. Anything else looks at the number afresh before
/// going on. A transfer that moved bytes stands whatever it shows:
/// the kernel ran it on the file the number named, with that file's own flags, so its
/// result is right, only its timing was inline.
pub(crate) fn on_remembered_mode(mut request: Inflight) -> Remembered {
    let started = clock::coarse_nanos();
    let res = match attempt(&mut request.request) {
        Attempt::Final(res) if res >= 0 && clock::coarse_nanos() == started => {
            request.complete(res);
            return Remembered::Done;
        }
        // A cold read (or a write that would block) costs no fcntl or fstat: what the
        // mode is needed for afterwards (which path, whether to copy the fd) the failed
        // transfer has shown; what it cannot show (O_DIRECT set since) is bounded as for
        // any remembered mode (the C ABI's TRUSTED_CALLS).
        Attempt::WouldWait => {
            request.request.mode_remembered = false;
            request.request.inline_tried = true;
            return Remembered::Kept(request);
        }
        Attempt::Final(res) => Some(res),
        Attempt::NotTried => None,
    };
    let remembered = request.request.mode;
    let relearnt = request.request.relearn_mode();
    // On the same mode the engine's own attempt would only repeat this one.
    request.request.inline_tried = request.request.mode == remembered;
    match res {
        Some(res) if res >= 0 || (request.request.opcode.is_write() && !moved_nothing(res)) => {
            request.complete(res);
            Remembered::Done
        }
        // A read is run again on what the number names now (a failed one moved nothing).
        _ => match relearnt {
            Ok(()) => Remembered::Relearnt(request),
            Err(error) => Remembered::Refused(request, error),
        },
    }
}

/// Whether a write's error shows that nothing was written (the kernel checks these before
/// it moves a byte), so that it may be run again on the mode learnt afresh.
fn moved_nothing(res: i64) -> bool {
    [
        libc::EBADF,
        libc::ESPIPE,
        libc::EISDIR,
        libc::EINVAL,
        libc::EOPNOTSUPP,
    ]
    .iter()
    .any(|&errno| res == -(errno as i64))
}

/// Runs the request inline if the module's rule says so.
fn attempt(r: &mut Request) -> Attempt {
    if is_cached_read_candidate(r) {
        match perform_with(r, RwFlags::NOWAIT) {
            res if read_is_final(r, res) => Attempt::Final(res),
            res if res == EAGAIN || (r.mode.regular && res >= 0) => Attempt::WouldWait,
            // An error that does not stand (see `read_is_final`): the read goes on.
            _ => Attempt::NotTried,
        }
    } else if is_buffered_write_candidate(r) {
        match perform_with(r, RwFlags::NOWAIT) {
            EAGAIN => Attempt::WouldWait,
            EOPNOTSUPP => Attempt::Final(perform_with(r, RwFlags::empty())),
            res => Attempt::Final(res),
        }
    } else {
        Attempt::NotTried
    }
}

/// The flags under which a request may run inline: none that ask the device to be waited
/// for, and no `RWF_NOWAIT` of the caller's.
fn inline_flags(r: &Request) -> bool {
    !r.rw_flags.contains(RwFlags::SYNC)
        && !r.rw_flags.contains(RwFlags::DSYNC)
        && !r.rw_flags.contains(RwFlags::NOWAIT)
}

fn is_cached_read_candidate(r: &Request) -> bool {
    r.opcode.is_read() && !r.mode.direct && inline_flags(r)
}

fn is_buffered_write_candidate(r: &Request) -> bool {
    r.opcode.is_write() && r.mode.regular && !r.mode.direct && !r.mode.sync && inline_flags(r)
}

/// Whether an inline `RWF_NOWAIT` read's result stands (see the module's rule).
fn read_is_final(r: &Request, res: i64) -> bool {
    if r.mode.regular {
        res == r.buffers.total_len() as i64
    } else {
        res >= 0 || (res != EAGAIN && res != EOPNOTSUPP)
    }
}
