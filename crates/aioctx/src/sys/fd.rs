//! Thin, checked wrappers over the file-descriptor syscalls the library needs.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::Duration;

use super::check;

/// A nonblocking, close-on-exec eventfd, numbered in the library's own range.
pub fn eventfd() -> io::Result<File> {
    // SAFETY: eventfd has no memory arguments; the result is checked.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) }.into())?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    Ok(File::from(into_own_range(fd)))
}

/// The lowest number the library gives the descriptors it keeps (eventfds, io_uring
/// instances, copies of a caller's fds). A program numbers its own from 3 up, so a stray
/// close or `dup2` of a low number (a double close, a close loop over the first few
/// hundred, a daemon's cleanup) hits its own descriptors, not one a request or a waiting
/// thread relies on; the kernel's contexts are no descriptors at all. Half the soft
/// `RLIMIT_NOFILE`, at most 512, read once: the fd table the kernel grows for it stays a
/// few KiB. A program that later lowers its limit under it, or fills the numbers above,
/// gets the lowest free number instead, as without this.
fn own_floor() -> RawFd {
    static FLOOR: OnceLock<RawFd> = OnceLock::new();
    *FLOOR.get_or_init(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the live local.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return 0;
        }
        (limit.rlim_cur / 2).min(512) as RawFd
    })
}

/// A close-on-exec copy of the number `fd` at the lowest free number from `floor` up.
fn dup_from(fd: RawFd, floor: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an arbitrary number either fails (EBADF for a number that
    // names nothing) or returns a new descriptor that we own.
    let new = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor) }.into())?;
    // SAFETY: `new` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new as RawFd) })
}

/// Whether F_DUPFD's error says only that the library's range has no number now: the
/// floor is at or past the limit, or every number above it is taken.
fn own_range_full(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EINVAL | libc::EMFILE))
}

/// `fd`, moved into the library's own range if it is below it and a number is free there;
/// else `fd` itself.
pub(crate) fn into_own_range(fd: OwnedFd) -> OwnedFd {
    if fd.as_raw_fd() >= own_floor() {
        return fd;
    }
    dup_from(fd.as_raw_fd(), own_floor()).unwrap_or(fd)
}

/// Makes `fd` refer to a fresh eventfd (same number, close-on-exec): for a forked child
/// whose inherited eventfd is shared with its parent.
pub(crate) fn replace_with_new_eventfd(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fresh = eventfd()?;
    // SAFETY: dup3 onto a descriptor we own replaces the file it refers to; `fresh` is
    // closed when it drops.
    check(unsafe { libc::dup3(fresh.as_raw_fd(), fd.as_raw_fd(), libc::O_CLOEXEC) }.into())?;
    Ok(())
}

/// Adds `n` to an eventfd's counter (an overflowing counter is left as it is: it is
/// already readable).
pub fn eventfd_signal(fd: BorrowedFd<'_>, n: u64) {
    let bytes = n.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live local buffer.
    unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
}

/// Resets a nonblocking eventfd's counter to zero.
pub fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut bytes = [0u8; 8];
    // SAFETY: reads at most 8 bytes into a live local buffer.
    unsafe { libc::read(fd.as_raw_fd(), bytes.as_mut_ptr().cast(), bytes.len()) };
}

/// How a wait for readability ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Wait {
    Ready,
    TimedOut,
}

/// Waits until `fd` (or `also`) is readable or `timeout` passes (None: no limit). With
/// `sigmask`, the kernel installs that signal mask for the duration of the wait atomically
/// (ppoll), so a signal it unblocks interrupts the wait with `EINTR` even if it was already
/// pending.
pub fn wait_readable(
    fd: BorrowedFd<'_>,
    also: Option<BorrowedFd<'_>>,
    timeout: Option<Duration>,
    sigmask: Option<u64>,
) -> io::Result<Wait> {
    let mut pfds = [fd, also.unwrap_or(fd)].map(|fd| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    let nfds = if also.is_some() { 2 } else { 1 };
    let ts = timeout.map(super::timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    let mask = sigmask.unwrap_or(0);
    let mask_ptr = if sigmask.is_some() {
        &mask as *const u64
    } else {
        std::ptr::null()
    };
    // SAFETY: every pointer refers to a live local; the kernel sigset is 8 bytes.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_ppoll,
            pfds.as_mut_ptr(),
            nfds as libc::nfds_t,
            ts_ptr,
            mask_ptr,
            std::mem::size_of::<u64>(),
        )
    };
    Ok(if check(ret)? == 0 {
        Wait::TimedOut
    } else {
        Wait::Ready
    })
}

