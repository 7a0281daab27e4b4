//! What the command needs of the system besides AIO, behind safe functions: page-cache
//! control and residency, CPU time, free space.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use super::mem::page_size;

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
    let page = page_size() as u64;
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
        super::check(libc::statvfs(path.as_ptr(), &mut stat).into())?;
        stat
    };
    Ok(stat.f_bavail * stat.f_frsize)
}
