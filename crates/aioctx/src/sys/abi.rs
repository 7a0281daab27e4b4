//! The kernel's AIO structures, byte for byte (include/uapi/linux/aio_abi.h, x86-64).
//!
//! These are shared with C callers: the C ABI reads `Iocb`s out of caller memory and hands
//! out the completion ring (`AioRingHeader` followed by `IoEvent`s) as the context handle.

/// `struct iocb`: one request as a C caller describes it (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Iocb {
    /// Returned in the event's `data`.
    pub aio_data: u64,
    /// Set to 0 (`KIOCB_KEY`) by submit; `io_cancel` requires it to be 0.
    pub aio_key: u32,
    /// `RWF_*` flags for reads and writes.
    pub aio_rw_flags: i32,
    /// `IOCB_CMD_*`.
    pub aio_lio_opcode: u16,
    /// The I/O priority, with `IOCB_FLAG_IOPRIO`.
    pub aio_reqprio: i16,
    /// The file descriptor.
    pub aio_fildes: u32,
    /// Buffer address, iovec array address, or poll events (low 16 bits).
    pub aio_buf: u64,
    /// Byte count, or iovec count for the vectored opcodes.
    pub aio_nbytes: u64,
    /// The file offset.
    pub aio_offset: i64,
    /// Reserved: must be 0.
    pub aio_reserved2: u64,
    /// `IOCB_FLAG_*`.
    pub aio_flags: u32,
    /// The eventfd signalled on completion when `IOCB_FLAG_RESFD` is set.
    pub aio_resfd: u32,
}

/// `struct io_event`: one completion (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoEvent {
    /// The iocb's `aio_data`.
    pub data: u64,
    /// The iocb's address (the request's identity).
    pub obj: u64,
    /// Bytes transferred, or a negative errno.
    pub res: i64,
    /// The second result word (0).
    pub res2: i64,
}

/// The header of the completion ring, `struct aio_ring` without its flexible array.
#[repr(C)]
#[derive(Debug)]
pub struct AioRingHeader {
    /// The context's identity.
    pub id: u32,
    /// Number of event slots that follow the header.
    pub nr: u32,
    /// Next event to reap; written by the consumer.
    pub head: u32,
    /// Next slot to fill; written by the producer.
    pub tail: u32,
    /// `AIO_RING_MAGIC`.
    pub magic: u32,
    /// `AIO_RING_COMPAT_FEATURES`.
    pub compat_features: u32,
    /// `AIO_RING_INCOMPAT_FEATURES`.
    pub incompat_features: u32,
    /// The header's size in bytes (`AIO_RING_HEADER_LEN`).
    pub header_length: u32,
}

/// The ring header's `magic`, which libaio checks before reaping in user space.
pub const AIO_RING_MAGIC: u32 = 0xa10a_10a1;
/// The ring header's `compat_features`.
pub const AIO_RING_COMPAT_FEATURES: u32 = 1;
/// The ring header's `incompat_features`.
pub const AIO_RING_INCOMPAT_FEATURES: u32 = 0;
/// The ring header's size in bytes.
pub const AIO_RING_HEADER_LEN: u32 = 32;

/// The kernel's cap on one context: `0x10000000 / sizeof(io_event)` events.
pub const MAX_NR_EVENTS: u64 = 0x1000_0000 / 32;

/// Opcode: read.
pub const IOCB_CMD_PREAD: u16 = 0;
/// Opcode: write.
pub const IOCB_CMD_PWRITE: u16 = 1;
/// Opcode: fsync.
pub const IOCB_CMD_FSYNC: u16 = 2;
/// Opcode: fdatasync.
pub const IOCB_CMD_FDSYNC: u16 = 3;
/// Opcode: poll.
pub const IOCB_CMD_POLL: u16 = 5;
/// Opcode: no-op.
pub const IOCB_CMD_NOOP: u16 = 6;
/// Opcode: vectored read.
pub const IOCB_CMD_PREADV: u16 = 7;
/// Opcode: vectored write.
pub const IOCB_CMD_PWRITEV: u16 = 8;

/// `aio_flags`: signal `aio_resfd` on completion.
pub const IOCB_FLAG_RESFD: u32 = 1 << 0;
/// `aio_flags`: `aio_reqprio` is meaningful.
pub const IOCB_FLAG_IOPRIO: u32 = 1 << 1;

/// The key every submitted iocb carries (`KIOCB_KEY`).
pub const KIOCB_KEY: u32 = 0;

/// Syscall numbers of the kernel AIO calls (x86-64 values via libc).
pub const SYS_IO_SETUP: libc::c_long = libc::SYS_io_setup;
/// The `io_destroy` syscall number.
pub const SYS_IO_DESTROY: libc::c_long = libc::SYS_io_destroy;
/// The `io_submit` syscall number.
pub const SYS_IO_SUBMIT: libc::c_long = libc::SYS_io_submit;
/// The `io_cancel` syscall number.
pub const SYS_IO_CANCEL: libc::c_long = libc::SYS_io_cancel;
/// The `io_getevents` syscall number.
pub const SYS_IO_GETEVENTS: libc::c_long = libc::SYS_io_getevents;

const _: () = assert!(std::mem::size_of::<Iocb>() == 64);
const _: () = assert!(std::mem::size_of::<IoEvent>() == 32);
const _: () = assert!(std::mem::size_of::<AioRingHeader>() == 32);
