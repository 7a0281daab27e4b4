//! The simulator's promises: the same seed gives the same run; faults and delays are
//! injected as configured; what is still pending can be cancelled.

mod common;

use std::time::Duration;

use aioctx::{Context, Request, SimConfig};
use common::*;

const FIVE_SECONDS: Option<Duration> = Some(Duration::from_secs(5));

fn config(text: &str) -> SimConfig {
    text.parse().expect("valid AIOCTX_SIM text")
}

/// Submits a mixed batch and returns `(data, res)` in completion order.
fn run(config: SimConfig) -> Vec<(u64, i64)> {
    let file = temp_file(64 * 4096);
    let rw = open(&file, true, true);
    let ctx = Context::simulated(128, config).unwrap();
    let mut batch: Vec<Request> = (0..64u64)
        .map(|i| {
            let offset = i * 4096;
            if i % 3 == 0 {
                Request::write(rw.clone(), vec![i as u8; 4096], offset).data(i)
            } else {
                Request::read(rw.clone(), vec![0u8; 4096], offset).data(i)
            }
        })
        .collect();
    assert_eq!(ctx.submit(&mut batch).unwrap(), 64);
    let events = ctx.get_events(64, 64, FIVE_SECONDS).unwrap();
    events.iter().map(|e| (e.data, e.res)).collect()
}

#[test]
fn same_seed_gives_the_same_order_faults_and_results() {
    let text = "seed=7,eio=0.2,enospc=0.2,short=0.2,delay=2ms..8ms";
    let first = run(config(text));
    assert_eq!(first.len(), 64);
    assert_eq!(first, run(config(text)));
    let in_submit_order: Vec<u64> = (0..64).collect();
    let order: Vec<u64> = first.iter().map(|(data, _)| *data).collect();
    assert_ne!(order, in_submit_order, "delays reorder completions");
    assert_ne!(
        first,
        run(config("seed=8,eio=0.2,enospc=0.2,short=0.2,delay=2ms..8ms"))
    );
}

#[test]
fn eio_fails_reads_writes_and_syncs_but_not_noops() {
    let file = temp_file(4096);
    let rw = open(&file, true, true);
    let ctx = Context::simulated(16, config("eio=1")).unwrap();
    let mut batch = vec![
        Request::read(rw.clone(), vec![0u8; 16], 0).data(1),
        Request::write(rw.clone(), vec![0u8; 16], 0).data(2),
        Request::fsync(rw).data(3),
        Request::noop().data(4),
    ];
    assert_eq!(ctx.submit(&mut batch).unwrap(), 4);
    let mut results: Vec<(u64, i64)> = ctx
        .get_events(4, 4, FIVE_SECONDS)
        .unwrap()
        .iter()
        .map(|e| (e.data, e.res))
        .collect();
    results.sort();
    let eio = -(libc::EIO as i64);
    assert_eq!(results, vec![(1, eio), (2, eio), (3, eio), (4, 0)]);
}

#[test]
fn enospc_fails_writes_only() {
    let file = temp_file(4096);
    let rw = open(&file, true, true);
    let ctx = Context::simulated(16, config("enospc=1")).unwrap();
    let mut batch = vec![
        Request::write(rw.clone(), vec![0u8; 16], 0).data(1),
        Request::read(rw, vec![0u8; 16], 0).data(2),
    ];
    assert_eq!(ctx.submit(&mut batch).unwrap(), 2);
    let mut results: Vec<(u64, i64)> = ctx
        .get_events(2, 2, FIVE_SECONDS)
        .unwrap()
        .iter()
        .map(|e| (e.data, e.res))
        .collect();
    results.sort();
    assert_eq!(results, vec![(1, -(libc::ENOSPC as i64)), (2, 16)]);
}

#[test]
fn short_transfers_move_a_true_prefix() {
    let file = temp_file(8192);
    let ctx = Context::simulated(16, config("seed=3,short=1")).unwrap();
    ctx.submit_one(Request::read(open(&file, true, false), vec![0u8; 8192], 0))
        .unwrap();
    let event = ctx.get_events(1, 1, FIVE_SECONDS).unwrap().pop().unwrap();
    let n = event.result().unwrap();
    assert!(n > 0 && n < 8192, "a short read moved {n} bytes");
    let buf = event.into_buf().unwrap();
    let expected: Vec<u8> = (0..n).map(pattern).collect();
    assert_eq!(&buf[..n], &expected[..]);
    assert!(
        buf[n..].iter().all(|&b| b == 0),
        "nothing past the short count was written"
    );
}

#[test]
fn delays_hold_events_back_until_due() {
    let ctx = Context::simulated(16, config("delay=300ms")).unwrap();
    ctx.submit_one(Request::noop().data(1)).unwrap();
    assert!(ctx
        .get_events(1, 1, Some(Duration::ZERO))
        .unwrap()
        .is_empty());
    assert_eq!(ctx.get_events(1, 1, FIVE_SECONDS).unwrap()[0].data, 1);
}

#[test]
fn pending_request_is_cancelled() {
    let ctx = Context::simulated(16, config("delay=10s")).unwrap();
    ctx.submit_one(Request::noop().data(1)).unwrap();
    ctx.cancel(1).unwrap();
    let event = &ctx.get_events(1, 1, FIVE_SECONDS).unwrap()[0];
    assert_eq!(event.res, -(libc::ECANCELED as i64));
}

#[test]
fn bad_configuration_is_a_clear_error() {
    for text in [
        "eio=2",
        "bogus=1",
        "seed=x",
        "delay=5ms..1ms",
        "delay=3 parsecs",
        "eio",
    ] {
        let err = text.parse::<SimConfig>().expect_err(text);
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{text}");
        assert!(err.to_string().starts_with("AIOCTX_SIM: "), "{err}");
    }
}
