//! What a request is: an opcode, the file it holds open, the memory it owns or was lent,
//! an offset, flags, and the caller's tags that travel to its event.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::buf::{Buf, Buffers, IoBuf, IoBufMut};
use crate::sys::abi;
use crate::sys::fd::{dup_raw, open_mode_of, same_file, OpenMode};
use crate::sys::mem::SharedMem;

/// The AIO opcodes aioctx executes (the kernel's `IOCB_CMD_*` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Opcode {
    /// Read into one buffer (`IOCB_CMD_PREAD`).
    Pread = abi::IOCB_CMD_PREAD,
    /// Write from one buffer (`IOCB_CMD_PWRITE`).
    Pwrite = abi::IOCB_CMD_PWRITE,
    /// Flush data and metadata (`IOCB_CMD_FSYNC`).
    Fsync = abi::IOCB_CMD_FSYNC,
    /// Flush data (`IOCB_CMD_FDSYNC`).
    Fdsync = abi::IOCB_CMD_FDSYNC,
    /// Wait for readiness events (`IOCB_CMD_POLL`).
    Poll = abi::IOCB_CMD_POLL,
    /// Completes with 0 without touching any file (the kernel rejects it; aioctx accepts it
    /// so that pure overhead can be measured).
    Noop = abi::IOCB_CMD_NOOP,
    /// Read into several buffers (`IOCB_CMD_PREADV`).
    Preadv = abi::IOCB_CMD_PREADV,
    /// Write from several buffers (`IOCB_CMD_PWRITEV`).
    Pwritev = abi::IOCB_CMD_PWRITEV,
}

impl Opcode {
    /// The opcode for a raw `aio_lio_opcode`, or None if aioctx does not know it.
    pub fn from_raw(raw: u16) -> Option<Opcode> {
        Some(match raw {
            abi::IOCB_CMD_PREAD => Opcode::Pread,
            abi::IOCB_CMD_PWRITE => Opcode::Pwrite,
            abi::IOCB_CMD_FSYNC => Opcode::Fsync,
            abi::IOCB_CMD_FDSYNC => Opcode::Fdsync,
            abi::IOCB_CMD_POLL => Opcode::Poll,
            abi::IOCB_CMD_NOOP => Opcode::Noop,
            abi::IOCB_CMD_PREADV => Opcode::Preadv,
            abi::IOCB_CMD_PWRITEV => Opcode::Pwritev,
            _ => return None,
        })
    }

    /// Whether the opcode reads the file into memory.
    pub fn is_read(self) -> bool {
        matches!(self, Opcode::Pread | Opcode::Preadv)
    }

    /// Whether the opcode writes memory to the file.
    pub fn is_write(self) -> bool {
        matches!(self, Opcode::Pwrite | Opcode::Pwritev)
    }

    /// Whether the opcode flushes the file.
    pub fn is_sync(self) -> bool {
        matches!(self, Opcode::Fsync | Opcode::Fdsync)
    }
}

/// `aio_rw_flags`: the `RWF_*` flags of preadv2/pwritev2, for reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RwFlags(u32);

impl RwFlags {
    /// `RWF_HIPRI`: polled, high-priority I/O.
    pub const HIPRI: RwFlags = RwFlags(libc::RWF_HIPRI as u32);
    /// `RWF_DSYNC`: this write as with `O_DSYNC`.
    pub const DSYNC: RwFlags = RwFlags(libc::RWF_DSYNC as u32);
    /// `RWF_SYNC`: this write as with `O_SYNC`.
    pub const SYNC: RwFlags = RwFlags(libc::RWF_SYNC as u32);
    /// `RWF_NOWAIT`: fail with `EAGAIN` instead of blocking.
    pub const NOWAIT: RwFlags = RwFlags(libc::RWF_NOWAIT as u32);
    /// `RWF_APPEND`: this write appends, as with `O_APPEND`.
    pub const APPEND: RwFlags = RwFlags(libc::RWF_APPEND as u32);
    /// Every flag aioctx knows.
    pub const ALL: RwFlags =
        RwFlags(Self::HIPRI.0 | Self::DSYNC.0 | Self::SYNC.0 | Self::NOWAIT.0 | Self::APPEND.0);

