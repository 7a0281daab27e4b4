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

use super::blocking::perform_with;
use crate::core::Inflight;
use crate::request::{Request, RwFlags};

const EAGAIN: i64 = -(libc::EAGAIN as i64);
const EOPNOTSUPP: i64 = -(libc::EOPNOTSUPP as i64);

/// Completes `request` on this thread if the rule above says so; otherwise hands it back,
/// untouched in effect, for the engine to run asynchronously.
pub(crate) fn complete_inline(mut request: Inflight) -> Option<Inflight> {
    let r = &mut request.request;
    let res = if is_cached_read_candidate(r) {
        let res = perform_with(r, RwFlags::NOWAIT);
        if !read_is_final(r, res) {
            return Some(request);
        }
        res
    } else if is_buffered_write_candidate(r) {
        match perform_with(r, RwFlags::NOWAIT) {
            EAGAIN => return Some(request),
            EOPNOTSUPP => perform_with(r, RwFlags::empty()),
            res => res,
        }
    } else {
        return Some(request);
    };
    request.complete(res);
    None
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
