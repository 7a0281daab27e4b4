//! A drop-in `libaio.so.1` on aioctx: C programs built against libaio (fio, qemu-io,
//! python-libaio, databases) run unchanged, through `LD_PRELOAD` or `LD_LIBRARY_PATH`, with
//! SPEC.md's guarantees (a destroy that always waits, submits that never block on I/O).
//!
//! ```text
//! make dropin
//! LD_PRELOAD=target/release/libaio.so fio --ioengine=libaio --direct=1 ...
//! ```
//!
//! This crate only translates: every call looks its handle up (`handles`), reads and writes
//! caller memory without faulting (`user`, `fault`), decodes iocbs in the kernel's order (`submit`)
//! and returns a negative errno, with `errno` untouched. It is built as a static library;
//! `make dropin` links it with `symver.c` and `libaio.map` into a shared object carrying
//! libaio 0.3.113's symbol versions (`LIBAIO_0.1`, `LIBAIO_0.4`, `LIBAIO_0.5`), which a
//! cdylib cannot. The engine is `AIOCTX_ENGINE`'s, else the best that works here. With
//! `AIOCTX_STATS=<path>`, each destroyed context appends a line of its counters there.
//!
//! Caller memory is read and written with a fault-guarded copy, as the kernel's
//! `copy_from_user`: the first call installs a `SIGSEGV`/`SIGBUS` handler that turns a fault
//! of that copy into `EFAULT` and passes every other fault on to the handler installed
//! before it (or the default action); a handler the program installs later takes its place
//! (see `fault.rs`). Under valgrind, and off x86-64, `process_vm_readv`/`writev` do it.
//!
//! What it does not do: the kernel-only interfaces libaio never wrapped (`io_uring`, the
//! raw syscalls called directly by a program) are not intercepted.

// Input never reaches a panic: failures are errnos (SPEC §3).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use aioctx::ffi::abi::IoEvent;
use aioctx::Context;
use libc::{c_int, c_long};

mod cancel;
#[cfg(target_arch = "x86_64")]
mod fault;
mod getevents;
mod handles;
mod stats;
mod submit;
mod user;

use getevents::Wait;
use user::Errno;

/// `io_context_t`: the address of the context's ring.
type Handle = *mut c_void;

/// `io_callback_t`, as `io_set_callback` stores it in `aio_data`.
type Callback = extern "C" fn(Handle, *mut c_void, c_long, c_long);

/// Runs one ABI call: its errno (negated) on failure, `errno` as the caller left it, no
/// panic ever unwinding into C (a bug here surfaces as `-EIO`), and no thread cancellation
/// acted on inside it (`cancel.rs`).
fn abi_call(call: impl FnOnce() -> Result<c_int, Errno>) -> c_int {
    let _held_off = cancel::HeldOff::new();
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved = unsafe { *errno };
    let result = match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(value)) => value,
        Ok(Err(code)) => -code,
        Err(_) => -libc::EIO,
    };
    // SAFETY: as above.
    unsafe { *errno = saved };
    result
}

fn lookup(ctx: Handle) -> Result<std::sync::Arc<Context>, Errno> {
    handles::lookup(ctx as usize).ok_or(libc::EINVAL)
}

fn count(n: usize) -> c_int {
    c_int::try_from(n).unwrap_or(c_int::MAX)
}

/// `io_setup`: `-EFAULT` for a `ctxp` that cannot be read and written (checked first), then
/// `-EINVAL` for `*ctxp != 0` or a bad size, `-EAGAIN` above `aio-max-nr`.
#[no_mangle]
pub extern "C" fn io_setup(maxevents: c_int, ctxp: *mut Handle) -> c_int {
    abi_call(|| setup(maxevents, ctxp as usize))
}

fn setup(maxevents: c_int, ctxp: usize) -> Result<c_int, Errno> {
    let current: usize = user::read(ctxp)?;
    // The handle will be stored there: a read-only page is EFAULT now, not after setup.
    user::write(ctxp, &current)?;
    if current != 0 || maxevents == 0 {
        return Err(libc::EINVAL);
    }
    // A negative count, seen as unsigned, is an absurd size: EINVAL from the context.
    let context = Context::builder()
        .depth(maxevents as u32)
        .build()
        .map_err(submit::errno_of)?;
    let (handle, context) = handles::insert(context);
    stats::record_at_exit();
    if let Err(code) = user::write(ctxp, &handle) {
        destroy_context(handle, &context).ok();
        return Err(code);
    }
    Ok(0)
}

/// `io_queue_init`: `io_setup` after clearing `*ctxp`, `-EINVAL` for `maxevents <= 0`.
#[no_mangle]
pub extern "C" fn io_queue_init(maxevents: c_int, ctxp: *mut Handle) -> c_int {
    abi_call(|| {
        if maxevents <= 0 {
            return Err(libc::EINVAL);
        }
        user::write(ctxp as usize, &0usize)?;
        setup(maxevents, ctxp as usize)
    })
}

/// `io_destroy`: returns once nothing of the context can touch caller memory again. Every
/// concurrent caller waits for that; the first gets 0, the others `-EINVAL`.
#[no_mangle]
pub extern "C" fn io_destroy(ctx: Handle) -> c_int {
    abi_call(|| {
        let context = lookup(ctx)?;
        destroy_context(ctx as usize, &context)
    })
}

