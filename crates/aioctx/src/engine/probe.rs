//! Whether an engine works here, and why not, as a type: [`Unavailable`].
//!
//! A probe must never kill the process. Some sandboxes (Android's seccomp policy, strict
//! container profiles) answer `io_uring_setup` with `SIGSYS` rather than `EPERM`; so where
//! a seccomp filter is active (`Seccomp: 2` in `/proc/self/status`) the engine's setup call
//! is first made in a forked child ([`syscall_in_child`]), and only if the child lived
//! through it and succeeded is it made in this process.

use std::fmt;
use std::io;

use super::EngineKind;

/// Why an engine cannot run here.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unavailable {
    /// A seccomp filter blocks the engine's setup call: it answered `EPERM`
    /// (`killed: false`, as Docker's default profile does for io_uring) or killed the
    /// probing child with `SIGSYS` (`killed: true`).
    Seccomp {
        /// The filter kills (`SIGSYS`) rather than failing the call.
        killed: bool,
    },
    /// io_uring is switched off by `/proc/sys/kernel/io_uring_disabled` (1: only for
    /// `CAP_SYS_ADMIN` and `kernel.io_uring_group`; 2: for everyone).
    Sysctl {
        /// The sysctl's value.
        level: u32,
    },
    /// The rings cannot be locked in memory (`ENOMEM`): `RLIMIT_MEMLOCK` is too low.
    Memlock {
        /// The soft limit in bytes (`None`: unlimited or unreadable).
        limit: Option<u64>,
    },
    /// The kernel does not implement the setup call (`ENOSYS`).
    NoKernelSupport,
    /// The kernel has the engine but lacks what it needs (operations, features).
    KernelTooOld {
        /// What is missing, and the kernel version that has it.
        missing: String,
    },
    /// `io_setup` failed `EAGAIN`: `fs.aio-max-nr` is exhausted.
    AioMaxNr,
    /// The probing child was killed by a signal other than `SIGSYS`.
    Killed {
        /// The signal.
        signal: i32,
    },
    /// The setup call failed with this errno (`EMFILE`, `EOPNOTSUPP`, ...).
    Other(i32),
}

impl Unavailable {
    /// What a failed setup call of `kind`'s engine means, from its errno and the system's
    /// settings.
    pub(crate) fn from_errno(kind: EngineKind, errno: i32) -> Unavailable {
        match (kind, errno) {
            (EngineKind::Uring, libc::EPERM) => match io_uring_disabled() {
                0 => Unavailable::Seccomp { killed: false },
                level => Unavailable::Sysctl { level },
            },
            (_, libc::EPERM) => Unavailable::Seccomp { killed: false },
            (_, libc::ENOSYS) => Unavailable::NoKernelSupport,
            (EngineKind::Uring, libc::ENOMEM) => Unavailable::Memlock {
                limit: memlock_limit(),
            },
            (EngineKind::Kaio, libc::EAGAIN) => Unavailable::AioMaxNr,
            (_, errno) => Unavailable::Other(errno),
        }
    }

    /// What a failed setup of `kind`'s engine means.
    pub(crate) fn from_error(kind: EngineKind, error: &io::Error) -> Unavailable {
        Unavailable::from_errno(kind, error.raw_os_error().unwrap_or(libc::EIO))
    }

    /// The errno a context creation that needed this engine fails with.
    pub fn errno(&self) -> i32 {
        match self {
            Unavailable::Seccomp { .. }
            | Unavailable::Sysctl { .. }
            | Unavailable::Killed { .. } => libc::EPERM,
            Unavailable::Memlock { .. } => libc::ENOMEM,
            Unavailable::NoKernelSupport | Unavailable::KernelTooOld { .. } => libc::ENOSYS,
            Unavailable::AioMaxNr => libc::EAGAIN,
            Unavailable::Other(errno) => *errno,
        }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::Seccomp { killed: false } => f.write_str(
                "the setup call is denied (EPERM) by a seccomp filter (as in Docker's default profile)",
            ),
            Unavailable::Seccomp { killed: true } => f.write_str(
                "a seccomp filter kills the setup call (SIGSYS; probed in a child process)",
            ),
            Unavailable::Sysctl { level: 1 } => f.write_str(
                "disabled by sysctl kernel.io_uring_disabled=1 (only CAP_SYS_ADMIN and kernel.io_uring_group) (EPERM)",
            ),
            Unavailable::Sysctl { level } => {
                write!(f, "disabled by sysctl kernel.io_uring_disabled={level} (EPERM)")
            }
            Unavailable::Memlock { limit } => {
                f.write_str("the rings cannot be locked in memory (ENOMEM): locked-memory limit ")?;
                match limit {
                    Some(bytes) => write!(f, "{} KiB", bytes / 1024)?,
                    None => f.write_str("unlimited or unknown")?,
                }
                f.write_str(" (raise `ulimit -l`)")
            }
            Unavailable::NoKernelSupport => f.write_str(
                "not implemented by this kernel (ENOSYS): too old, built without it, or a seccomp filter answering ENOSYS",
            ),
            Unavailable::KernelTooOld { missing } => write!(f, "the kernel lacks {missing}"),
            Unavailable::AioMaxNr => f.write_str("fs.aio-max-nr is exhausted (io_setup: EAGAIN)"),
            Unavailable::Killed { signal } => {
                write!(f, "the probing child was killed by signal {signal}")
            }
            Unavailable::Other(errno) => {
                write!(f, "setup failed: {}", io::Error::from_raw_os_error(*errno))
            }
        }
    }
}

