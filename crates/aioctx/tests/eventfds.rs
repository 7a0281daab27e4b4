//! `IOCB_FLAG_RESFD` descriptors as a C caller names them: by number, resolved at submit.
//! A context remembers the eventfds it has checked; a number the caller has since closed
//! and reused must never resolve to the old file.

mod common;

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use aioctx::{Context, EngineKind, Request};
use common::*;

/// The tests here run one at a time: one of them counts on the lowest free descriptor
/// number, which a test opening files at the same moment would take.
fn context() -> (MutexGuard<'static, ()>, Context) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    (
        guard,
        Context::builder()
            .depth(16)
            .engine(EngineKind::Threads)
            .build()
            .unwrap(),
    )
}

/// The C ABI's door: `aio_resfd` as a raw number.
fn resolve(
    ctx: &Context,
    raw: std::os::fd::RawFd,
) -> std::io::Result<std::sync::Arc<std::fs::File>> {
    // SAFETY: every number these tests pass is an eventfd or pipe they hold open for the
    // call, or one that names nothing (which must give EBADF).
    unsafe { aioctx::ffi::resolve_eventfd(ctx, raw) }
}

#[test]
fn the_same_eventfd_number_resolves_to_the_same_file() {
    let (_one_at_a_time, ctx) = context();
    let eventfd = aioctx::ffi::eventfd().unwrap();
    let first = resolve(&ctx, eventfd.as_raw_fd()).unwrap();
    let second = resolve(&ctx, eventfd.as_raw_fd()).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &second));
    ctx.submit_one(Request::noop().eventfd(second)).unwrap();
    ctx.get_events(1, 1, Some(Duration::from_secs(5))).unwrap();
    let mut count = [0u8; 8];
    (&eventfd).read_exact(&mut count).unwrap();
    assert_eq!(
        u64::from_ne_bytes(count),
        1,
        "the caller's own eventfd was signalled"
    );
}

#[test]
fn a_reused_number_is_resolved_afresh() {
    let (_one_at_a_time, ctx) = context();
    // The caller's own eventfd, at the lowest free number (the library numbers its own
    // high, out of a program's way).
    // SAFETY: eventfd has no memory arguments; the new descriptor is owned here at once.
    let eventfd = unsafe {
        let fd = libc::eventfd(0, libc::EFD_CLOEXEC);
        assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
        OwnedFd::from_raw_fd(fd)
    };
    let number = eventfd.as_raw_fd();
    let remembered = resolve(&ctx, number).unwrap();
    drop(eventfd);
    // The lowest free number is the one just closed: a pipe's read end takes it.
    let (reader, _writer) = std::io::pipe().unwrap();
    let reader = OwnedFd::from(reader);
    assert_eq!(
        reader.as_raw_fd(),
        number,
        "the test needs the number reused"
    );
    let resolved = resolve(&ctx, number).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&remembered, &resolved));
    let err = ctx
        .submit_one(Request::noop().eventfd(resolved))
        .unwrap_err();
    assert_eq!(
        errno_of(&err.error),
        libc::EINVAL,
        "a pipe is not an eventfd"
    );
}

#[test]
fn a_number_that_names_nothing_is_ebadf() {
    let (_one_at_a_time, ctx) = context();
    assert_eq!(errno_of(&resolve(&ctx, -1).unwrap_err()), libc::EBADF);
    assert_eq!(errno_of(&resolve(&ctx, 1 << 30).unwrap_err()), libc::EBADF);
}
