//! Whether io_uring works here with every op the engine needs; else why not.

use std::sync::OnceLock;

use io_uring::{cqueue, squeue, IoUring};

use super::sqe::REQUIRED_OPS;
use crate::engine::probe::survive_setup;
use crate::engine::{EngineKind, Unavailable};

/// Whether io_uring works here with every op the engine needs; else why not. Where a
/// seccomp filter is active, `io_uring_setup` is made in a forked child first, so that a
/// filter that kills cannot kill this process. Probed once per process: seccomp filters
/// and the sysctl do not loosen while it runs.
pub(crate) fn probe() -> Result<(), Unavailable> {
    static PROBE: OnceLock<Result<(), Unavailable>> = OnceLock::new();
    PROBE.get_or_init(probe_now).clone()
}

fn probe_now() -> Result<(), Unavailable> {
    // io_uring_params: 120 bytes, all zero for a plain ring.
    let mut params = [0u64; 15];
    survive_setup(
        EngineKind::Uring,
        libc::SYS_io_uring_setup,
        1,
        params.as_mut_ptr() as libc::c_long,
    )?;
    let uring: IoUring<squeue::Entry, cqueue::Entry> =
        IoUring::new(8).map_err(|e| Unavailable::from_error(EngineKind::Uring, &e))?;
    let mut ops = io_uring::Probe::new();
    uring
        .submitter()
        .register_probe(&mut ops)
        .map_err(|e| Unavailable::KernelTooOld {
            missing: format!("IORING_REGISTER_PROBE ({e}); Linux 5.6 or later is needed"),
        })?;
    let missing: Vec<&str> = REQUIRED_OPS
        .iter()
        .filter(|(code, _)| !ops.is_supported(*code))
        .map(|&(_, name)| name)
        .collect();
    if !missing.is_empty() {
        return Err(Unavailable::KernelTooOld {
            missing: format!(
                "io_uring's {} (Linux 5.6 or later is needed)",
                missing.join(", ")
            ),
        });
    }
    if !uring.params().is_feature_nodrop() {
        return Err(Unavailable::KernelTooOld {
            missing:
                "IORING_FEAT_NODROP: completions may be dropped (Linux 5.5 or later is needed)"
                    .into(),
        });
    }
    Ok(())
}
