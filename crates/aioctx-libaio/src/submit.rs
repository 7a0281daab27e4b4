//! `io_submit`: iocbs read out of caller memory and turned into requests, with the kernel's
//! checks in the kernel's order (fs/aio.c: `io_submit_one`, `__io_submit_one`, `aio_read`,
//! `aio_prep_fsync`, `aio_poll`; lib/iov_iter.c: `__import_iovec`).

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, RawFd};
use std::sync::{Arc, Weak};

use aioctx::ffi::abi::{self, Iocb};
use aioctx::ffi::{
    names_same_file, open_mode_and_flags_raw, status_flags_raw, LentFd, OpenMode, RawMem, RawParts,
    StatusFlags,
};
use aioctx::{Context, Opcode, Request, RwFlags};

use crate::user::{self, Errno};

/// The most segments one vectored request may carry (the kernel's `UIO_MAXIOV`).
const UIO_MAXIOV: u64 = 1024;

/// The most bytes one read or write transfers (the kernel's `MAX_RW_COUNT`): longer requests
/// are cut short, as the kernel cuts them.
const MAX_RW_COUNT: usize = 0x7fff_f000;

/// Where `aio_key` lies in `struct iocb`.
pub(crate) const AIO_KEY_OFFSET: usize = 8;

pub(crate) fn errno_of(error: io::Error) -> Errno {
    error.raw_os_error().unwrap_or(libc::EINVAL)
}

/// How many iocb pointers are read out of the caller's array at a time (on the stack).
const POINTERS_AT_ONCE: usize = 64;

/// Submits the first `nr` iocbs of the caller's array (at most the ring's size); returns how
/// many were accepted, or the first one's error.
pub(crate) fn submit(context: &Context, nr: usize, iocbpp: usize) -> Result<usize, Errno> {
    let nr = nr.min(context.capacity() as usize);
    let mut failure = None;
    let mut files = Files::default();
    // One batch: io_uring gets the whole array in one enter (and the device one doorbell).
    let accepted = context.batch(|| {
        let mut accepted = 0;
        let mut pointers = [0usize; POINTERS_AT_ONCE];
        while accepted < nr {
            let want = (nr - accepted).min(POINTERS_AT_ONCE);
            let (readable, unreadable) = iocb_pointers(iocbpp, accepted, &mut pointers[..want]);
            for &user_iocb in &pointers[..readable] {
                if let Err(error) = submit_one(context, user_iocb, &mut files) {
                    failure = Some(error);
                    return accepted;
                }
                accepted += 1;
            }
            if unreadable.is_some() {
                failure = unreadable;
                break;
            }
        }
        accepted
    });
    files.remember();
    match failure {
        Some(error) if accepted == 0 => Err(error),
        _ => Ok(accepted),
    }
}

/// Reads the iocb pointers at `first..` of the caller's array into `pointers`, all in one
/// copy if it can; otherwise one by one up to the first that cannot be read. Returns how
/// many were read, and that one's error.
fn iocb_pointers(iocbpp: usize, first: usize, pointers: &mut [usize]) -> (usize, Option<Errno>) {
    let address = |index: usize| {
        index
            .checked_mul(size_of::<usize>())
            .and_then(|offset| iocbpp.checked_add(offset))
    };
    if address(first).is_some_and(|at| user::read_into(at, pointers).is_ok()) {
        return (pointers.len(), None);
    }
    for (read, pointer) in pointers.iter_mut().enumerate() {
        match address(first + read).map_or(Err(libc::EFAULT), user::read::<usize>) {
            Ok(value) => *pointer = value,
            Err(error) => return (read, Some(error)),
        }
    }
    (pointers.len(), None)
}