    /// No flags.
    pub const fn empty() -> RwFlags {
        RwFlags(0)
    }

    /// The flags for raw bits, or None if a bit is not a known `RWF_*` flag.
    pub fn from_bits(bits: u32) -> Option<RwFlags> {
        (bits & !Self::ALL.0 == 0).then_some(RwFlags(bits))
    }

    /// The flags as the kernel's `RWF_*` bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag of `other` is set here.
    pub const fn contains(self, other: RwFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for RwFlags {
    type Output = RwFlags;
    fn bitor(self, rhs: RwFlags) -> RwFlags {
        RwFlags(self.0 | rhs.0)
    }
}

/// One I/O request, built by a Rust caller or decoded from a C iocb.
///
/// ```
/// # use std::sync::Arc;
/// use aioctx::Request;
/// let file = Arc::new(std::fs::File::open("/etc/hostname")?);
/// let read = Request::read(file, vec![0u8; 4096], 0).data(7);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Request {
    pub(crate) opcode: Opcode,
    pub(crate) file: Option<Arc<File>>,
    /// A C caller's descriptor, in place of `file`, valid only until submit returns: an
    /// engine that keeps the request beyond that calls `hold_file` first.
    pub(crate) lent: Option<Arc<LentFd>>,
    pub(crate) offset: i64,
    pub(crate) buffers: Buffers,
    pub(crate) poll_events: u16,
    pub(crate) rw_flags: RwFlags,
    pub(crate) data: u64,
    pub(crate) obj: Option<u64>,
    pub(crate) resfd: Option<Arc<File>>,
    /// The file's mode, learnt by submit's checks, for the engines' choices.
    pub(crate) mode: OpenMode,
    /// Whether `mode` is already known (the C ABI learns it once per file and batch), so
    /// submit's checks do not ask the kernel again.
    pub(crate) mode_known: bool,
    /// Whether `mode` is what the lent number's file had at an earlier call, taken on trust
    /// until a transfer confirms it (`inline::on_remembered_mode`).
    pub(crate) mode_remembered: bool,
    /// Whether the inline attempt was made already, on the mode the request has (see
    /// `inline::on_remembered_mode`): the engine goes straight to its asynchronous path.
    pub(crate) inline_tried: bool,
}

impl Request {
    fn new(opcode: Opcode, file: Option<Arc<File>>, buffers: Buffers, offset: i64) -> Request {
        Request {
            opcode,
            file,
            lent: None,
            offset,
            buffers,
            poll_events: 0,
            rw_flags: RwFlags::empty(),
            data: 0,
            obj: None,
            resfd: None,
            mode: OpenMode::default(),
            mode_known: false,
            mode_remembered: false,
            inline_tried: false,
        }
    }

    /// Reads up to `buf.bytes_total()` bytes at `offset` into `buf` (for a `Vec`, its
    /// whole capacity); the completion hands `buf` back with the bytes read initialized.
    pub fn read<B: IoBufMut>(file: Arc<File>, buf: B, offset: u64) -> Request {
        let buffers = Buffers::Owned(Buf::filled(vec![buf]));
        Request::new(Opcode::Pread, Some(file), buffers, offset as i64)
    }

    /// Writes the initialized bytes of `buf` (`buf.bytes_init()`) at `offset`.
    pub fn write<B: IoBuf>(file: Arc<File>, buf: B, offset: u64) -> Request {
        let buffers = Buffers::Owned(Buf::sent(vec![buf]));
        Request::new(Opcode::Pwrite, Some(file), buffers, offset as i64)
    }

    /// Reads into each buffer in turn, starting at `offset`.
    pub fn readv<B: IoBufMut>(file: Arc<File>, bufs: Vec<B>, offset: u64) -> Request {
        let buffers = Buffers::Owned(Buf::filled(bufs));
        Request::new(Opcode::Preadv, Some(file), buffers, offset as i64)
    }

