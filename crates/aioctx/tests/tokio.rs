//! The async face (feature `tokio`): futures on tokio's multi-threaded runtime, on every
//! engine.
#![cfg(feature = "tokio")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aioctx::tokio::AsyncContext;
use aioctx::{Context, EngineKind, IoBuf, IoBufMut};
use common::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn async_ctx(engine: EngineKind, depth: u32) -> AsyncContext {
    let ctx = Context::builder()
        .depth(depth)
        .engine(engine)
        .build()
        .unwrap();
    AsyncContext::new(ctx).unwrap()
}

#[test]
fn reads_writes_and_syncs_on_every_engine() {
    for engine in EngineKind::ALL {
        runtime().block_on(async {
            let file = temp_file(0);
            let rw = open(&file, true, true);
            let ctx = async_ctx(engine, 16);
            let (n, written) = ctx.write_at(&rw, vec![7u8; 4096], 0).await;
            assert_eq!((n.unwrap(), written.len()), (4096, 4096), "{engine}");
            let (n, parts) = ctx
                .writev_at(&rw, vec![vec![8u8; 10], vec![9u8; 20]], 4096)
                .await;
            assert_eq!((n.unwrap(), parts.len()), (30, 2), "{engine}");
            ctx.fsync(&rw).await.unwrap();
            ctx.fdatasync(&rw).await.unwrap();
            let (n, read) = ctx.read_at(&rw, Vec::with_capacity(4096), 0).await;
            assert_eq!(n.unwrap(), 4096, "{engine}");
            assert!(read.iter().all(|&b| b == 7), "{engine}");
            let into = vec![Box::<[u8]>::from(&[0u8; 10][..]), Box::from(&[0u8; 20][..])];
            let (n, parts) = ctx.readv_at(&rw, into, 4096).await;
            assert_eq!(n.unwrap(), 30, "{engine}");
            assert!(parts[0].iter().all(|&b| b == 8) && parts[1].iter().all(|&b| b == 9));
            ctx.close().await.unwrap();
        });
    }
}

#[test]
fn a_poll_resolves_with_the_ready_mask() {
    runtime().block_on(async {
        let (r, w) = pipe();
        let ctx = async_ctx(EngineKind::Auto, 8);
        (&w).write_all_now(b"x");
        let mask = ctx.poll(&r, libc::POLLIN as u16).await.unwrap();
        assert!(mask & libc::POLLIN as u16 != 0);
    });
}

trait WriteNow {
    fn write_all_now(self, bytes: &[u8]);
}

impl WriteNow for &std::fs::File {
    fn write_all_now(mut self, bytes: &[u8]) {
        std::io::Write::write_all(&mut self, bytes).unwrap();
    }
}

/// A buffer that records, when it is dropped, how many requests its context had seen
/// cancelled by then.
struct Recorded {
    bytes: Vec<u8>,
    ctx: AsyncContext,
    cancelled_at_drop: Arc<Mutex<Option<u64>>>,
}

// SAFETY: forwards to the Vec it owns, which keeps its heap block in place.
unsafe impl IoBuf for Recorded {
    fn stable_ptr(&self) -> *const u8 {
        self.bytes.stable_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.bytes.bytes_init()
    }
    fn bytes_total(&self) -> usize {
        self.bytes.bytes_total()
    }
}

// SAFETY: as above.
unsafe impl IoBufMut for Recorded {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.bytes.stable_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.bytes.set_init(pos) }
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        let cancelled = self.ctx.context().stats().cancelled;
        *self.cancelled_at_drop.lock().unwrap() = Some(cancelled);
    }
}

#[test]
fn a_dropped_read_is_cancelled_and_its_buffer_dropped_only_after() {
    for engine in EngineKind::ALL {
        runtime().block_on(async {
            let (r, _w) = pipe();
            let ctx = async_ctx(engine, 8);
            let seen = Arc::new(Mutex::new(None));
            let buf = Recorded {
                bytes: vec![0u8; 16],
                ctx: ctx.clone(),
                cancelled_at_drop: Arc::clone(&seen),
            };
            let read = ctx.read_at(&r, buf, 0);
            let timed_out = tokio::time::timeout(std::time::Duration::from_millis(50), read).await;
            assert!(
                timed_out.is_err(),
                "{engine}: an empty pipe's read stays pending"
            );
            while seen.lock().unwrap().is_none() {
                tokio::task::yield_now().await;
            }
            assert_eq!(
                *seen.lock().unwrap(),
                Some(1),
                "{engine}: dropped after its cancelled event"
            );
            assert_eq!(ctx.context().in_flight(), 0, "{engine}");
        });
    }
}

#[test]
fn close_resolves_pending_futures_with_their_buffers() {
    runtime().block_on(async {
        let (r, _w) = pipe();
        let ctx = async_ctx(EngineKind::Auto, 16);
        let reads: Vec<_> = (0..4)
            .map(|_| {
                let (ctx, r) = (ctx.clone(), Arc::clone(&r));
                tokio::spawn(async move { ctx.read_at(&r, vec![0u8; 8], 0).await })
            })
            .collect();
        while ctx.context().in_flight() < 4 {
            tokio::task::yield_now().await;
        }
        ctx.close().await.unwrap();
        for read in reads {
            let (result, buf) = read.await.unwrap();
            assert_eq!(errno_of(&result.unwrap_err()), libc::ECANCELED);
            assert_eq!(buf.len(), 8);
        }
        let (late, _) = ctx.read_at(&r, vec![0u8; 8], 0).await;
        assert_eq!(errno_of(&late.unwrap_err()), libc::EINVAL, "closed");
    });
}

#[test]
fn sixty_four_tasks_share_one_context() {
    runtime().block_on(async {
        let file = temp_file(64 * 4096);
        let ro = open(&file, true, false);
        let ctx = async_ctx(EngineKind::Auto, 128);
        let tasks: Vec<_> = (0..64u64)
            .map(|t| {
                let (ctx, ro) = (ctx.clone(), Arc::clone(&ro));
                tokio::spawn(async move {
                    for round in 0..16u64 {
                        let at = ((t + round) % 64) * 4096;
                        let (n, buf) = ctx.read_at(&ro, vec![0u8; 4096], at).await;
                        assert_eq!(n.unwrap(), 4096);
                        assert!((0..4096).all(|i| buf[i] == pattern(at as usize + i)));
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(ctx.context().stats().completed, 64 * 16);
    });
}

#[test]
fn a_future_moved_to_another_thread_before_its_first_poll_completes() {
    let rt = runtime();
    let file = temp_file(4096);
    let ro = open(&file, true, false);
    let ctx = rt.block_on(async { async_ctx(EngineKind::Auto, 8) });
    let done = Arc::new(AtomicBool::new(false));
    let future = {
        let (ctx, done) = (ctx.clone(), Arc::clone(&done));
        async move {
            let (n, _) = ctx.read_at(&ro, vec![0u8; 100], 0).await;
            done.store(n.unwrap() == 100, Ordering::SeqCst);
        }
    };
    let handle = rt.handle().clone();
    std::thread::spawn(move || handle.block_on(future))
        .join()
        .unwrap();
    assert!(done.load(Ordering::SeqCst));
}