/// One iocb: the checks before a ring slot is taken, then the rest under `submit_with`, so
/// that a full ring (`EAGAIN`) is reported before anything found in the iocb's fields.
fn submit_one(context: &Context, user_iocb: usize, files: &mut Files) -> Result<(), Errno> {
    let iocb: Iocb = user::read(user_iocb)?;
    if iocb.aio_reserved2 != 0 || (iocb.aio_nbytes as i64) < 0 {
        return Err(libc::EINVAL);
    }
    context
        .submit_with(|| {
            decode(context, &iocb, user_iocb, files)
                .or_else(|error| {
                    // Found on a remembered mode: decoded again on the mode learnt now,
                    // so that a number that names nothing is EBADF before anything else.
                    match files.relearn(iocb.aio_fildes)? {
                        true => decode(context, &iocb, user_iocb, files),
                        false => Err(error),
                    }
                })
                .map(Request::from)
                .map_err(io::Error::from_raw_os_error)
        })
        .map_err(errno_of)
}

/// The caller's descriptors met in one `io_submit`, each looked at once at most (its mode
/// may be remembered from an earlier call, see [`Modes`] and [`Copies`]): its mode,
/// and the number lent to the requests of the call on it ([`LentFd`]: what the kernel runs
/// before the call returns needs no copy of the descriptor; a request kept longer takes
/// one, shared by all). So a request keeps its file whatever the caller does with the
/// number once submit returned. Within one call a number names one file, unless another
/// thread of the caller closes and reuses it during the call, a race whose every outcome
/// the kernel allows too (each iocb gets the file the number named at some moment of it).
///
/// The eventfds of the call's iocbs (`aio_resfd`) are resolved once per number likewise:
/// QEMU signals one eventfd with every request, and checking it costs a `kcmp`.
#[derive(Default)]
struct Files {
    resolved: Vec<Resolved>,
    eventfds: Vec<(RawFd, Arc<File>)>,
}

/// A number met in the call: its lent descriptor and mode, and how the mode is known.
struct Resolved {
    fd: Arc<LentFd>,
    mode: OpenMode,
    known: Known,
}

/// How a call knows the mode of a number's file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Learnt of the file now (`fcntl` + `fstat`), with the status flags it showed.
    Learnt(StatusFlags),
    /// Remembered from an earlier call and confirmed now, by a copy the number still
    /// names or by its unchanged status flags.
    Confirmed,
    /// Remembered from an earlier call, unconfirmed: only the transfer will tell.
    Remembered,
}

impl Files {
    /// The lent number `raw` and its mode, for a request of `opcode`; a mode remembered
    /// unconfirmed is taken only for a `plain` read or write.
    fn resolve(
        &mut self,
        raw: u32,
        opcode: Option<Opcode>,
        plain: bool,
    ) -> Result<&Resolved, Errno> {
        let raw = i32::try_from(raw).map_err(|_| libc::EBADF)?;
        let trusting = |mode: &OpenMode| plain && opcode.is_some_and(|op| Modes::serves(mode, op));
        if let Some(index) = self.resolved.iter().position(|r| r.fd.raw() == raw) {
            let entry = &mut self.resolved[index];
            if entry.known == Known::Remembered && (entry.fd.refuted() || !trusting(&entry.mode)) {
                (entry.mode, entry.known) = learn(raw)?;
            }
            return Ok(&self.resolved[index]);
        }
        let remembered = Modes::remembered(raw);
        let entry = match (remembered, Copies::live(raw)) {
            (Some(Memory::Buffered(mode)), copy) if trusting(&mode) => {
                let candidate = copy.map(|(c, _)| Arc::downgrade(&c)).unwrap_or_default();
                Resolved {
                    // SAFETY: libaio's contract: `aio_fildes` is a descriptor the caller
                    // keeps open until io_submit returns; the library trusts the remembered
                    // mode only as far as a transfer on the number proves it, and takes the
                    // copy only if the number is found to name its file.
                    fd: Arc::new(unsafe { LentFd::with_candidate(raw, candidate) }),
                    mode,
                    known: Known::Remembered,
                }
            }
            (_, Some((copy, mode))) if Copies::still_named(raw, &copy) => Resolved {
                // SAFETY: as above, and the number names `copy`'s open file.
                fd: Arc::new(unsafe { LentFd::with_copy(raw, copy) }),
                mode,
                known: Known::Confirmed,
            },
            (remembered, copy) => {
                let (mode, known) = match remembered {
                    Some(Memory::Direct(mode, flags)) if copy.is_none() => {
                        confirm_by_flags(raw, mode, flags)?
                    }
                    // A number that no longer names the file of the copy its requests
                    // hold is not taken for the file it named either.
                    _ => learn(raw)?,
                };
                Resolved {
                    // SAFETY: as above, and the number was found open.
                    fd: Arc::new(unsafe { LentFd::new(raw) }),
                    mode,
                    known,
                }
            }
        };
        self.resolved.push(entry);
        Ok(&self.resolved[self.resolved.len() - 1])
    }

