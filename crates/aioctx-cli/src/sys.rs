//! The command's raw edge, now safe functions of the library: page-cache control and
//! residency, CPU time, free space, and the kernel's own AIO as the baseline.

pub use aioctx::ffi::{cached_bytes, cpu_time, drop_cached_pages, free_space};
pub use aioctx::ffi::{KernelAio, KernelOp};
