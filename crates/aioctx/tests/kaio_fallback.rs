//! What the kernel-AIO engine hands to the thread pool, and that it is counted. Its own test
//! binary, because it needs a pool of one worker and fills the shared kernel contexts.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioctx::engine::kaio::{KERNEL_EVENTS, MAX_KERNEL_CONTEXTS};
use aioctx::{AlignedBuf, Context, EngineKind, Request};

/// One worker, so that a test can hold it and see a request wait in the pool. Every test
/// sets it, since whichever starts the pool first decides its size.
fn one_worker_pool() {
    std::env::set_var("AIOCTX_WORKERS", "1");
}

fn socket_pair() -> (Arc<File>, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    (
        Arc::new(File::from(std::os::fd::OwnedFd::from(ours))),
        theirs,
    )
}

/// A buffered read of data not in the page cache: kernel AIO would do it inside
/// `io_submit`; on `kaio` it is tried with `RWF_NOWAIT`, gets `EAGAIN`, and is re-issued on
/// the thread pool.
#[test]
fn buffered_cold_read_returns_from_submit_and_counts_fallback() {
    one_worker_pool();
    let path = std::env::temp_dir().join(format!("aioctx-kaio-cold-{}", std::process::id()));
    let mut data = AlignedBuf::page_aligned(64 * 1024).unwrap();
    data.iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i % 241) as u8);
    // Written with O_DIRECT, so the page cache holds none of it.
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap()
        .write_all_at(&data, 0)
        .unwrap();
    let file = Arc::new(File::open(&path).unwrap());
    std::fs::remove_file(&path).unwrap();

    // Hold the only worker with a read of a socket nobody writes to yet.
    let (socket, mut peer) = socket_pair();
    let holder = Context::with_engine(4, EngineKind::Kaio).unwrap();
    holder
        .submit_one(Request::read(socket, vec![0u8; 1], 0))
        .unwrap();

    let ctx = Context::with_engine(4, EngineKind::Kaio).unwrap();
    ctx.submit_one(Request::read(file, vec![0u8; 4096], 8192).data(1))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ctx.stats().fallbacks == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(ctx.stats().fallbacks, 1);
    // Submit has returned, and the read waits for the held worker: not done yet.
    assert!(ctx
        .get_events(0, 1, Some(Duration::ZERO))
        .unwrap()
        .is_empty());
    assert_eq!(ctx.in_flight(), 1);

    std::io::Write::write_all(&mut peer, b"x").unwrap();
    let done = ctx
        .get_events(1, 1, Some(Duration::from_secs(10)))
        .unwrap()
        .remove(0);
    assert_eq!(done.result().unwrap(), 4096);
    assert_eq!(&done.into_buf().unwrap()[..], &data[8192..8192 + 4096]);
}

#[test]
fn polls_beyond_the_shared_kernel_contexts_wait_in_the_pool() {
    one_worker_pool();
    let (socket, mut peer) = socket_pair();
    let kernel_room = KERNEL_EVENTS as usize * MAX_KERNEL_CONTEXTS;
    let overflow = 8;
    let depth = KERNEL_EVENTS;
    let contexts: Vec<Context> = (0..MAX_KERNEL_CONTEXTS + 1)
        .map(|_| Context::with_engine(depth, EngineKind::Kaio).unwrap())
        .collect();
    let mut left = kernel_room + overflow;
    for ctx in &contexts {
        let count = left.min(depth as usize);
        let mut polls: Vec<Request> = (0..count)
            .map(|i| Request::poll(socket.clone(), libc::POLLIN as u16).data(i as u64))
            .collect();
        assert_eq!(ctx.submit(&mut polls).unwrap(), count);
        left -= count;
    }
    let fallbacks: u64 = contexts.iter().map(|c| c.stats().fallbacks).sum();
    assert!(fallbacks >= overflow as u64, "{fallbacks} fallbacks");

    std::io::Write::write_all(&mut peer, b"x").unwrap();
    for ctx in &contexts {
        let expected = ctx.stats().submitted as usize;
        let mut ready = 0;
        while ready < expected {
            let done = ctx
                .get_events(1, expected - ready, Some(Duration::from_secs(10)))
                .unwrap();
            assert!(done.iter().all(|c| c.res & libc::POLLIN as i64 != 0));
            ready += done.len();
        }
    }
}