    /// The eventfd the caller's `aio_resfd` number `raw` names, held open for a request of
    /// `context`: resolved at its first iocb of the call.
    fn eventfd(&mut self, context: &Context, raw: u32) -> Result<Arc<File>, Errno> {
        let raw = raw as RawFd;
        if let Some((_, eventfd)) = self.eventfds.iter().find(|(n, _)| *n == raw) {
            return Ok(Arc::clone(eventfd));
        }
        // SAFETY: libaio's contract: with IOCB_FLAG_RESFD, `aio_resfd` is an eventfd the
        // caller keeps open until io_submit returns; one that names nothing is EBADF, one
        // that is no eventfd EINVAL (both checked by the context before any use).
        let eventfd = unsafe { aioctx::ffi::resolve_eventfd(context, raw) }.map_err(errno_of)?;
        self.eventfds.push((raw, Arc::clone(&eventfd)));
        Ok(eventfd)
    }

    /// Learns the mode of `raw` afresh if it was only remembered (`EBADF` if it names
    /// nothing); whether it was.
    fn relearn(&mut self, raw: u32) -> Result<bool, Errno> {
        let Some(entry) = self
            .resolved
            .iter_mut()
            .find(|r| r.known == Known::Remembered && r.fd.raw() as u32 == raw)
        else {
            return Ok(false);
        };
        (entry.mode, entry.known) = learn(entry.fd.raw())?;
        Ok(true)
    }

    /// Remembers, for the next calls, the copies requests of this call took and the modes
    /// learnt, and forgets what requests found wrong.
    fn remember(&self) {
        for entry in &self.resolved {
            if entry.fd.refuted() {
                // The mode here is not the file's: neither it nor a copy goes with it.
                Modes::forget(entry.fd.raw());
                continue;
            }
            if let Some(copy) = entry.fd.copied() {
                Copies::remember(entry.fd.raw(), &copy, entry.mode);
            }
            if let Known::Learnt(flags) = entry.known {
                Modes::remember(entry.fd.raw(), entry.mode, flags);
            }
        }
    }
}

/// The remembered `mode` of the lent number `raw`, if its status flags are still `flags`;
/// its mode learnt afresh if not (`EBADF` if it names nothing).
fn confirm_by_flags(
    raw: RawFd,
    mode: OpenMode,
    flags: StatusFlags,
) -> Result<(OpenMode, Known), Errno> {
    // SAFETY: libaio's contract: `aio_fildes` is lent until io_submit returns; it is only
    // queried.
    match unsafe { status_flags_raw(raw) }.map_err(errno_of)? {
        now if now == flags => Ok((mode, Known::Confirmed)),
        _ => learn(raw),
    }
}

/// The mode of the file the lent number `raw` names now (`EBADF` if none).
fn learn(raw: RawFd) -> Result<(OpenMode, Known), Errno> {
    // SAFETY: libaio's contract: `aio_fildes` is lent until io_submit returns; it is only
    // queried.
    let (mode, flags) = unsafe { open_mode_and_flags_raw(raw) }.map_err(errno_of)?;
    Ok((mode, Known::Learnt(flags)))
}

