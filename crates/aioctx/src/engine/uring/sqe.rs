//! A request as the kernel holds it, and the SQEs the engine builds.

use io_uring::{opcode, squeue, types};

use crate::core::Inflight;
use crate::request::{Opcode, RwFlags};

/// The opcodes the engine uses, for the probe.
pub(super) const REQUIRED_OPS: [(u8, &str); 8] = [
    (opcode::Read::CODE, "READ"),
    (opcode::Write::CODE, "WRITE"),
    (opcode::Readv::CODE, "READV"),
    (opcode::Writev::CODE, "WRITEV"),
    (opcode::Fsync::CODE, "FSYNC"),
    (opcode::PollAdd::CODE, "POLL_ADD"),
    (opcode::Nop::CODE, "NOP"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
];

/// A request while the kernel holds it; its boxed address is its SQE's `user_data`.
pub(super) struct Op {
    pub(super) inflight: Inflight,
    /// The iovec array a vectored SQE points at.
    pub(super) iovecs: Vec<libc::iovec>,
}

/// The SQE for a checked request. The entry points at memory inside `op`, which the caller
/// keeps alive until the CQE.
pub(super) fn prepare(op: &mut Op) -> squeue::Entry {
    let request = &mut op.inflight.request;
    let fd = types::Fd(request.raw_fd().unwrap_or(-1));
    // RWF_HIPRI asks for polled completion, which only an IOPOLL ring does; like the
    // kernel's own AIO, the hint is dropped rather than failing the request.
    let rw_flags = (request.rw_flags.bits() & !RwFlags::HIPRI.bits()) as i32;
    let offset = request.offset as u64;
    let segments = request.buffers.segments();
    match (request.opcode, single(&segments)) {
        (Opcode::Noop, _) => opcode::Nop::new().build(),
        (Opcode::Fsync, _) => opcode::Fsync::new(fd).build(),
        (Opcode::Fdsync, _) => opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build(),
        (Opcode::Poll, _) => opcode::PollAdd::new(fd, u32::from(request.poll_mask())).build(),
        (op_code @ (Opcode::Pread | Opcode::Pwrite), Some((ptr, len))) => {
            if op_code == Opcode::Pread {
                opcode::Read::new(fd, ptr, len)
                    .offset(offset)
                    .rw_flags(rw_flags)
                    .build()
            } else {
                opcode::Write::new(fd, ptr, len)
                    .offset(offset)
                    .rw_flags(rw_flags)
                    .build()
            }
        }
        (op_code, _) => {
            op.iovecs = segments
                .iter()
                .map(|&(base, len)| libc::iovec {
                    iov_base: base.cast(),
                    iov_len: len,
                })
                .collect();
            let iovecs = op.iovecs.as_ptr();
            let count = op.iovecs.len() as u32;
            if op_code.is_read() {
                opcode::Readv::new(fd, iovecs, count)
                    .offset(offset)
                    .rw_flags(rw_flags)
                    .build()
            } else {
                opcode::Writev::new(fd, iovecs, count)
                    .offset(offset)
                    .rw_flags(rw_flags)
                    .build()
            }
        }
    }
}

/// An async cancel of the request whose SQE carried `user_data`; its own CQE carries
/// `cancel_user_data`.
pub(super) fn cancel(user_data: u64, cancel_user_data: u64) -> squeue::Entry {
    opcode::AsyncCancel::new(user_data)
        .build()
        .user_data(cancel_user_data)
}

/// The one segment of a plain read or write, if its length fits an SQE's 32-bit `len`.
fn single(segments: &[(*mut u8, usize)]) -> Option<(*mut u8, u32)> {
    match segments {
        [(ptr, len)] => u32::try_from(*len).ok().map(|len| (*ptr, len)),
        [] => Some((std::ptr::NonNull::dangling().as_ptr(), 0)),
        _ => None,
    }
}
