//! The kernel's timing (SPEC §2, "Submit never waits"): what the page cache serves completes
//! inside submit, so `get_events` with `min` 0 right after it finds the event, on every
//! engine that runs real I/O. Synchronous writes go asynchronous and still complete.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::Arc;
use std::time::Duration;

use aioctx::{Context, EngineKind, Request, RwFlags};
use common::*;

const REAL_ENGINES: [EngineKind; 3] = [EngineKind::Uring, EngineKind::Kaio, EngineKind::Threads];

/// The engines of `REAL_ENGINES` that work here (every one a test covers must work: the
/// conformance suite fails when one does not).
fn engines() -> Vec<EngineKind> {
    aioctx::engine::probe_all()
        .into_iter()
        .filter(|probe| probe.available() && REAL_ENGINES.contains(&probe.kind))
        .map(|probe| probe.kind)
        .collect()
}

/// Submits `requests`, then takes events without waiting: all of them must be there.
fn submit_then_reap_without_waiting(ctx: &Context, mut requests: Vec<Request>) -> Vec<i64> {
    let count = requests.len();
    assert_eq!(ctx.submit(&mut requests).unwrap().len(), count);
    let done = ctx.get_events(0, count, Some(Duration::ZERO)).unwrap();
    assert_eq!(
        done.len(),
        count,
        "{:?}: events not there at once",
        ctx.engine()
    );
    done.iter().map(|c| c.res).collect()
}

#[test]
fn one_buffered_write_completes_inside_submit() {
    for engine in engines() {
        let file = temp_file(8192);
        let ctx = Context::builder().depth(8).engine(engine).build().unwrap();
        let write = Request::write(open(&file, false, true), vec![7u8; 256], 100);
        assert_eq!(submit_then_reap_without_waiting(&ctx, vec![write]), [256]);
        let data = std::fs::read(&file.path).unwrap();
        assert!(data[100..356].iter().all(|&b| b == 7), "{engine:?}");
    }
}

#[test]
fn an_o_append_write_completes_inside_submit() {
    for engine in engines() {
        let file = temp_file(1000);
        let appending = OpenOptions::new().append(true).open(&file.path).unwrap();
        let ctx = Context::builder().depth(8).engine(engine).build().unwrap();
        let write = Request::write(Arc::new(appending), b"tail".to_vec(), 0);
        assert_eq!(submit_then_reap_without_waiting(&ctx, vec![write]), [4]);
        let data = std::fs::read(&file.path).unwrap();
        assert_eq!(&data[1000..], b"tail", "{engine:?}");
    }
}

#[test]
fn a_pwritev_completes_inside_submit() {
    for engine in engines() {
        let file = temp_file(4096);
        let ctx = Context::builder().depth(8).engine(engine).build().unwrap();
        let bufs = vec![vec![1u8; 100], vec![2u8; 50]];
        let write = Request::writev(open(&file, false, true), bufs, 10);
        assert_eq!(submit_then_reap_without_waiting(&ctx, vec![write]), [150]);
        let data = std::fs::read(&file.path).unwrap();
        assert!(data[10..110].iter().all(|&b| b == 1), "{engine:?}");
        assert!(data[110..160].iter().all(|&b| b == 2), "{engine:?}");
    }
}

#[test]
fn a_batch_of_eight_writes_completes_inside_submit() {
    for engine in engines() {
        let file = temp_file(8 * 512);
        let out = open(&file, false, true);
        let ctx = Context::builder().depth(8).engine(engine).build().unwrap();
        let writes = (0..8)
            .map(|i| Request::write(out.clone(), vec![i as u8 + 1; 512], i * 512).data(i))
            .collect();
        assert_eq!(submit_then_reap_without_waiting(&ctx, writes), [512; 8]);
        let data = std::fs::read(&file.path).unwrap();
        for (i, chunk) in data.chunks(512).enumerate() {
            assert!(
                chunk.iter().all(|&b| b == i as u8 + 1),
                "{engine:?} chunk {i}"
            );
        }
    }
}

#[test]
fn a_cached_read_completes_inside_submit() {
    for engine in engines() {
        let file = temp_file(8192);
        std::fs::read(&file.path).unwrap();
        let ctx = Context::builder().depth(8).engine(engine).build().unwrap();
        let read = Request::read(open(&file, true, false), vec![0u8; 4096], 4096);
        assert_eq!(submit_then_reap_without_waiting(&ctx, vec![read]), [4096]);
    }
}

#[test]
fn synchronous_writes_still_complete() {
    for engine in engines() {
        let file = temp_file(4096);
        let o_dsync = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DSYNC)
            .open(&file.path)
            .unwrap();
        let ctx = Context::builder().depth(8).engine(engine).build().unwrap();
        let plain = open(&file, false, true);
        let mut requests = vec![
            Request::write(Arc::new(o_dsync), vec![3u8; 512], 0),
            Request::write(plain, vec![4u8; 512], 512).rw_flags(RwFlags::DSYNC),
        ];
        assert_eq!(ctx.submit(&mut requests).unwrap().len(), 2);
        let done = ctx.get_events(2, 2, Some(Duration::from_secs(30))).unwrap();
        assert!(done.iter().all(|c| c.res == 512), "{engine:?}");
        let mut back = [0u8; 1024];
        open(&file, true, false)
            .read_exact_at(&mut back, 0)
            .unwrap();
        assert!(back[..512].iter().all(|&b| b == 3) && back[512..].iter().all(|&b| b == 4));
    }
}
