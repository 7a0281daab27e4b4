//! Property tests of the C ABI's decoding, through the public `extern "C"` functions: any
//! sequence of calls keeps the ABI's contract (the fuzz target's harness, on bounded random
//! inputs), and io_submit's per-iocb checks come in SPEC §2's order whatever the other
//! fields hold. The coverage-guided fuzzer over the same harness lives in `fuzz/`.

mod harness;

use aioctx::ffi::abi::{Iocb, IOCB_FLAG_RESFD};
use harness::Fixture;
use proptest::prelude::*;

/// Every field of an iocb, arbitrary.
fn any_iocb() -> impl Strategy<Value = Iocb> {
    (
        any::<u64>(),
        any::<u32>(),
        any::<i32>(),
        any::<u16>(),
        any::<i16>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<i64>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|f| Iocb {
            aio_data: f.0,
            aio_key: f.1,
            aio_rw_flags: f.2,
            aio_lio_opcode: f.3,
            aio_reqprio: f.4,
            aio_fildes: f.5,
            aio_buf: f.6,
            aio_nbytes: f.7,
            aio_offset: f.8,
            aio_reserved2: f.9,
            aio_flags: f.10,
            aio_resfd: f.11,
        })
}

/// Submits `iocb` alone on a fresh context; io_submit's return.
fn submit_alone(iocb: &mut Iocb) -> i32 {
    let ctx = harness::context(8);
    let ret = harness::submit_one(ctx, iocb);
    harness::destroy_context(ctx);
    ret
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_call_sequence_keeps_the_abi_contract(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _serial = harness::serial();
        harness::exercise(&bytes);
    }

    #[test]
    fn nonzero_reserved2_is_einval_whatever_the_rest(mut iocb in any_iocb(), reserved2 in 1..=u64::MAX) {
        let _serial = harness::serial();
        iocb.aio_reserved2 = reserved2;
        prop_assert_eq!(submit_alone(&mut iocb), -libc::EINVAL);
    }

    #[test]
    fn negative_nbytes_is_einval_whatever_the_rest(mut iocb in any_iocb(), nbytes in (1u64 << 63)..=u64::MAX) {
        let _serial = harness::serial();
        iocb.aio_reserved2 = 0;
        iocb.aio_nbytes = nbytes;
        prop_assert_eq!(submit_alone(&mut iocb), -libc::EINVAL);
    }

    #[test]
    fn bad_fd_is_ebadf_before_opcode_flags_and_buffers(mut iocb in any_iocb(), nbytes in 0..(1u64 << 63)) {
        let _serial = harness::serial();
        iocb.aio_reserved2 = 0;
        iocb.aio_nbytes = nbytes;
        iocb.aio_fildes = Fixture::get().closed_fd();
        prop_assert_eq!(submit_alone(&mut iocb), -libc::EBADF);
    }

    #[test]
    fn unknown_opcode_is_einval_on_a_good_fd(mut iocb in any_iocb(), opcode in 9u16.., nbytes in 0..(1u64 << 63)) {
        let _serial = harness::serial();
        iocb.aio_reserved2 = 0;
        iocb.aio_nbytes = nbytes;
        iocb.aio_lio_opcode = if opcode == 9 { 4 } else { opcode };
        iocb.aio_flags &= !IOCB_FLAG_RESFD;
        iocb.aio_fildes = Fixture::get().regular_fd();
        prop_assert_eq!(submit_alone(&mut iocb), -libc::EINVAL);
    }

    #[test]
    fn accepted_reads_and_writes_complete_once_with_their_data(
        ops in proptest::collection::vec((any::<bool>(), 0usize..256, 1usize..8192, any::<u64>()), 1..16)
    ) {
        let _serial = harness::serial();
        let fx = Fixture::get();
        let ctx = harness::context(32);
        let mut iocbs: Vec<Iocb> = ops
            .iter()
            .enumerate()
            .map(|(i, &(write, block, len, data))| Iocb {
                aio_data: data,
                aio_lio_opcode: u16::from(write),
                aio_fildes: fx.regular_fd(),
                aio_buf: fx.arena_at(i * 8192, len),
                aio_nbytes: len as u64,
                aio_offset: (block * 512) as i64,
                ..Iocb::default()
            })
            .collect();
        for iocb in iocbs.iter_mut() {
            prop_assert_eq!(harness::submit_one(ctx, iocb), 1);
            prop_assert_eq!(iocb.aio_key, 0);
        }
        let mut events = harness::reap(ctx, iocbs.len());
        harness::destroy_context(ctx);
        prop_assert_eq!(events.len(), iocbs.len());
        events.sort_by_key(|e| e.obj);
        for (event, (iocb, &(_, block, len, _))) in events.iter().zip(iocbs.iter().zip(&ops)) {
            prop_assert_eq!(event.obj, iocb as *const Iocb as u64);
            prop_assert_eq!(event.data, iocb.aio_data);
            // The file is 1 MiB: a read past its end is short, never an error.
            let expected = len.min((1 << 20) - block * 512);
            prop_assert!(event.res == len as i64 || (iocb.aio_lio_opcode == 0 && event.res == expected as i64),
                "res {} for {:?}", event.res, iocb);
        }
    }
}