/// The modes of the files this thread's calls named, by number, so that a read or write
/// on one costs no `fcntl` and `fstat`. Two kinds are remembered:
/// - buffered regular files ([`Memory::Buffered`]): what a plain read or write on one does
///   first is a transfer on the number, which tells whether the number still names a file
///   of that mode (see the library's `inline::on_remembered_mode`), and anything else
///   looks again. What a transfer cannot tell (the number now names a file opened
///   `O_DIRECT` or `O_SYNC`, whose I/O then runs inline, correct but waiting for the
///   device) lasts at most `TRUSTED_CALLS` calls.
/// - files opened `O_DIRECT` ([`Memory::Direct`]), whose I/O goes to the kernel or a
///   worker with no transfer in the call to tell: confirmed by one `fcntl(F_GETFL)` that
///   finds the status flags unchanged (`OpenMode::recognized_by` says why that is enough),
///   or by a copy the number still names ([`Copies`]).
///
/// Every other mode (synchronous writes, pipes, sockets, devices) is learnt at each call,
/// or kept by [`Copies`]. Every mode is learnt afresh after `TRUSTED_CALLS` calls.
struct Modes;

/// What a thread remembers of a number's file.
#[derive(Clone, Copy)]
enum Memory {
    Buffered(OpenMode),
    Direct(OpenMode, StatusFlags),
}

/// How many numbers' modes a thread remembers (the oldest is forgotten first).
const REMEMBERED_MODES: usize = 16;

/// How many calls take a remembered mode before it is learnt again.
const TRUSTED_CALLS: u32 = 64;

thread_local! {
    /// Each number's mode, and how many more calls may take it.
    static MODES: RefCell<Vec<(RawFd, Memory, u32)>> = const { RefCell::new(Vec::new()) };
}

impl Modes {
    /// Whether a remembered buffered `mode` may carry a plain `op` (the transfer then
    /// confirms it).
    fn serves(mode: &OpenMode, op: Opcode) -> bool {
        Modes::buffered(mode)
            && ((op.is_read() && mode.readable) || (op.is_write() && mode.writable))
    }

    fn buffered(mode: &OpenMode) -> bool {
        mode.regular && !mode.direct && !mode.sync
    }

    /// The mode remembered for `raw`, taken by one more call, if it may still be taken.
    fn remembered(raw: RawFd) -> Option<Memory> {
        let mut taken = None;
        Modes::with(|modes| {
            if let Some((_, memory, calls)) = modes.iter_mut().find(|(n, _, _)| *n == raw) {
                if *calls > 0 {
                    *calls -= 1;
                    taken = Some(*memory);
                }
            }
        });
        taken
    }

    fn remember(raw: RawFd, mode: OpenMode, flags: StatusFlags) {
        let memory = if Modes::buffered(&mode) {
            Some(Memory::Buffered(mode))
        } else if mode.recognized_by(flags) {
            Some(Memory::Direct(mode, flags))
        } else {
            None
        };
        Modes::with(|modes| {
            modes.retain(|(n, _, _)| *n != raw);
            if let Some(memory) = memory {
                if modes.len() == REMEMBERED_MODES {
                    modes.remove(0);
                }
                modes.push((raw, memory, TRUSTED_CALLS));
            }
        });
    }

    fn forget(raw: RawFd) {
        Modes::with(|modes| modes.retain(|(n, _, _)| *n != raw));
    }

    /// Runs `f` on this thread's memory, or not at all while it is not available (the
    /// thread's locals torn down, or a call from a signal handler inside this thread's own).
    fn with(f: impl FnOnce(&mut Vec<(RawFd, Memory, u32)>)) {
        let _ = MODES.try_with(|cell| {
            if let Ok(mut modes) = cell.try_borrow_mut() {
                f(&mut modes);
            }
        });
    }
}

