//! Caller memory, read and written without ever faulting.
//!
//! Every pointer a C caller hands over may be NULL, -1, a kernel-half address, unmapped, or
//! read-only where a result is stored; the kernel answers all of those with `EFAULT` and so
//! must we, instead of a SIGSEGV in the caller. Cheap checks come first, with no system call
//! (the NULL page, the kernel half, addresses past the end of user space); then the copy
//! itself is fault-guarded (`fault.rs`: a plain copy whose fault becomes `EFAULT`, as the
//! kernel's `copy_from_user`), which costs no system call either. Where that guard is not
//! available (not x86-64) or would be seen (under valgrind), the copies go through
//! `process_vm_readv` / `process_vm_writev` on our own process: the kernel walks the page
//! tables and reports a bad address as an error (they are allowed by Docker's default
//! seccomp profile), at about the cost of eight trivial system calls each.

use std::mem::{size_of, MaybeUninit};

use aioctx::ffi::abi::{IoEvent, Iocb};

/// A positive errno value.
pub(crate) type Errno = i32;

/// The end of the x86-64 user address space (the kernel's `TASK_SIZE_MAX`): `access_ok`.
const USER_END: usize = 0x7fff_ffff_f000;

/// Below this, an address is in the NULL page, which the kernel never maps for a process
/// (`mmap_min_addr` is at least a page).
const NULL_PAGE_END: usize = 0x1000;

/// Whether `[addr, addr + len)` lies in the user half, as the kernel's `access_ok` checks
/// before it touches (or lends to a request) caller memory.
pub(crate) fn access_ok(addr: usize, len: usize) -> bool {
    addr.checked_add(len).is_some_and(|end| end <= USER_END)
}

/// Types every bit pattern of which is a valid value, so that bytes copied from caller
/// memory make one.
///
/// # Safety
/// Implementors must be `repr(C)` plain data with no invalid bit patterns.
pub(crate) unsafe trait Plain: Copy {}

// SAFETY: integers accept every bit pattern.
unsafe impl Plain for u8 {}
// SAFETY: as above.
unsafe impl Plain for u32 {}
// SAFETY: as above.
unsafe impl Plain for u64 {}
// SAFETY: as above.
unsafe impl Plain for usize {}
// SAFETY: all fields are integers.
unsafe impl Plain for Iocb {}
// SAFETY: all fields are integers.
unsafe impl Plain for IoEvent {}
// SAFETY: all fields are integers.
unsafe impl Plain for libc::timespec {}
// SAFETY: a raw pointer and an integer; raw pointers accept every bit pattern.
unsafe impl Plain for libc::iovec {}

#[derive(Clone, Copy)]
enum Direction {
    FromCaller,
    ToCaller,
}

/// Copies `len` bytes between our `local` memory and the caller's `remote` address.
fn copy(local: *mut u8, remote: usize, len: usize, direction: Direction) -> Result<(), Errno> {
    if len == 0 {
        return Ok(());
    }
    if remote < NULL_PAGE_END || !access_ok(remote, len) {
        return Err(libc::EFAULT);
    }
    #[cfg(target_arch = "x86_64")]
    if !crate::fault::under_valgrind() {
        crate::fault::install();
        let (dst, src) = match direction {
            Direction::FromCaller => (local, remote as *const u8),
            Direction::ToCaller => (remote as *mut u8, local.cast_const()),
        };
        // SAFETY: the guard is installed; `local` is `len` bytes of our own live memory
        // (checked by the callers' types); a fault on the caller's side becomes EFAULT.
        return if unsafe { crate::fault::copy(dst, src, len) } {
            Ok(())
        } else {
            Err(libc::EFAULT)
        };
    }
    copy_by_syscall(local, remote, len, direction)
}

/// `copy` through the kernel, which reports a bad remote address instead of faulting.
fn copy_by_syscall(
    local: *mut u8,
    remote: usize,
    len: usize,
    direction: Direction,
) -> Result<(), Errno> {
    let local = libc::iovec {
        iov_base: local.cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: remote as *mut libc::c_void,
        iov_len: len,
    };
    let pid = aioctx::ffi::pid();
    // SAFETY: `local` describes `len` bytes of our own live memory (checked by the callers'
    // types); the kernel checks `remote` and fails with EFAULT instead of faulting.
    let done = unsafe {
        match direction {
            Direction::FromCaller => libc::process_vm_readv(pid, &local, 1, &remote, 1, 0),
            Direction::ToCaller => libc::process_vm_writev(pid, &local, 1, &remote, 1, 0),
        }
    };
    if done == len as isize {
        Ok(())
    } else {
        Err(libc::EFAULT)
    }
}

/// Reads one `T` at `addr`.
pub(crate) fn read<T: Plain>(addr: usize) -> Result<T, Errno> {
    let mut value = MaybeUninit::<T>::uninit();
    copy(
        value.as_mut_ptr().cast(),
        addr,
        size_of::<T>(),
        Direction::FromCaller,
    )?;
    // SAFETY: every byte was written by the copy, and `T: Plain` accepts any bytes.
    Ok(unsafe { value.assume_init() })
}

/// Reads `count` consecutive `T`s at `addr`.
pub(crate) fn read_slice<T: Plain>(addr: usize, count: usize) -> Result<Vec<T>, Errno> {
    // SAFETY: `T: Plain` accepts every bit pattern, zeroes included.
    let mut values = vec![unsafe { std::mem::zeroed::<T>() }; count];
    read_into(addr, &mut values)?;
    Ok(values)
}

/// Reads `values.len()` consecutive `T`s at `addr` into `values`.
pub(crate) fn read_into<T: Plain>(addr: usize, values: &mut [T]) -> Result<(), Errno> {
    copy(
        values.as_mut_ptr().cast(),
        addr,
        std::mem::size_of_val(values),
        Direction::FromCaller,
    )
}

/// Writes `values` at `addr`.
pub(crate) fn write_slice<T: Plain>(addr: usize, values: &[T]) -> Result<(), Errno> {
    copy(
        values.as_ptr().cast_mut().cast(),
        addr,
        std::mem::size_of_val(values),
        Direction::ToCaller,
    )
}

/// Writes one `T` at `addr`.
pub(crate) fn write<T: Plain>(addr: usize, value: &T) -> Result<(), Errno> {
    write_slice(addr, std::slice::from_ref(value))
}

/// Writes one `T` at `addr` as an output argument: through the kernel (a bad address is
/// `EFAULT`), then once more with a plain store, which tools such as valgrind see as
/// initialising it (a copy through process_vm_writev they do not).
pub(crate) fn write_out<T: Plain>(addr: usize, value: &T) -> Result<(), Errno> {
    write(addr, value)?;
    // SAFETY: the kernel has just written these bytes, so they are mapped and writable, and
    // the caller keeps an output argument mapped for the duration of its own call.
    unsafe { std::ptr::write_unaligned(addr as *mut T, *value) };
    Ok(())
}
