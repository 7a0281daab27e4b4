//! The completion ring, laid out as the kernel's `aio_ring` so that C callers may reap it
//! directly, plus the slot accounting that keeps it from overflowing.
//!
//! The shared page belongs to the caller, who may write anything into it, so the ring
//! keeps its own state in its own memory and treats the page as a copy it publishes:
//! - `tail` is the producer's (the kernel's `ctx->tail`), never read back from the page.
//!   One producer at a time (under `produce`) writes an event at `tail`, then rewrites the
//!   header words and publishes the new `tail` with Release.
//! - `nr`, `magic`, `id`, the features and `header_length` are rewritten on every publish
//!   and never read back: decisions use `RingMem::nr` and the ring's own fields.
//! - `head` is the one word read back, because C consumers (fio's userspace_reap, QEMU)
//!   advance it themselves. The ring keeps its own `head` (the oldest event not known to be
//!   reaped) and accepts a written one, modulo `nr`, only if it lies among the events
//!   posted since (see `judge_head`); anything else is ignored. So a scribbled `head` can
//!   skip events (counted in `lost`) but never re-deliver one, deliver a slot never
//!   posted, or leak a slot.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::buf::Buf;
use crate::sync::lock;
use crate::sys::abi::{self, IoEvent};
use crate::sys::mem::{HeaderWord, RingMem};

/// Hands one event (and its buffers) to whoever takes it. `Err` refuses it and gives the
/// buffers back: the event stays in the ring, and the take stops there.
pub(crate) type Sink<'a> = dyn FnMut(IoEvent, Vec<Buf>) -> Result<(), Vec<Buf>> + 'a;

/// What one `Ring::take` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Took {
    /// Events handed to the sink and taken off the ring.
    pub(crate) count: usize,
    /// Whether the sink refused an event (which is still the oldest in the ring).
    pub(crate) refused: bool,
}

pub(crate) struct Ring {
    mem: RingMem,
    /// The header's `id` word, as the library set it.
    id: u32,
    /// Owned buffers travelling back to a Rust caller, one cell per event slot: written by
    /// the producer before it publishes `tail`, taken by the consumer before it moves
    /// `head`, so the ring protocol keeps the two apart.
    returned: Box<[Mutex<Vec<Buf>>]>,
    /// Serialises producers (the kernel's `completion_lock`).
    produce: Mutex<()>,
    /// The next slot to post into (the kernel's `ctx->tail`). Written under `produce` with
    /// Release after the event it publishes; consumers load it with Acquire. The shared
    /// page's `tail` is only a copy of it, for C readers.
    tail: AtomicU32,
    /// Serialises our reapers (the kernel's `ring_lock`) and every move of `head`.
    consume: Mutex<()>,
    /// The oldest event not yet known to be reaped: `head..tail` are posted and unreaped,
    /// and their slots are still held. Written under `consume` with Release (after the
    /// events it passes were read); read with Acquire.
    head: AtomicU32,
    /// Slots held by requests in flight or by events in `head..tail`. Submitters take one
    /// before starting a request (Acquire, pairing with the Release that gave it back, so
    /// the slot's last reader is done before a new event is written there).
    slots_used: AtomicU32,
    /// Events skipped by a corrupt `head` (one at or beyond `nr`, which no reader writes).
    lost: AtomicU64,
}

impl Ring {
    /// A ring holding at least `nr_events` events.
    pub(crate) fn new(nr_events: u32, id: u32) -> io::Result<Ring> {
        let mem = RingMem::map(nr_events.saturating_add(1))?;
        let returned = (0..mem.nr()).map(|_| Mutex::new(Vec::new())).collect();
        let ring = Ring {
            mem,
            id,
            returned,
            produce: Mutex::new(()),
            tail: AtomicU32::new(0),
            consume: Mutex::new(()),
            head: AtomicU32::new(0),
            slots_used: AtomicU32::new(0),
            lost: AtomicU64::new(0),
        };
        ring.mem
            .header(HeaderWord::Head)
            .store(0, Ordering::Relaxed);
        ring.publish(0);
        Ok(ring)
    }