/// The copies of caller descriptors that requests in flight hold (worker pool, poller, a
/// ring's pipes and sockets), with the mode learnt when each was made. While one is alive,
/// a later call on the same number that still names the same open file (`kcmp`, one
/// system call, instead of `fcntl` + `fstat` + `dup` + `close`) takes that copy and mode
/// again; a call that takes a remembered buffered mode unconfirmed offers the copy to
/// its requests, one of which, going to a worker, takes it if the number still names its
/// file. Only weak references are kept: a copy is closed when its last request
/// completes, as without this memory, so a file the caller closed is never held open by
/// it. The mode is the one of the open file when the copy was made: a later
/// `fcntl(F_SETFL)` toggling `O_DIRECT` on it is seen once its requests in flight are
/// done.
///
/// The memory is the submitting thread's own: threads submitting at once (to one context
/// or many) share no lock and no cache line for it. A thread that submits on a number
/// another thread's requests hold takes a copy of its own, as without this memory. Where
/// `kcmp` is not allowed (Docker's default seccomp profile), no copy compares equal and
/// every call checks the number afresh, as without this memory.
struct Copies;

/// How many copies a thread remembers (the oldest is forgotten first).
const REMEMBERED_COPIES: usize = 16;

thread_local! {
    static COPIES: RefCell<Vec<(RawFd, Weak<File>, OpenMode)>> = const { RefCell::new(Vec::new()) };
}

impl Copies {
    /// The live copy this thread remembers for `raw`, with its mode; whether `raw` still
    /// names its file is the caller's to check.
    fn live(raw: RawFd) -> Option<(Arc<File>, OpenMode)> {
        Copies::with(|copies| {
            let (_, weak, mode) = copies.iter().find(|(n, _, _)| *n == raw)?;
            Some((weak.upgrade()?, *mode))
        })?
    }

    /// Whether `raw` still names `copy`'s open file.
    fn still_named(raw: RawFd, copy: &File) -> bool {
        // SAFETY: `raw` is the caller's `aio_fildes`, lent for the call (libaio's contract);
        // kcmp only compares it, and a number that names nothing compares unequal.
        unsafe { names_same_file(raw, copy.as_fd()) }
    }

    fn remember(raw: RawFd, copy: &Arc<File>, mode: OpenMode) {
        Copies::with(|copies| {
            copies.retain(|(n, weak, _)| *n != raw && weak.strong_count() > 0);
            if copies.len() == REMEMBERED_COPIES {
                copies.remove(0);
            }
            copies.push((raw, Arc::downgrade(copy), mode));
        });
    }

    /// Runs `f` on this thread's memory; `None` while it is not available (the thread's
    /// locals torn down, or an io_submit from a signal handler that interrupted this
    /// thread's own): the call then goes without it.
    fn with<R>(f: impl FnOnce(&mut Vec<(RawFd, Weak<File>, OpenMode)>) -> R) -> Option<R> {
        COPIES
            .try_with(|cell| cell.try_borrow_mut().ok().map(|mut copies| f(&mut copies)))
            .ok()
            .flatten()
    }
}