/// What submit needs to know about an open file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenMode {
    /// Open for reading.
    pub readable: bool,
    /// Open for writing.
    pub writable: bool,
    /// Opened with `O_DIRECT`.
    pub direct: bool,
    /// A regular file (not a pipe, socket, FIFO or device).
    pub regular: bool,
    /// Opened with `O_SYNC` or `O_DSYNC`: every write waits for the device.
    pub sync: bool,
    /// A block device.
    pub block_device: bool,
    /// A directory, which has no read or write (the kernel's missing `read_iter`).
    pub directory: bool,
}

/// The access mode, `O_DIRECT` and file type of an open file.
pub fn open_mode(fd: BorrowedFd<'_>) -> io::Result<OpenMode> {
    open_mode_of(fd.as_raw_fd())
}

/// `open_mode` of the file a raw descriptor number names now (`EBADF` if none).
///
/// # Safety
///
/// `fd` is a number the caller may use for the call: one it owns or was lent (libaio's
/// contract for `aio_fildes`), or one that names no open file (reported as `EBADF`). It
/// only queries the file (`fcntl(F_GETFL)`, `fstat`), never reads or writes through it.
pub unsafe fn open_mode_raw(fd: RawFd) -> io::Result<OpenMode> {
    open_mode_of(fd)
}

/// `open_mode_raw` for the crate, which only queries numbers it was given (or lent).
pub(crate) fn open_mode_of(fd: RawFd) -> io::Result<OpenMode> {
    mode_and_flags_of(fd).map(|(mode, _)| mode)
}

fn mode_and_flags_of(fd: RawFd) -> io::Result<(OpenMode, StatusFlags)> {
    let flags = status_flags_of(fd)?;
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the stat buffer we pass; it is read only after success.
    check(unsafe { libc::fstat(fd, stat.as_mut_ptr()) }.into())?;
    // SAFETY: fstat succeeded, so the buffer is initialised.
    let stat = unsafe { stat.assume_init() };
    Ok((OpenMode::of(flags, stat.st_mode), flags))
}

/// The status flags (`fcntl(F_GETFL)`) of the file a raw descriptor number names now
/// (`EBADF` if none): the access mode, `O_DIRECT`, `O_SYNC` and the rest of what `open`
/// and `F_SETFL` set.
///
/// # Safety
///
/// As [`open_mode_raw`]: `fd` is a number the caller may use for the call, or one that
/// names no open file; it is only queried.
pub unsafe fn status_flags_raw(fd: RawFd) -> io::Result<StatusFlags> {
    status_flags_of(fd)
}

fn status_flags_of(fd: RawFd) -> io::Result<StatusFlags> {
    // SAFETY: F_GETFL takes no pointer argument; a number that names nothing is EBADF.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) }.into())? as i32;
    Ok(StatusFlags(flags))
}

/// `O_LARGEFILE` as the kernel shows it in `F_GETFL` (glibc's constant is 0 on 64-bit
/// targets, where `open` sets the bit regardless); 0 where not known here, which makes
/// no mode recognizable by its flags alone.
#[cfg(target_arch = "x86_64")]
const KERNEL_O_LARGEFILE: i32 = 0o100000;
#[cfg(target_arch = "aarch64")]
const KERNEL_O_LARGEFILE: i32 = 0o400000;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const KERNEL_O_LARGEFILE: i32 = 0;

/// An open file's status flags, as `fcntl(F_GETFL)` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusFlags(i32);

impl OpenMode {
    fn of(StatusFlags(flags): StatusFlags, st_mode: libc::mode_t) -> OpenMode {
        let access = flags & libc::O_ACCMODE;
        // An O_PATH descriptor names a file without opening it for I/O.
        let usable = flags & libc::O_PATH == 0;
        let kind = st_mode & libc::S_IFMT;
        OpenMode {
            readable: usable && (access == libc::O_RDONLY || access == libc::O_RDWR),
            writable: usable && (access == libc::O_WRONLY || access == libc::O_RDWR),
            direct: flags & libc::O_DIRECT != 0,
            regular: kind == libc::S_IFREG,
            sync: flags & libc::O_DSYNC != 0,
            block_device: kind == libc::S_IFBLK,
            directory: kind == libc::S_IFDIR,
        }
    }