/// `io_queue_release`: `io_destroy`.
#[no_mangle]
pub extern "C" fn io_queue_release(ctx: Handle) -> c_int {
    io_destroy(ctx)
}

fn destroy_context(handle: usize, context: &std::sync::Arc<Context>) -> Result<c_int, Errno> {
    let result = context.destroy();
    handles::remove(handle, context);
    result.map_err(submit::errno_of)?;
    stats::record(context);
    Ok(0)
}

/// `io_submit`: how many iocbs were accepted, or the first one's error.
#[no_mangle]
pub extern "C" fn io_submit(ctx: Handle, nr: c_long, iocbpp: *mut *mut c_void) -> c_int {
    abi_call(|| {
        if nr < 0 {
            return Err(libc::EINVAL);
        }
        let context = lookup(ctx)?;
        submit::submit(&context, nr as usize, iocbpp as usize).map(count)
    })
}

fn get_events(
    ctx: Handle,
    min_nr: c_long,
    nr: c_long,
    events: *mut c_void,
    timeout: *mut c_void,
    sigmask: *mut c_void,
) -> c_int {
    abi_call(|| {
        let wait = Wait::read(timeout as usize, sigmask as usize)?;
        let context = lookup(ctx)?;
        getevents::get_events(&context, min_nr, nr, events as usize, wait).map(count)
    })
}

/// `io_getevents@@LIBAIO_0.4` (exported under that name by symver.c).
#[no_mangle]
pub extern "C" fn aioctx_io_getevents_0_4(
    ctx: Handle,
    min_nr: c_long,
    nr: c_long,
    events: *mut c_void,
    timeout: *mut c_void,
) -> c_int {
    get_events(ctx, min_nr, nr, events, timeout, std::ptr::null_mut())
}

/// `io_getevents@LIBAIO_0.1`: no `min_nr`; it waits for at least one event.
#[no_mangle]
pub extern "C" fn aioctx_io_getevents_0_1(
    ctx: Handle,
    nr: c_long,
    events: *mut c_void,
    timeout: *mut c_void,
) -> c_int {
    get_events(ctx, 1, nr, events, timeout, std::ptr::null_mut())
}

/// `io_pgetevents`: `io_getevents` with `sigmask` (a `sigset_t *`, NULL for none) installed
/// atomically for the wait.
#[no_mangle]
pub extern "C" fn io_pgetevents(
    ctx: Handle,
    min_nr: c_long,
    nr: c_long,
    events: *mut c_void,
    timeout: *mut c_void,
    sigmask: *mut c_void,
) -> c_int {
    get_events(ctx, min_nr, nr, events, timeout, sigmask)
}

/// `io_queue_wait`, both versions: `io_getevents(ctx, 0, 0, NULL, timeout)`.
#[no_mangle]
pub extern "C" fn aioctx_io_queue_wait(ctx: Handle, timeout: *mut c_void) -> c_int {
    get_events(
        ctx,
        0,
        0,
        std::ptr::null_mut(),
        timeout,
        std::ptr::null_mut(),
    )
}

/// `io_cancel@@LIBAIO_0.4`: `-EINPROGRESS` when the request's event will come (as
/// `-ECANCELED`, or its result if it finished first); `result` is never written.
#[no_mangle]
pub extern "C" fn aioctx_io_cancel_0_4(
    ctx: Handle,
    iocb: *mut c_void,
    _result: *mut c_void,
) -> c_int {
    aioctx_io_cancel_0_1(ctx, iocb)
}

/// `io_cancel@LIBAIO_0.1`: as 0.4, without the unused result argument.
#[no_mangle]
pub extern "C" fn aioctx_io_cancel_0_1(ctx: Handle, iocb: *mut c_void) -> c_int {
    abi_call(|| {
        let key: u32 = user::read(iocb as usize + submit::AIO_KEY_OFFSET)?;
        if key != aioctx::ffi::abi::KIOCB_KEY {
            return Err(libc::EINVAL);
        }
        let context = lookup(ctx)?;
        context
            .cancel(aioctx::RequestId::from_obj(iocb as u64))
            .map_err(submit::errno_of)?;
        Err(libc::EINPROGRESS)
    })
}

/// `io_queue_run`: takes events one at a time without waiting and calls each one's
/// callback (its `data`) as `cb(ctx, obj, res, res2)`; returns the last get-events result.
#[no_mangle]
pub extern "C" fn io_queue_run(ctx: Handle) -> c_int {
    loop {
        let mut event = IoEvent::default();
        let taken = abi_call(|| {
            let context = lookup(ctx)?;
            let mut deliver = |taken| {
                event = taken;
                Ok(())
            };
            context
                .get_events_raw(0, 1, Some(std::time::Duration::ZERO), None, &mut deliver)
                .map(count)
                .map_err(submit::errno_of)
        });
        if taken != 1 {
            return taken;
        }
        if event.data != 0 {
            // SAFETY: `data` is what io_set_callback stored: the caller's callback. An
            // iocb without one (data 0) is skipped rather than called.
            let callback: Callback = unsafe { std::mem::transmute::<u64, Callback>(event.data) };
            callback(
                ctx,
                event.obj as *mut c_void,
                event.res as c_long,
                event.res2 as c_long,
            );
        }
    }
}
