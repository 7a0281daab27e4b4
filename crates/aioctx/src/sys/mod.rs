//! The raw edge of the library: kernel byte layouts, memory the engines write into, the
//! file-descriptor and AIO syscalls, fork handling, and the few host calls the command
//! needs. The only module (with the engines) that holds `unsafe` code.

use std::io;

pub mod abi;
pub mod aio;
pub(crate) mod clock;
pub mod fd;
#[doc(hidden)]
pub mod fork;
pub mod host;
pub mod mem;

/// A raw syscall's result: the value, or the `errno` it left as an error.
pub(crate) fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A timeout as the kernel takes it (seconds saturate; a `Duration`'s nanoseconds fit).
pub(crate) fn timespec(t: std::time::Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    }
}