    /// Writes each buffer in turn, starting at `offset`.
    pub fn writev<B: IoBuf>(file: Arc<File>, bufs: Vec<B>, offset: u64) -> Request {
        let buffers = Buffers::Owned(Buf::sent(bufs));
        Request::new(Opcode::Pwritev, Some(file), buffers, offset as i64)
    }

    /// Reads into `range` of shared memory the caller keeps (`EINVAL` if the range is
    /// outside it). Nothing comes back with the event: the memory stays the caller's.
    pub fn read_shared(
        file: Arc<File>,
        mem: &Arc<SharedMem>,
        range: Range<usize>,
        offset: u64,
    ) -> io::Result<Request> {
        Request::shared(Opcode::Pread, file, mem, range, offset)
    }

    /// Writes `range` of shared memory the caller keeps (`EINVAL` if outside it).
    pub fn write_shared(
        file: Arc<File>,
        mem: &Arc<SharedMem>,
        range: Range<usize>,
        offset: u64,
    ) -> io::Result<Request> {
        Request::shared(Opcode::Pwrite, file, mem, range, offset)
    }

    fn shared(
        opcode: Opcode,
        file: Arc<File>,
        mem: &Arc<SharedMem>,
        range: Range<usize>,
        offset: u64,
    ) -> io::Result<Request> {
        if range.start > range.end || range.end > mem.len() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let buffers = Buffers::Shared(Arc::clone(mem), range);
        Ok(Request::new(opcode, Some(file), buffers, offset as i64))
    }

    /// Flushes the file's data and metadata.
    pub fn fsync(file: Arc<File>) -> Request {
        Request::new(Opcode::Fsync, Some(file), Buffers::None, 0)
    }

    /// Flushes the file's data.
    pub fn fdsync(file: Arc<File>) -> Request {
        Request::new(Opcode::Fdsync, Some(file), Buffers::None, 0)
    }

    /// Completes when the file is ready for `events` (`POLLIN`, ...); the result is the
    /// ready mask.
    pub fn poll(file: Arc<File>, events: u16) -> Request {
        let mut request = Request::new(Opcode::Poll, Some(file), Buffers::None, 0);
        request.poll_events = events;
        request
    }

    /// Completes with 0, touching nothing.
    pub fn noop() -> Request {
        Request::new(Opcode::Noop, None, Buffers::None, 0)
    }

    /// The caller's tag, returned in the completion's `data`; aioctx gives it no meaning.
    pub fn data(mut self, data: u64) -> Request {
        self.data = data;
        self
    }

    /// The request's raw identity (the event's `obj`, the key `cancel` looks for), for the
    /// C ABI; Rust requests are numbered by submit.
    #[doc(hidden)]
    pub fn obj(mut self, obj: u64) -> Request {
        self.obj = Some(obj);
        self
    }

    /// `RWF_*` flags for a read or write.
    pub fn rw_flags(mut self, flags: RwFlags) -> Request {
        self.rw_flags = flags;
        self
    }

    /// An eventfd to increment once the event is in the ring (`IOCB_FLAG_RESFD`).
    pub fn eventfd(mut self, eventfd: Arc<File>) -> Request {
        self.resfd = Some(eventfd);
        self
    }

    /// The request's identity: `obj` if set, else `data`.
    pub fn key(&self) -> u64 {
        self.obj.unwrap_or(self.data)
    }

    /// The events a POLL watches and reports. The kernel's `aio_poll` completes with the
    /// key of the wake-up that readied the file, unfiltered: a pipe, socket or eventfd that
    /// becomes readable wakes with `POLLIN | POLLRDNORM`, writable with
    /// `POLLOUT | POLLWRNORM` (python-libaio's tests expect exactly that), plus the
    /// always-reported error and hang-up. Engines watch this mask so they report the same.
    pub(crate) fn poll_mask(&self) -> u16 {
        let requested = self.poll_events;
        let mut events = requested | libc::POLLERR as u16 | libc::POLLHUP as u16;
        if requested & libc::POLLIN as u16 != 0 {
            events |= libc::POLLRDNORM as u16;
        }
        if requested & libc::POLLOUT as u16 != 0 {
            events |= libc::POLLWRNORM as u16;
        }
        events
    }