impl std::error::Error for Unavailable {}

impl From<Unavailable> for io::Error {
    fn from(reason: Unavailable) -> io::Error {
        io::Error::from_raw_os_error(reason.errno())
    }
}

/// Whether an engine works here, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The engine.
    pub kind: EngineKind,
    /// `Ok` if it works here, else why not.
    pub result: Result<(), Unavailable>,
}

impl Probe {
    /// Whether the engine works here.
    pub fn available(&self) -> bool {
        self.result.is_ok()
    }
}

/// `/proc/sys/kernel/io_uring_disabled` (0 if absent: kernels before 6.6).
fn io_uring_disabled() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// RLIMIT_MEMLOCK's soft limit in bytes; None if unlimited or unreadable.
fn memlock_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(limit.rlim_cur)
}

/// Whether a seccomp filter is active on this thread (`Seccomp: 2` in
/// `/proc/self/status`); a filter installed once is never removed.
pub(crate) fn seccomp_filter_active() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| {
            status
                .lines()
                .any(|line| line.strip_prefix("Seccomp:").map(str::trim) == Some("2"))
        })
        .unwrap_or(false)
}

/// Where seccomp filters could kill `syscall(nr, a, b)`, makes it first in a forked child:
/// `Ok` if no filter is active or the child's call succeeded (the caller then makes it in
/// this process), else why not.
pub(crate) fn survive_setup(
    kind: EngineKind,
    nr: libc::c_long,
    a: libc::c_long,
    b: libc::c_long,
) -> Result<(), Unavailable> {
    if !seccomp_filter_active() {
        return Ok(());
    }
    match syscall_in_child(nr, a, b) {
        Ok(ChildExit::Returned(0)) => Ok(()),
        Ok(ChildExit::Returned(errno)) => Err(Unavailable::from_errno(kind, errno)),
        Ok(ChildExit::Killed(libc::SIGSYS)) => Err(Unavailable::Seccomp { killed: true }),
        Ok(ChildExit::Killed(signal)) => Err(Unavailable::Killed { signal }),
        // Without a child the call cannot be tried safely: the engine is not used.
        Err(e) => Err(Unavailable::Other(e.raw_os_error().unwrap_or(libc::EAGAIN))),
    }
}

/// How the probing child ended.
enum ChildExit {
    /// It exited: 0 if the call succeeded, else its errno.
    Returned(i32),
    /// A signal killed it.
    Killed(i32),
}

/// Makes `syscall(nr, a, b)` in a forked child and reports how the child ended. The
/// pointers among the arguments point at the parent's memory, which the child has a copy
/// of; whatever the call creates goes away with the child.
///
/// The child is made by a raw `clone(SIGCHLD)` (a fork without the registered fork
/// handlers, which take locks and allocate) and runs only raw system calls before
/// `_exit`: it is async-signal-safe, as a child of a multi-threaded process must be.
fn syscall_in_child(nr: libc::c_long, a: libc::c_long, b: libc::c_long) -> io::Result<ChildExit> {
    // No core file for a child a filter kills; the limit is made here, before the fork.
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: clone with only SIGCHLD and no new stack is fork(): the child runs on a copy
    // of this stack. Both argument orders (x86_64, aarch64) are all zeros past the flags.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // In the child: raw system calls only, then _exit; nothing allocates or locks.
        // SAFETY: prlimit64 reads the live `no_core` copy; signal() is async-signal-safe
        // (one rt_sigaction); the probed call's pointer arguments point at this process's
        // copy of the caller's memory; errno is this thread's; _exit does not return.
        unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                libc::RLIMIT_CORE,
                &no_core as *const libc::rlimit,
                std::ptr::null_mut::<libc::rlimit>(),
            );
            // A handler inherited from the parent must not catch the SIGSYS of
            // SECCOMP_RET_TRAP: the default action kills the child, which is the answer.
            libc::signal(libc::SIGSYS, libc::SIG_DFL);
            let ret = libc::syscall(nr, a, b);
            let code = if ret < 0 {
                (*libc::__errno_location()).clamp(1, 255)
            } else {
                0
            };
            libc::_exit(code);
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child, writing its status into the live local.
        let ret = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if ret >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    if libc::WIFSIGNALED(status) {
        Ok(ChildExit::Killed(libc::WTERMSIG(status)))
    } else {
        Ok(ChildExit::Returned(libc::WEXITSTATUS(status)))
    }
}