    /// The kernel's `aio_ring` address: the C handle.
    pub(crate) fn as_ptr(&self) -> *mut abi::AioRingHeader {
        self.mem.as_ptr()
    }

    /// See [`RingMem::identity_at`].
    pub(crate) fn identity_at(&self) -> (usize, u64) {
        self.mem.identity_at()
    }

    /// See [`RingMem::moved_to`].
    pub(crate) fn moved_to(&self, handle: *mut abi::AioRingHeader) -> bool {
        self.mem.moved_to(handle)
    }

    /// A snapshot of the header words as the shared page holds them (what a C reader of
    /// the handle sees, scribbles included).
    pub(crate) fn header(&self) -> abi::AioRingHeader {
        let word = |w| self.mem.header(w).load(Ordering::Acquire);
        abi::AioRingHeader {
            id: word(HeaderWord::Id),
            nr: word(HeaderWord::Nr),
            head: word(HeaderWord::Head),
            tail: word(HeaderWord::Tail),
            magic: word(HeaderWord::Magic),
            compat_features: word(HeaderWord::CompatFeatures),
            incompat_features: word(HeaderWord::IncompatFeatures),
            header_length: word(HeaderWord::HeaderLength),
        }
    }

    /// How many events may be in flight or unreaped at once (one slot stays empty so that
    /// a full ring is told apart from an empty one).
    pub(crate) fn capacity(&self) -> u32 {
        self.mem.nr() - 1
    }

    /// Events a corrupt `head` made the ring skip, so far.
    pub(crate) fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    fn nr(&self) -> u32 {
        self.mem.nr()
    }

    fn distance(&self, from: u32, to: u32) -> u32 {
        distance(from, to, self.nr())
    }

    /// Events posted and not yet reaped, counting a C reader's `head` if it makes sense. A
    /// hint for waiters (nothing is moved): `take` is what decides.
    pub(crate) fn unreaped(&self) -> u32 {
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        let written = self.mem.header(HeaderWord::Head).load(Ordering::Acquire);
        let judged = judge_head(written, head, tail, self.nr());
        self.distance(judged.head, tail)
    }

    /// Takes a slot for a new request; false if the ring is full of requests in flight and
    /// unreaped events (`EAGAIN`).
    pub(crate) fn reserve_slot(&self) -> bool {
        loop {
            let used = self.slots_used.load(Ordering::Relaxed);
            if used < self.capacity() {
                if self
                    .slots_used
                    .compare_exchange_weak(used, used + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return true;
                }
            } else if !self.reclaim() {
                return false;
            }
        }
    }

    /// Gives back a slot taken by a request that was not started.
    pub(crate) fn unreserve_slot(&self) {
        self.slots_used.fetch_sub(1, Ordering::Release);
    }

    /// Gives back the slots of events a C reader reaped by moving `head` (the kernel's
    /// `user_refill_reqs_available`). True if any came back.
    fn reclaim(&self) -> bool {
        let _consumer = lock(&self.consume);
        self.catch_up() > 0
    }

    /// Moves our `head` to the one a C reader wrote, if `judge_head` accepts it, and puts
    /// a value it did not take as written (ignored, or at or beyond `nr`) right in the page;
    /// returns how many slots that gave back. Caller holds `consume`.
    fn catch_up(&self) -> u32 {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        let written = self.mem.header(HeaderWord::Head).load(Ordering::Acquire);
        let judged = judge_head(written, head, tail, self.nr());
        if judged.head != written {
            self.correct_head(written, judged.head);
        }
        self.lost
            .fetch_add(u64::from(judged.skipped), Ordering::Relaxed);
        self.advance(head, judged.head)
    }