    /// The request's operation.
    pub fn opcode(&self) -> Opcode {
        self.opcode
    }

    /// The descriptor the request runs on: its own file's, or the one it was lent.
    pub(crate) fn raw_fd(&self) -> Option<RawFd> {
        match (&self.file, &self.lent) {
            (Some(file), _) => Some(file.as_raw_fd()),
            (None, Some(lent)) => Some(lent.raw),
            (None, None) => None,
        }
    }

    /// Makes the request hold its file open itself (a copy of a lent descriptor), for an
    /// engine that keeps it after submit returns: a worker, the poller, a ring that may
    /// submit it again. After this the caller may close or reuse the number.
    pub(crate) fn hold_file(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            if let Some(lent) = &self.lent {
                self.file = Some(lent.copy()?);
                self.lent = None;
            }
        }
        Ok(())
    }

    /// Looks at the lent number's file afresh, in place of a remembered mode; the number is
    /// marked refuted if the file's mode is not the one remembered, or it names none. Runs
    /// within the submit call, while the number is lent.
    pub(crate) fn relearn_mode(&mut self) -> io::Result<()> {
        self.mode_remembered = false;
        let Some(lent) = &self.lent else {
            return Ok(());
        };
        // The number is lent for the submit call this runs in (libaio's contract).
        match open_mode_of(lent.raw) {
            Ok(mode) if mode == self.mode => Ok(()),
            Ok(mode) => {
                lent.refuted.store(true, Ordering::Relaxed);
                self.mode = mode;
                Ok(())
            }
            Err(error) => {
                lent.refuted.store(true, Ordering::Relaxed);
                Err(error)
            }
        }
    }

    /// Gives back the buffer of a request that was never accepted, as the type that went
    /// in (None if it had none, or `B` is another type).
    pub fn into_buf<B: IoBuf>(self) -> Option<B> {
        self.into_bufs().and_then(|bufs| bufs.into_iter().next())
    }

    /// Gives back all the buffers of a request that was never accepted, in order.
    pub fn into_bufs<B: IoBuf>(self) -> Option<Vec<B>> {
        let owned = self.buffers.into_owned().into_iter().next()?;
        owned.into_typed()
    }
}

/// A descriptor number a C caller named in an iocb, lent for the duration of its submit
/// call: once the call returns the number may name another file, or none. What the kernel
/// runs before submit returns (a transfer the page cache serves, an iocb or SQE it takes,
/// holding its own reference) needs no copy; a request kept beyond the call takes one
/// (`Request::hold_file`), and one copy serves every request of the call on that number.
#[derive(Debug)]
pub struct LentFd {
    raw: RawFd,
    copy: Mutex<Option<Arc<File>>>,
    /// A copy an earlier call made of the number's file, still held by its requests: taken
    /// as this call's copy if the number still names that file (one `kcmp` instead of a
    /// `dup` and, later, a `close`).
    candidate: Weak<File>,
    refuted: AtomicBool,
}

impl LentFd {
    /// The caller's number `raw`, which must stay open until the submit call returns.
    ///
    /// # Safety
    ///
    /// `raw` is a descriptor the caller lent for the submit call (libaio's contract for
    /// `aio_fildes`: open until `io_submit` returns), whose mode the caller learnt
    /// (`open_mode_raw`) or remembers from an earlier call (`RawParts::mode_remembered`,
    /// which the library confirms before it relies on it). Requests use the number
    /// directly while the call runs; one that names nothing fails their calls `EBADF`.
    pub unsafe fn new(raw: RawFd) -> LentFd {
        // SAFETY: the caller's promise, passed on.
        unsafe { LentFd::with_candidate(raw, Weak::new()) }
    }

    /// As [`LentFd::new`], with `candidate`, a copy an earlier call made of the file the
    /// number named then, which a request that needs a copy takes if the number still
    /// names that open file.
    ///
    /// # Safety
    ///
    /// As [`LentFd::new`].
    pub unsafe fn with_candidate(raw: RawFd, candidate: Weak<File>) -> LentFd {
        LentFd {
            raw,
            copy: Mutex::new(None),
            candidate,
            refuted: AtomicBool::new(false),
        }
    }

