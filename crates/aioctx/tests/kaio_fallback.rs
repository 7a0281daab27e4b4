//! What the kernel-AIO engine hands to the thread pool, and that it is counted. Its own test
//! binary, because it needs a pool of one worker and fills the shared kernel contexts.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use aioctx::ffi::{KERNEL_EVENTS, MAX_KERNEL_CONTEXTS};
use aioctx::{AlignedBuf, Context, EngineKind, Request};

/// A kaio context whose fallback pool has one worker, so that a test can hold it and see a
/// request wait in the pool (the pool is the process's: every test here asks for one).
fn kaio_with_one_worker(depth: u32) -> Context {
    Context::builder()
        .depth(depth)
        .engine(EngineKind::Kaio)
        .workers(1)
        .build()
        .unwrap()
}

fn socket_pair() -> (Arc<File>, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    (
        Arc::new(File::from(std::os::fd::OwnedFd::from(ours))),
        theirs,
    )
}

/// Buffered reads of data not in the page cache: kernel AIO would do them inside
/// `io_submit`; on `kaio` each is tried with `RWF_NOWAIT`, and one that gets `EAGAIN` is
/// re-issued on the thread pool and counted. (The try itself starts readahead, and on a fast
/// virtual disk the page is often there before the kernel checks it again: that read is
/// then served inline, correctly.) A read still in flight when submit returned is one that
/// went to the pool, so at least those are counted.
#[test]
fn buffered_cold_reads_fall_back_to_the_pool_and_are_counted() {
    const READS: u64 = 64;
    const STRIDE: u64 = 256 * 1024;
    let path = std::env::temp_dir().join(format!("aioctx-kaio-cold-{}", std::process::id()));
    let mut data = AlignedBuf::page_aligned((READS * STRIDE) as usize).unwrap();
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

    let ctx = kaio_with_one_worker(READS as u32);
    let mut pending_after_submit = 0;
    for i in 0..READS {
        let completed_before = ctx.stats().completed;
        ctx.submit_one(Request::read(file.clone(), vec![0u8; 4096], i * STRIDE).data(i))
            .unwrap();
        // Nothing completed during the submit: this read, at least, was not served inline.
        if ctx.stats().completed == completed_before {
            pending_after_submit += 1;
        }
    }
    let mut done = Vec::new();
    while done.len() < READS as usize {
        done.extend(
            ctx.get_events(1, READS as usize, Some(Duration::from_secs(10)))
                .unwrap(),
        );
    }
    for read in done {
        let at = (read.data * STRIDE) as usize;
        assert_eq!(read.result().unwrap(), 4096);
        assert_eq!(
            &read.into_buf::<Vec<u8>>().unwrap()[..],
            &data[at..at + 4096]
        );
    }
    let fallbacks = ctx.stats().fallbacks;
    assert!(
        (pending_after_submit..=READS).contains(&fallbacks),
        "{fallbacks} of {READS} cold reads counted as fallbacks, {pending_after_submit} were \
         still in flight when submit returned"
    );
}

#[test]
fn polls_beyond_the_shared_kernel_contexts_wait_in_the_pool() {
    let (socket, mut peer) = socket_pair();
    let kernel_room = KERNEL_EVENTS as usize * MAX_KERNEL_CONTEXTS;
    let overflow = 8;
    let depth = KERNEL_EVENTS;
    let contexts: Vec<Context> = (0..MAX_KERNEL_CONTEXTS + 1)
        .map(|_| kaio_with_one_worker(depth))
        .collect();
    let mut left = kernel_room + overflow;
    for ctx in &contexts {
        let count = left.min(depth as usize);
        let mut polls: Vec<Request> = (0..count)
            .map(|i| Request::poll(socket.clone(), libc::POLLIN as u16).data(i as u64))
            .collect();
        assert_eq!(ctx.submit(&mut polls).unwrap().len(), count);
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