fn decode(
    context: &Context,
    iocb: &Iocb,
    user_iocb: usize,
    files: &mut Files,
) -> Result<RawParts, Errno> {
    let opcode = Opcode::from_raw(iocb.aio_lio_opcode);
    // Plain: no RWF_* flags. An eventfd (QEMU signals one with every request) does not
    // stop a remembered mode: its copy, made next for one the context does not know yet,
    // is placed above the program's numbers (`sys/fd.rs`), so it does not take the number
    // of an fd the caller closed, which the mode would then wrongly vouch for. Only with no
    // number free up there could it, as for every descriptor the library keeps.
    let plain = iocb.aio_rw_flags == 0;
    let resolved = files.resolve(iocb.aio_fildes, opcode, plain)?;
    let (fd, mode) = (Arc::clone(&resolved.fd), resolved.mode);
    let remembered = resolved.known == Known::Remembered;
    let resfd = if iocb.aio_flags & abi::IOCB_FLAG_RESFD != 0 {
        Some(files.eventfd(context, iocb.aio_resfd)?)
    } else {
        None
    };
    // Written even when it is 0 already, as the kernel's put_user: a read-only iocb is
    // EFAULT. A guarded store costs no system call.
    user::write(user_iocb + AIO_KEY_OFFSET, &abi::KIOCB_KEY)?;
    let opcode = opcode.ok_or(libc::EINVAL)?;
    let mut parts = RawParts {
        opcode,
        fd,
        offset: iocb.aio_offset,
        segments: Vec::new(),
        poll_events: 0,
        rw_flags: RwFlags::empty(),
        data: iocb.aio_data,
        obj: user_iocb as u64,
        resfd,
        mode: None,
        mode_remembered: remembered,
    };
    match opcode {
        Opcode::Pread | Opcode::Pwrite | Opcode::Preadv | Opcode::Pwritev => {
            parts.rw_flags = rw_flags(iocb, mode, opcode)?;
            parts.mode = Some(mode);
            parts.segments = if matches!(opcode, Opcode::Preadv | Opcode::Pwritev) {
                iovec_segments(iocb)?
            } else {
                vec![single_segment(iocb)?]
            };
            if iocb.aio_offset < 0 {
                return Err(libc::EINVAL);
            }
        }
        Opcode::Fsync | Opcode::Fdsync => {
            if iocb.aio_buf != 0
                || iocb.aio_offset != 0
                || iocb.aio_nbytes != 0
                || iocb.aio_rw_flags != 0
            {
                return Err(libc::EINVAL);
            }
        }
        Opcode::Poll => {
            let events = u16::try_from(iocb.aio_buf).map_err(|_| libc::EINVAL)?;
            if iocb.aio_offset != 0 || iocb.aio_nbytes != 0 || iocb.aio_rw_flags != 0 {
                return Err(libc::EINVAL);
            }
            parts.poll_events = events;
        }
        Opcode::Noop => {}
    }
    Ok(parts)
}

/// The `RWF_*` flags of a read or write. Bits aioctx does not know are `EOPNOTSUPP`, after
/// the file's mode has been checked (`EBADF` comes first, as for known flags).
fn rw_flags(iocb: &Iocb, mode: OpenMode, opcode: Opcode) -> Result<RwFlags, Errno> {
    if let Some(flags) = RwFlags::from_bits(iocb.aio_rw_flags as u32) {
        return Ok(flags);
    }
    if (opcode.is_read() && !mode.readable) || (opcode.is_write() && !mode.writable) {
        return Err(libc::EBADF);
    }
    Err(libc::EOPNOTSUPP)
}

fn single_segment(iocb: &Iocb) -> Result<RawMem, Errno> {
    let address = iocb.aio_buf as usize;
    let len = (iocb.aio_nbytes as usize).min(MAX_RW_COUNT);
    if !user::access_ok(address, len) {
        return Err(libc::EFAULT);
    }
    // SAFETY: libaio's contract, as the kernel's: the caller keeps the buffer valid until
    // the request's event is delivered. A bad address inside the user half fails the I/O
    // with EFAULT in the event (the engines pass it to syscalls, never dereference it).
    Ok(unsafe { RawMem::new(address as *mut u8, len) })
}

/// The segments of a vectored request. The iovec array is copied now: the caller may reuse
/// it once submit returns.
fn iovec_segments(iocb: &Iocb) -> Result<Vec<RawMem>, Errno> {
    if iocb.aio_nbytes > UIO_MAXIOV {
        return Err(libc::EINVAL);
    }
    let iovecs: Vec<libc::iovec> =
        user::read_slice(iocb.aio_buf as usize, iocb.aio_nbytes as usize)?;
    if iovecs.iter().any(|iov| (iov.iov_len as isize) < 0) {
        return Err(libc::EINVAL);
    }
    let mut total = 0;
    let mut segments = Vec::with_capacity(iovecs.len());
    for iov in iovecs {
        if !user::access_ok(iov.iov_base as usize, iov.iov_len) {
            return Err(libc::EFAULT);
        }
        let len = iov.iov_len.min(MAX_RW_COUNT - total);
        total += len;
        // SAFETY: as in `single_segment`.
        segments.push(unsafe { RawMem::new(iov.iov_base.cast(), len) });
    }
    Ok(segments)
}
