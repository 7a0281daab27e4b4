//! What the C ABI crate (`aioctx-libaio`), the command, the fuzz target and the tests need
//! of the library's raw edge: re-exports only, no API of its own. Not a stable surface.
//! Every function here that takes a raw descriptor number is `unsafe`: the number is one a
//! C caller lent (libaio's contract for `aio_fildes` and `aio_resfd`).

pub use crate::context::resolve_eventfd;
pub use crate::engine::kaio::{KERNEL_EVENTS, MAX_KERNEL_CONTEXTS};
pub use crate::request::{LentFd, RawParts};
pub use crate::sys::abi;
pub use crate::sys::aio::{KernelAio, KernelOp};
pub use crate::sys::fd::{
    eventfd, names_same_file, open_mode_and_flags_raw, open_mode_raw, status_flags_raw, OpenMode,
    StatusFlags,
};
pub use crate::sys::fork::{generation, hold_write_across_fork, pid};
pub use crate::sys::host::{cached_bytes, cpu_time, drop_cached_pages, free_space};
pub use crate::sys::mem::RawMem;