    /// Whether this mode, learnt of a file whose status flags were `flags`, is the mode of
    /// any file whose flags are `flags` too, so that one `fcntl(F_GETFL)` that finds them
    /// unchanged confirms it, where learning it costs `fcntl` and `fstat`. That holds for
    /// a regular file or block device opened `O_DIRECT`: the flags give all but the file's
    /// type, and only a file `open`ed (which sets `O_LARGEFILE` on every 64-bit kernel,
    /// where `pipe2`, sockets and eventfds never have it) whose filesystem or driver does
    /// direct I/O can have `O_DIRECT` (`do_dentry_open` and `F_SETFL` refuse it elsewhere,
    /// directories and character devices included). Both such types take the same paths
    /// in every engine. One file escapes: a FIFO `open`ed and then given `O_DIRECT` by
    /// `F_SETFL` (pipes' packet mode); a number the caller closes and reuses for such a
    /// FIFO, with the same access flags, between two calls is taken for the file it named
    /// before, and its reads wait for the FIFO's writer the way the kernel's `io_submit`
    /// itself would. Callers bound that by learning the mode afresh now and then.
    pub fn recognized_by(&self, StatusFlags(flags): StatusFlags) -> bool {
        // `direct` is the flags' O_DIRECT: the mode was learnt with them.
        self.direct && (self.regular || self.block_device) && flags & KERNEL_O_LARGEFILE != 0
    }
}

/// `open_mode_raw`, with the status flags it was learnt from.
///
/// # Safety
///
/// As [`open_mode_raw`].
pub unsafe fn open_mode_and_flags_raw(fd: RawFd) -> io::Result<(OpenMode, StatusFlags)> {
    mode_and_flags_of(fd)
}

/// Duplicates a raw descriptor the caller named (close-on-exec), so a request keeps the file
/// it was submitted against even if the caller closes or reuses the number; in the library's
/// own range (see `own_floor`) while a number is free there. Crate-internal:
/// the public doors to it take the number in an `unsafe fn` (see `crate::ffi`).
pub(crate) fn dup_raw(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    match dup_from(fd, own_floor()) {
        Err(e) if own_range_full(&e) => dup_from(fd, 0),
        other => other,
    }
}

/// Whether the caller's descriptor number `raw` names the same open file as `file`
/// (`kcmp(KCMP_FILE)`). False when it does not, when `raw` names nothing, and where kcmp is
/// not available (seccomp, kernels without it): callers then treat the number as new.
///
/// # Safety
///
/// `raw` is a number the caller may use for the call (one it owns or was lent, as libaio's
/// `aio_fildes` and `aio_resfd`), or one that names nothing; it is only compared.
pub unsafe fn names_same_file(raw: RawFd, file: BorrowedFd<'_>) -> bool {
    same_file(raw, file)
}

/// `names_same_file` for the crate, which only compares numbers it was given.
/// Where kcmp is denied (`EPERM` from a seccomp filter, `ENOSYS` from a kernel built
/// without it) it is not tried again: every answer would be false, at a system call each.
pub(crate) fn same_file(raw: RawFd, file: BorrowedFd<'_>) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    const KCMP_FILE: libc::c_int = 0;
    /// Set once kcmp was refused as a call (never for a number's `EBADF`); Relaxed: a
    /// thread that misses it only makes one more refused call.
    static DENIED: AtomicBool = AtomicBool::new(false);
    if DENIED.load(Ordering::Relaxed) {
        return false;
    }
    let pid = super::fork::pid();
    // SAFETY: kcmp compares two descriptor numbers of this process and reads no memory. An
    // invalid number is EBADF, not a fault.
    let ret = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, raw, file.as_raw_fd()) };
    if ret < 0 {
        let error = io::Error::last_os_error().raw_os_error();
        if matches!(error, Some(libc::EPERM | libc::ENOSYS | libc::EACCES)) {
            DENIED.store(true, Ordering::Relaxed);
        }
    }
    ret == 0
}

/// Whether `fd` is an eventfd (the kernel's `eventfd_ctx_fdget` check).
pub fn is_eventfd(fd: BorrowedFd<'_>) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|target| target.as_os_str() == "anon_inode:[eventfd]")
        .unwrap_or(false)
}

/// Whether the number `fd` is known to name no eventfd: it names nothing, or `/proc` shows
/// a file of another kind. False where that cannot be told (no `/proc`).
pub fn names_no_eventfd(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: F_GETFD only asks about the number.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) } < 0 {
        return io::Error::last_os_error().raw_os_error() == Some(libc::EBADF);
    }
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .is_ok_and(|target| target.as_os_str() != "anon_inode:[eventfd]")
}

/// Waits without limit until one of `fds` is ready (revents filled in); `EINTR` is
/// reported to the caller.
pub fn poll(fds: &mut [libc::pollfd]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe the caller's live slice.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
    check(ret.into()).map(|n| n as usize)
}
