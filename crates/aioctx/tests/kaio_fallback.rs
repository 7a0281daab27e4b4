//! A buffered read of data not in the page cache: kernel AIO would do it inside
//! `io_submit`; on `kaio` it is tried with `RWF_NOWAIT`, gets `EAGAIN`, and is re-issued on
//! the thread pool. Its own test binary, because it needs a pool of one worker.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioctx::{AlignedBuf, Context, EngineKind, Request};

#[test]
fn buffered_cold_read_returns_from_submit_and_counts_fallback() {
    // One worker, so that the test can hold it and see the cold read wait in the pool.
    std::env::set_var("AIOCTX_WORKERS", "1");
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
    let (ours, mut peer) = UnixStream::pair().unwrap();
    let socket = Arc::new(File::from(std::os::fd::OwnedFd::from(ours)));
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