    /// Replaces a `head` value in the page that the ring did not take as written, unless a
    /// reader has written another since (a reader's newer value is judged on its own).
    fn correct_head(&self, written: u32, head: u32) {
        let _ = self.mem.header(HeaderWord::Head).compare_exchange(
            written,
            head,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// Moves our `head` from `from` to `to` (both in `head..=tail`) and gives back the slots
    /// passed. Caller holds `consume`.
    fn advance(&self, from: u32, to: u32) -> u32 {
        let freed = self.distance(from, to);
        if freed > 0 {
            self.head.store(to, Ordering::Release);
            self.slots_used.fetch_sub(freed, Ordering::Release);
        }
        freed
    }

    /// Appends an event (and the buffers to hand back with it). Slot accounting guarantees
    /// room; false (the event is dropped) only if that accounting were broken.
    pub(crate) fn post(&self, event: IoEvent, returned: Vec<Buf>) -> bool {
        let _producer = lock(&self.produce);
        let tail = self.tail.load(Ordering::Relaxed);
        let next = (tail + 1) % self.nr();
        if next == self.head.load(Ordering::Acquire) {
            return false;
        }
        // A `head` in the page that points at `next` was ignored so far (it lay beyond
        // `tail`); publishing `next` would make it look like a reader reaped every event.
        let written = self.mem.header(HeaderWord::Head).load(Ordering::Acquire);
        if written % self.nr() == next {
            self.correct_head(written, self.head.load(Ordering::Acquire));
        }
        self.mem.write_event(tail, event);
        *lock(&self.returned[tail as usize]) = returned;
        self.tail.store(next, Ordering::Release);
        self.publish(next);
        true
    }

    /// Rewrites the header words that are the library's own from its own copy, then the
    /// shared `tail` (Release: the events before it are visible to a C reader that loads it
    /// with Acquire). Caller holds `produce` (or is `new`).
    fn publish(&self, tail: u32) {
        let header = [
            (HeaderWord::Id, self.id),
            (HeaderWord::Nr, self.nr()),
            (HeaderWord::Magic, abi::AIO_RING_MAGIC),
            (HeaderWord::CompatFeatures, abi::AIO_RING_COMPAT_FEATURES),
            (
                HeaderWord::IncompatFeatures,
                abi::AIO_RING_INCOMPAT_FEATURES,
            ),
            (HeaderWord::HeaderLength, abi::AIO_RING_HEADER_LEN),
        ];
        for (word, value) in header {
            self.mem.header(word).store(value, Ordering::Relaxed);
        }
        self.mem
            .header(HeaderWord::Tail)
            .store(tail, Ordering::Release);
    }

    /// Takes up to `max` events, oldest first, handing each to `sink`; an event leaves the
    /// ring only once the sink took it, and the first refusal ends the take.
    pub(crate) fn take(&self, max: usize, sink: &mut Sink<'_>) -> Took {
        let mut took = Took::default();
        if max == 0 {
            return took;
        }
        let _consumer = lock(&self.consume);
        self.catch_up();
        let first = self.head.load(Ordering::Relaxed);
        let available = self.distance(first, self.tail.load(Ordering::Acquire)) as usize;
        let mut head = first;
        while took.count < available.min(max) {
            let event = self.mem.read_event(head);
            let mut cell = lock(&self.returned[head as usize]);
            if let Err(bufs) = sink(event, std::mem::take(&mut *cell)) {
                *cell = bufs;
                took.refused = true;
                break;
            }
            head = (head + 1) % self.nr();
            took.count += 1;
        }
        if took.count > 0 {
            self.mem
                .header(HeaderWord::Head)
                .store(head, Ordering::Release);
            self.advance(first, head);
        }
        took
    }
}

fn distance(from: u32, to: u32, nr: u32) -> u32 {
    (to + nr - from) % nr
}

/// A `head` value as the ring takes it from the shared page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Judged {
    /// Where the oldest unreaped event now is.
    head: u32,
    /// Events passed over by a value no reader writes (at or beyond `nr`).
    skipped: u32,
}

/// Judges the `head` a consumer `written` into the page of a ring of `nr` slots whose own
/// `head` and `tail` are these: taken modulo `nr`, it is accepted if it lies among the
/// events posted and unreaped (`head..=tail`); otherwise (beyond `tail`, moved back before
/// `head`) it is ignored and the ring's own `head` stands. A reader only ever writes a
/// value below `nr`, so the events an accepted value at or beyond `nr` passes over were
/// skipped by corruption: they are counted.
fn judge_head(written: u32, head: u32, tail: u32, nr: u32) -> Judged {
    let candidate = written % nr;
    let passed = distance(head, candidate, nr);
    if passed > distance(head, tail, nr) {
        return Judged { head, skipped: 0 };
    }
    Judged {
        head: candidate,
        skipped: if written >= nr { passed } else { 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> IoEvent {
        IoEvent {
            data: n,
            obj: n + 1000,
            res: n as i64,
            res2: 0,
        }
    }

    /// Reserves and posts `count` events numbered from `first`.
    fn post_events(ring: &Ring, first: u64, count: u64) {
        for n in first..first + count {
            assert!(ring.reserve_slot(), "slot for event {n}");
            assert!(ring.post(event(n), Vec::new()));
        }
    }

    /// Takes up to `max` events, keeping their `data`.
    fn take_data(ring: &Ring, max: usize) -> Vec<u64> {
        let mut data = Vec::new();
        let took = ring.take(max, &mut |event, _| {
            assert_eq!(event.obj, event.data + 1000, "a garbage event");
            data.push(event.data);
            Ok(())
        });
        assert_eq!(took.count, data.len());
        data
    }

    fn write_word(ring: &Ring, word: HeaderWord, value: u32) {
        ring.mem.header(word).store(value, Ordering::Relaxed);
    }

    /// Every slot can be reserved again: nothing leaked.
    fn assert_all_slots_free(ring: &Ring) {
        for _ in 0..ring.capacity() {
            assert!(ring.reserve_slot(), "a slot leaked");
        }
        assert!(!ring.reserve_slot());
        for _ in 0..ring.capacity() {
            ring.unreserve_slot();
        }
    }

    #[test]
    fn head_is_accepted_only_among_posted_events() {
        let nr = 8;
        // Within head..=tail, even wrapped: accepted, nothing counted.
        assert_eq!(
            judge_head(3, 1, 5, nr),
            Judged {
                head: 3,
                skipped: 0
            }
        );
        assert_eq!(
            judge_head(5, 1, 5, nr),
            Judged {
                head: 5,
                skipped: 0
            }
        );
        assert_eq!(
            judge_head(1, 6, 2, nr),
            Judged {
                head: 1,
                skipped: 0
            }
        );
        // Beyond tail, or moved back before head: ignored.
        assert_eq!(
            judge_head(6, 1, 5, nr),
            Judged {
                head: 1,
                skipped: 0
            }
        );
        assert_eq!(
            judge_head(0, 1, 5, nr),
            Judged {
                head: 1,
                skipped: 0
            }
        );
        assert_eq!(
            judge_head(4, 6, 2, nr),
            Judged {
                head: 6,
                skipped: 0
            }
        );
        // At or beyond nr: taken modulo nr, and what it passes over is lost.
        assert_eq!(
            judge_head(8 + 4, 1, 5, nr),
            Judged {
                head: 4,
                skipped: 3
            }
        );
        assert_eq!(
            judge_head(u32::MAX, 0, 7, nr),
            Judged {
                head: 7,
                skipped: 7
            }
        );
        assert_eq!(
            judge_head(u32::MAX - 1, 7, 7, nr),
            Judged {
                head: 7,
                skipped: 0
            }
        );
        assert_eq!(
            judge_head(u32::MAX, 0, 3, nr),
            Judged {
                head: 0,
                skipped: 0
            }
        );
    }

    #[test]
    fn scribbled_header_words_are_rewritten_and_never_read() {
        let ring = Ring::new(6, 7).expect("ring");
        post_events(&ring, 0, 2);
        for (word, value) in [
            (HeaderWord::Tail, u32::MAX),
            (HeaderWord::Nr, 1),
            (HeaderWord::Magic, 0),
            (HeaderWord::Id, 99),
            (HeaderWord::HeaderLength, 4096),
            (HeaderWord::CompatFeatures, 5),
            (HeaderWord::IncompatFeatures, 5),
        ] {
            write_word(&ring, word, value);
        }
        assert_eq!(ring.unreaped(), 2);
        assert_eq!(take_data(&ring, 16), [0, 1]);
        write_word(&ring, HeaderWord::Tail, 3);
        assert_eq!(take_data(&ring, 16), Vec::<u64>::new());
        post_events(&ring, 2, 1);
        let header = ring.header();
        assert_eq!(
            (
                header.id,
                header.nr,
                header.tail,
                header.magic,
                header.header_length
            ),
            (
                7,
                ring.nr(),
                3,
                abi::AIO_RING_MAGIC,
                abi::AIO_RING_HEADER_LEN
            )
        );
        assert_eq!(take_data(&ring, 16), [2]);
        assert_eq!(ring.lost(), 0);
        assert_all_slots_free(&ring);
    }

    #[test]
    fn head_beyond_tail_or_moved_back_is_ignored() {
        let ring = Ring::new(6, 1).expect("ring");
        let nr = ring.nr();
        post_events(&ring, 0, 4);
        assert_eq!(take_data(&ring, 2), [0, 1]);
        for bad in [5, nr - 1, 0, 1] {
            write_word(&ring, HeaderWord::Head, bad);
            assert_eq!(ring.unreaped(), 2, "head {bad}");
            assert!(!ring.reclaim(), "head {bad} gave back slots");
        }
        write_word(&ring, HeaderWord::Head, 1);
        assert_eq!(take_data(&ring, 16), [2, 3]);
        assert_eq!(ring.header().head, 4);
        assert_eq!(ring.lost(), 0);
        assert_all_slots_free(&ring);
    }

    #[test]
    fn an_ignored_head_never_becomes_valid_as_the_ring_wraps_to_it() {
        let ring = Ring::new(6, 1).expect("ring");
        let capacity = u64::from(ring.capacity());
        post_events(&ring, 0, 1);
        assert_eq!(take_data(&ring, 16), [0]);
        // Moved back one, so that a full ring's worth of posts reaches it.
        write_word(&ring, HeaderWord::Head, 0);
        post_events(&ring, 1, capacity);
        assert_eq!(ring.header().head, 1, "the ignored head was put right");
        let expected: Vec<u64> = (1..=capacity).collect();
        assert_eq!(take_data(&ring, usize::MAX), expected);
        assert_eq!(ring.lost(), 0);
        assert_all_slots_free(&ring);
    }

    #[test]
    fn huge_head_skips_only_posted_events_and_counts_them() {
        let ring = Ring::new(6, 1).expect("ring");
        let nr = ring.nr();
        post_events(&ring, 0, 5);
        write_word(&ring, HeaderWord::Head, 3 * nr + 2);
        assert_eq!(ring.unreaped(), 3);
        assert_eq!(take_data(&ring, 1), [2]);
        assert_eq!(
            ring.header().head,
            3,
            "the page holds a head below nr again"
        );
        assert_eq!(take_data(&ring, 16), [3, 4]);
        assert_eq!(ring.lost(), 2);
        // One that lands beyond tail is ignored.
        post_events(&ring, 5, 1);
        write_word(&ring, HeaderWord::Head, 5 * nr + 7);
        assert_eq!(take_data(&ring, 16), [5]);
        assert_eq!(ring.lost(), 2);
        assert_all_slots_free(&ring);
    }

    #[test]
    fn a_c_reader_moving_head_frees_slots_for_submit() {
        let ring = Ring::new(6, 1).expect("ring");
        let capacity = u64::from(ring.capacity());
        post_events(&ring, 0, capacity);
        assert!(!ring.reserve_slot(), "a full ring refuses a slot");
        // A reader that reaped them all in user space: slots come back.
        let tail = ring.header().tail;
        write_word(&ring, HeaderWord::Head, tail);
        post_events(&ring, capacity, capacity);
        // A huge head landing where ours is frees nothing; one landing further in skips
        // (and counts) the events it passes, whose slots come back.
        write_word(&ring, HeaderWord::Head, tail + 2 * ring.nr());
        assert!(
            !ring.reserve_slot(),
            "a head that skips nothing freed a slot"
        );
        write_word(&ring, HeaderWord::Head, (tail + 2) % ring.nr() + ring.nr());
        assert!(ring.reserve_slot() && ring.reserve_slot() && !ring.reserve_slot());
        assert_eq!(ring.lost(), 2);
        ring.unreserve_slot();
        ring.unreserve_slot();
        let expected: Vec<u64> = (capacity + 2..2 * capacity).collect();
        assert_eq!(take_data(&ring, usize::MAX), expected);
        assert_all_slots_free(&ring);
    }

    /// A producer, a reaper and a C reader scribbling `head` at random, all at once: every
    /// event taken is real and taken once, and when they stop no slot is held.
    #[test]
    fn hostile_head_racing_post_and_take_never_leaks_or_repeats() {
        let events: u64 = if cfg!(miri) { 300 } else { 30_000 };
        let ring = Ring::new(6, 1).expect("ring");
        let nr = ring.nr();
        let done = std::sync::atomic::AtomicBool::new(false);
        let mut seen = vec![false; events as usize];
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for n in 0..events {
                    while !ring.reserve_slot() {
                        std::thread::yield_now();
                    }
                    assert!(ring.post(event(n), Vec::new()));
                }
                done.store(true, Ordering::Release);
            });
            scope.spawn(|| {
                let mut state = 0x2545_f491_u32;
                while !done.load(Ordering::Acquire) {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let head = ring.header().head;
                    let bad = match state >> 29 {
                        0 => u32::MAX - (state & 0xff),
                        1 => nr + state % nr,
                        2 => head.wrapping_sub(1 + state % 4) % nr,
                        3 => (ring.header().tail + 1 + state % 3) % nr,
                        _ => {
                            std::thread::yield_now();
                            continue;
                        }
                    };
                    write_word(&ring, HeaderWord::Head, bad);
                }
            });
            loop {
                let finished = done.load(Ordering::Acquire);
                for n in take_data(&ring, 7) {
                    assert!(!seen[n as usize], "event {n} taken twice");
                    seen[n as usize] = true;
                }
                if finished && ring.unreaped() == 0 {
                    break;
                }
                std::thread::yield_now();
            }
        });
        let taken = seen.iter().filter(|&&s| s).count() as u64;
        assert!(
            taken + ring.lost() <= events,
            "{taken} taken, {} lost",
            ring.lost()
        );
        assert!(taken > 0);
        write_word(&ring, HeaderWord::Head, ring.header().tail);
        assert_eq!(take_data(&ring, usize::MAX), Vec::<u64>::new());
        assert_all_slots_free(&ring);
    }

    #[test]
    fn a_refused_event_stays_with_its_buffers() {
        let ring = Ring::new(6, 1).expect("ring");
        assert!(ring.reserve_slot() && ring.reserve_slot());
        let buf = Buf::from(vec![7u8; 4]);
        assert!(ring.post(event(0), vec![buf]));
        assert!(ring.post(event(1), Vec::new()));
        let mut seen = 0;
        let took = ring.take(16, &mut |event, bufs| {
            seen += 1;
            assert_eq!((event.data, bufs.len()), (0, 1));
            Err(bufs)
        });
        assert_eq!(
            (took, seen),
            (
                Took {
                    count: 0,
                    refused: true
                },
                1
            )
        );
        assert_eq!(ring.header().head, 0);
        let mut kept = Vec::new();
        let took = ring.take(16, &mut |event, bufs| {
            if event.data == 1 {
                return Err(bufs);
            }
            kept = bufs;
            Ok(())
        });
        assert_eq!(
            took,
            Took {
                count: 1,
                refused: true
            }
        );
        assert_eq!(kept.len(), 1);
        assert_eq!(take_data(&ring, 16), [1]);
        assert_all_slots_free(&ring);
    }
}