    /// The number lent, with `copy`, a descriptor of the very open file it names now (the
    /// caller checked), as the copy its requests will hold.
    ///
    /// # Safety
    ///
    /// As [`LentFd::new`]: `raw` is lent for the submit call, and names `copy`'s open file
    /// (the caller checked with `names_same_file`).
    pub unsafe fn with_copy(raw: RawFd, copy: Arc<File>) -> LentFd {
        LentFd {
            raw,
            copy: Mutex::new(Some(copy)),
            candidate: Weak::new(),
            refuted: AtomicBool::new(false),
        }
    }

    /// The number lent.
    pub fn raw(&self) -> RawFd {
        self.raw
    }

    /// Whether a request found that the number no longer names a file of the mode its
    /// caller remembered ([`RawParts::mode_remembered`]): the memory is to be dropped.
    pub fn refuted(&self) -> bool {
        self.refuted.load(Ordering::Relaxed)
    }

    /// The copy requests of the call took, if any did.
    pub fn copied(&self) -> Option<Arc<File>> {
        crate::sync::lock(&self.copy).clone()
    }

    /// A descriptor of the same open file that the request owns (made once, shared).
    fn copy(&self) -> io::Result<Arc<File>> {
        let mut copy = crate::sync::lock(&self.copy);
        if let Some(file) = &*copy {
            return Ok(Arc::clone(file));
        }
        let file = match self.candidate.upgrade() {
            Some(candidate) if same_file(self.raw, candidate.as_fd()) => candidate,
            _ => Arc::new(File::from(dup_raw(self.raw)?)),
        };
        *copy = Some(Arc::clone(&file));
        Ok(file)
    }
}

/// Builds requests from parts the C ABI has already read and checked; lent memory makes
/// this the caller's promise, see `RawMem::new`. Reached only through `crate::ffi`.
pub struct RawParts {
    /// The operation.
    pub opcode: Opcode,
    /// The caller's descriptor (see [`LentFd`]).
    pub fd: Arc<LentFd>,
    /// The file offset (`aio_offset`).
    pub offset: i64,
    /// The caller's memory: one segment, or one per iovec; none for the others.
    pub segments: Vec<crate::sys::mem::RawMem>,
    /// The poll mask of a poll request (`aio_buf`'s low 16 bits).
    pub poll_events: u16,
    /// The `RWF_*` flags of a read or write.
    pub rw_flags: RwFlags,
    /// The caller's tag (`aio_data`), handed back in the event.
    pub data: u64,
    /// The request's identity (the caller's iocb address), for cancel.
    pub obj: u64,
    /// The eventfd to signal on completion (`aio_resfd`), already resolved.
    pub resfd: Option<Arc<File>>,
    /// The file's mode, if the caller already learnt it of this very open file.
    pub mode: Option<OpenMode>,
    /// Whether `mode` is only remembered from an earlier call on the number, not learnt of
    /// the file it names now: the library then trusts it only as far as the transfer
    /// proves it, and looks again otherwise ([`LentFd::refuted`] tells the caller).
    pub mode_remembered: bool,
}

impl From<RawParts> for Request {
    fn from(parts: RawParts) -> Request {
        let buffers = if parts.segments.is_empty() {
            Buffers::None
        } else {
            Buffers::Lent(parts.segments)
        };
        Request {
            opcode: parts.opcode,
            file: None,
            lent: Some(parts.fd),
            offset: parts.offset,
            buffers,
            poll_events: parts.poll_events,
            rw_flags: parts.rw_flags,
            data: parts.data,
            obj: Some(parts.obj),
            resfd: parts.resfd,
            mode: parts.mode.unwrap_or_default(),
            mode_known: parts.mode.is_some(),
            mode_remembered: parts.mode.is_some() && parts.mode_remembered,
            inline_tried: false,
        }
    }
}
