//! The raw edge of the library: kernel byte layouts, memory the engines write into, and the
//! file-descriptor syscalls. The only module (with the engines) that holds `unsafe` code.

pub mod abi;
pub mod fd;
pub(crate) mod fork;
pub mod mem;
