//! Where the drop-in `libaio.so.1` is: next to the `aioctx` binary (as `cargo build
//! --release` and `make dropin` leave them), else under the workspace's `target/release`;
//! built with `make dropin` when it is missing and the sources are here.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const NAME: &str = "libaio.so.1";

/// The workspace this binary was built from (its Makefile builds the drop-in).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn find() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(NAME)));
    beside
        .into_iter()
        .chain([workspace().join("target/release").join(NAME)])
        .find(|path| path.is_file())
        .and_then(|path| path.canonicalize().ok())
}

/// The drop-in, built first if it is missing; the error is one line.
pub fn find_or_build() -> Result<PathBuf, String> {
    if let Some(path) = find() {
        return Ok(path);
    }
    let root = workspace();
    if !root.join("Makefile").is_file() {
        return Err(format!(
            "no drop-in {NAME} next to aioctx or under target/release (build it with make dropin)"
        ));
    }
    eprintln!("aioctx: no drop-in {NAME} yet; running make dropin");
    let status = Command::new("make")
        .arg("dropin")
        .current_dir(&root)
        .stdout(Stdio::from(
            std::io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| e.to_string())?,
        ))
        .status()
        .map_err(|e| format!("running make dropin: {e}"))?;
    if !status.success() {
        return Err(format!("make dropin failed ({status})"));
    }
    find().ok_or_else(|| format!("make dropin left no {NAME}"))
}
