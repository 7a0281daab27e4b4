//! Whether io_uring works here with every op the engine needs; else why not, in one line.

use std::io;
use std::sync::OnceLock;

use io_uring::{cqueue, opcode, squeue, IoUring};

/// The opcodes the engine uses.
const REQUIRED_OPS: [(u8, &str); 8] = [
    (opcode::Read::CODE, "READ"),
    (opcode::Write::CODE, "WRITE"),
    (opcode::Readv::CODE, "READV"),
    (opcode::Writev::CODE, "WRITEV"),
    (opcode::Fsync::CODE, "FSYNC"),
    (opcode::PollAdd::CODE, "POLL_ADD"),
    (opcode::Nop::CODE, "NOP"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
];

/// Probed once per process: seccomp filters and the sysctl do not loosen while it runs.
pub(crate) fn probe() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(probe_now).clone()
}

fn probe_now() -> Result<(), String> {
    let uring: IoUring<squeue::Entry, cqueue::Entry> =
        IoUring::new(8).map_err(|e| setup_failure(&e))?;
    let mut ops = io_uring::Probe::new();
    uring.submitter().register_probe(&mut ops).map_err(|e| {
        format!("io_uring cannot list its operations (IORING_REGISTER_PROBE: {e}); Linux 5.6 or later is needed")
    })?;
    let missing: Vec<&str> = REQUIRED_OPS
        .iter()
        .filter(|(code, _)| !ops.is_supported(*code))
        .map(|&(_, name)| name)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the kernel's io_uring lacks {} (Linux 5.6 or later is needed)",
            missing.join(", ")
        ));
    }
    if !uring.params().is_feature_nodrop() {
        return Err("the kernel's io_uring may drop completions (no IORING_FEAT_NODROP; Linux 5.5 or later is needed)".into());
    }
    Ok(())
}

/// Why io_uring_setup failed, told from its errno and the system's settings.
fn setup_failure(error: &io::Error) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    match error.raw_os_error() {
        Some(libc::EPERM) if disabled == 2 => {
            "io_uring is disabled by sysctl kernel.io_uring_disabled=2 (io_uring_setup: EPERM)".into()
        }
        Some(libc::EPERM) if disabled == 1 => {
            "io_uring is restricted by sysctl kernel.io_uring_disabled=1 to CAP_SYS_ADMIN and kernel.io_uring_group (io_uring_setup: EPERM)".into()
        }
        Some(libc::EPERM) => {
            "io_uring_setup is denied (EPERM) by a seccomp filter (as in Docker's default profile)".into()
        }
        Some(libc::ENOSYS) => {
            "io_uring_setup is not implemented (ENOSYS): kernel older than 5.1, built without io_uring, or a seccomp filter answering ENOSYS".into()
        }
        Some(libc::ENOMEM) => format!(
            "io_uring_setup cannot lock memory for its rings (ENOMEM): locked-memory limit {} (raise `ulimit -l`)",
            memlock_limit()
        ),
        _ => format!("io_uring_setup failed: {error}"),
    }
}

/// RLIMIT_MEMLOCK's soft limit, as `ulimit -l` would show it.
fn memlock_limit() -> String {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return "unknown".into();
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        format!("{} KiB", limit.rlim_cur / 1024)
    }
}
