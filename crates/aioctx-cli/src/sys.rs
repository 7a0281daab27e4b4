//! The command's raw edge: the few system calls the library does not offer and the bench
//! needs (page-cache control and residency, CPU time, free space, and the kernel's own AIO
//! calls as the baseline). The only module of the command with `unsafe` code.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aioctx::sys::abi::{self, IoEvent, Iocb};
use aioctx::SharedMem;

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Drops the file's clean pages from the page cache (`posix_fadvise(DONTNEED)`).
pub fn drop_cached_pages(file: &File) -> io::Result<()> {
    // SAFETY: plain syscall on an fd `file` keeps open; no memory is passed.
    let ret = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

/// How many bytes of the file's first `len` bytes are in the page cache (`mincore` of a
/// mapping of it; mapping does not fault pages in).
pub fn cached_bytes(file: &File, len: u64) -> io::Result<u64> {
    if len == 0 {
        return Ok(0);
    }
    let page = aioctx::sys::mem::page_size() as u64;
    let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: a fresh shared read-only mapping chosen by the kernel; never read through.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mut resident = vec![0u8; len.div_ceil(page as usize)];
    // SAFETY: `addr..addr+len` is the mapping made above; `resident` has one byte per page.
    let ret = unsafe { libc::mincore(addr, len, resident.as_mut_ptr()) };
    let error = io::Error::last_os_error();
    // SAFETY: unmaps exactly the mapping made above, which nothing else refers to.
    unsafe { libc::munmap(addr, len) };
    if ret < 0 {
        return Err(error);
    }
    let pages = resident.iter().filter(|&&b| b & 1 != 0).count() as u64;
    Ok((pages * page).min(len as u64))
}

/// CPU time this process has used so far: (user, system).
pub fn cpu_time() -> (Duration, Duration) {
    // SAFETY: `usage` is a plain struct getrusage fills; RUSAGE_SELF cannot fail.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (time(usage.ru_utime), time(usage.ru_stime))
}

/// Bytes an unprivileged user may still write on the file system holding `dir`.
pub fn free_space(dir: &Path) -> io::Result<u64> {
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `path` is NUL-terminated and `stat` a plain struct statvfs fills.
    let stat = unsafe {
        let mut stat = std::mem::zeroed::<libc::statvfs>();
        check(libc::statvfs(path.as_ptr(), &mut stat))?;
        stat
    };
    Ok(stat.f_bavail * stat.f_frsize)
}

/// One read or write a `KernelAio` context is asked for: `bs` bytes at `offset` of its
/// file, into or out of slot `slot` of its memory.
#[derive(Clone, Copy, Debug)]
pub struct KernelOp {
    pub slot: usize,
    pub write: bool,
    pub offset: u64,
}

/// A context of the kernel's own AIO, through the raw system calls (no libaio): the
/// baseline the bench measures aioctx against. It holds the file and the memory its requests
/// use, and its destroy (also on drop) waits for them, so requests never outlive either.
pub struct KernelAio {
    id: u64,
    file: Arc<File>,
    mem: Arc<SharedMem>,
    bs: usize,
}

impl KernelAio {
    /// `io_setup(nr_events)`; requests move `bs` bytes between `file` and slots of `mem`.
    pub fn setup(
        nr_events: u32,
        file: Arc<File>,
        mem: Arc<SharedMem>,
        bs: usize,
    ) -> io::Result<KernelAio> {
        let mut id = 0u64;
        // SAFETY: io_setup writes the new context id into `id`, which is zero as required.
        let ret = unsafe { libc::syscall(abi::SYS_IO_SETUP, nr_events, &mut id as *mut u64) };
        check(ret as libc::c_int)?;
        Ok(KernelAio { id, file, mem, bs })
    }

    /// `io_submit` of the ops; returns how many the kernel accepted.
    pub fn submit(&self, ops: &[KernelOp]) -> io::Result<usize> {
        let mut iocbs = Vec::with_capacity(ops.len());
        for op in ops {
            let start = op.slot * self.bs;
            if start + self.bs > self.mem.len() {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            iocbs.push(Iocb {
                aio_data: op.slot as u64,
                aio_lio_opcode: if op.write {
                    abi::IOCB_CMD_PWRITE
                } else {
                    abi::IOCB_CMD_PREAD
                },
                aio_fildes: self.file.as_raw_fd() as u32,
                aio_buf: self.mem.ptr_at(start) as u64,
                aio_nbytes: self.bs as u64,
                aio_offset: op.offset as i64,
                ..Iocb::default()
            });
        }
        let mut pointers: Vec<*mut Iocb> = iocbs.iter_mut().map(|i| i as *mut Iocb).collect();
        // SAFETY: the pointers name live iocbs (the kernel copies them during the call); each
        // names a slot inside `mem` and the fd of `file`, both of which this context holds
        // until its destroy has waited for every request.
        let ret = unsafe {
            libc::syscall(
                abi::SYS_IO_SUBMIT,
                self.id,
                pointers.len() as libc::c_long,
                pointers.as_mut_ptr(),
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ret as usize)
    }

    /// `io_getevents`: waits for at least `min` events (at most `timeout`), returns up to
    /// `events.len()`.
    pub fn get_events(
        &self,
        min: usize,
        events: &mut [IoEvent],
        timeout: Duration,
    ) -> io::Result<usize> {
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        loop {
            // SAFETY: `events` is writable for its length and `timeout` lives for the call.
            let ret = unsafe {
                libc::syscall(
                    abi::SYS_IO_GETEVENTS,
                    self.id,
                    min as libc::c_long,
                    events.len() as libc::c_long,
                    events.as_mut_ptr(),
                    &timeout as *const libc::timespec,
                )
            };
            if ret >= 0 {
                return Ok(ret as usize);
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }

    /// `io_destroy`: since Linux 3.13 it returns once every request of the context is done.
    pub fn destroy(mut self) -> io::Result<()> {
        let result = self.kernel_destroy();
        // A context id is the address of its ring, never 0: Drop now has nothing to do.
        self.id = 0;
        result
    }

    fn kernel_destroy(&self) -> io::Result<()> {
        // SAFETY: `id` names a context this process set up and has not destroyed.
        check(unsafe { libc::syscall(abi::SYS_IO_DESTROY, self.id) } as libc::c_int)
    }
}

impl Drop for KernelAio {
    fn drop(&mut self) {
        if self.id != 0 {
            // The kernel waits for the requests still in flight before the file and the
            // memory they use are let go (after this, with the fields).
            let _ = self.kernel_destroy();
        }
    }
}
