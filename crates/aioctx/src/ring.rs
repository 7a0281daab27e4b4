//! The completion ring, laid out as the kernel's `aio_ring` so that C callers may reap it
//! directly, plus the slot accounting that keeps it from overflowing.
//!
//! One producer at a time (under `produce`) writes an event at `tail` and publishes the new
//! `tail` with Release; a consumer reads events from `head` up to an Acquire load of `tail`
//! and publishes the new `head` with Release. Consumers are our own reapers (under
//! `consume`) or C code that advances `head` itself (fio's userspace_reap, QEMU), which is
//! why freed slots are counted from `head` (see `reclaim`) rather than at reap time.

use std::io;
use std::sync::atomic::Ordering;

use crate::buf::Buf;
use std::sync::atomic::AtomicU32;
use std::sync::Mutex;

use crate::sync::lock;
use crate::sys::abi::{self, IoEvent};
use crate::sys::mem::{HeaderWord, RingMem};

pub(crate) struct Ring {
    mem: RingMem,
    /// Owned buffers travelling back to a Rust caller, one cell per event slot: written by
    /// the producer before it publishes `tail`, taken by the consumer before it publishes
    /// `head`, so the ring protocol keeps the two apart.
    returned: Box<[Mutex<Vec<Buf>>]>,
    /// Serialises producers (the kernel's `completion_lock`).
    produce: Mutex<()>,
    /// Serialises our reapers (the kernel's `ring_lock`).
    consume: Mutex<()>,
    /// Slots held by requests in flight or by events not yet known to be reaped. Submitters
    /// take one before starting a request; `reclaim` gives back the ones reaped.
    slots_used: AtomicU32,
    /// The `head` value up to which reaped slots have been given back.
    reclaimed_to: Mutex<u32>,
}

impl Ring {
    /// A ring holding at least `nr_events` events.
    pub(crate) fn new(nr_events: u32, id: u32) -> io::Result<Ring> {
        let mem = RingMem::map(nr_events.saturating_add(1))?;
        let header = [
            (HeaderWord::Id, id),
            (HeaderWord::Nr, mem.nr()),
            (HeaderWord::Head, 0),
            (HeaderWord::Tail, 0),
            (HeaderWord::Magic, abi::AIO_RING_MAGIC),
            (HeaderWord::CompatFeatures, abi::AIO_RING_COMPAT_FEATURES),
            (
                HeaderWord::IncompatFeatures,
                abi::AIO_RING_INCOMPAT_FEATURES,
            ),
            (HeaderWord::HeaderLength, abi::AIO_RING_HEADER_LEN),
        ];
        for (word, value) in header {
            mem.header(word).store(value, Ordering::Relaxed);
        }
        let returned = (0..mem.nr()).map(|_| Mutex::new(Vec::new())).collect();
        Ok(Ring {
            mem,
            returned,
            produce: Mutex::new(()),
            consume: Mutex::new(()),
            slots_used: AtomicU32::new(0),
            reclaimed_to: Mutex::new(0),
        })
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

    /// A snapshot of the header words.
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

    fn nr(&self) -> u32 {
        self.mem.nr()
    }

    /// `head`, as written by any consumer; a value a C caller corrupted is taken modulo nr.
    fn head(&self) -> u32 {
        self.mem.header(HeaderWord::Head).load(Ordering::Acquire) % self.nr()
    }

    fn tail(&self) -> u32 {
        self.mem.header(HeaderWord::Tail).load(Ordering::Acquire)
    }

    fn distance(&self, from: u32, to: u32) -> u32 {
        (to + self.nr() - from) % self.nr()
    }

    /// Events posted and not yet reaped.
    pub(crate) fn unreaped(&self) -> u32 {
        self.distance(self.head(), self.tail())
    }

    /// Takes a slot for a new request; false if the ring is full of requests in flight and
    /// unreaped events (`EAGAIN`).
    pub(crate) fn reserve_slot(&self) -> bool {
        loop {
            let used = self.slots_used.load(Ordering::Relaxed);
            if used < self.capacity() {
                if self
                    .slots_used
                    .compare_exchange_weak(used, used + 1, Ordering::Relaxed, Ordering::Relaxed)
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
        self.slots_used.fetch_sub(1, Ordering::Relaxed);
    }

    /// Gives back the slots of events reaped since the last call, whoever reaped them (the
    /// kernel's `user_refill_reqs_available`). True if any came back.
    fn reclaim(&self) -> bool {
        let mut reclaimed_to = lock(&self.reclaimed_to);
        let head = self.head();
        let freed = self
            .distance(*reclaimed_to, head)
            .min(self.distance(*reclaimed_to, self.tail()));
        if freed == 0 {
            return false;
        }
        *reclaimed_to = (*reclaimed_to + freed) % self.nr();
        self.slots_used.fetch_sub(freed, Ordering::Relaxed);
        true
    }

    /// Appends an event (and the buffers to hand back with it). Slot accounting guarantees
    /// room; a ring whose `head` a C caller corrupted may lose the event instead.
    pub(crate) fn post(&self, event: IoEvent, returned: Vec<Buf>) -> bool {
        let _producer = lock(&self.produce);
        let tail = self.tail();
        let next = (tail + 1) % self.nr();
        if next == self.head() {
            return false;
        }
        self.mem.write_event(tail, event);
        *lock(&self.returned[tail as usize]) = returned;
        self.mem
            .header(HeaderWord::Tail)
            .store(next, Ordering::Release);
        true
    }

    /// Takes up to `max` events, oldest first, handing each to `sink`. Returns how many.
    pub(crate) fn take(&self, max: usize, sink: &mut dyn FnMut(IoEvent, Vec<Buf>)) -> usize {
        if max == 0 {
            return 0;
        }
        let _consumer = lock(&self.consume);
        let mut head = self.head();
        let available = self.distance(head, self.tail()) as usize;
        let count = available.min(max);
        for _ in 0..count {
            let event = self.mem.read_event(head);
            let returned = std::mem::take(&mut *lock(&self.returned[head as usize]));
            sink(event, returned);
            head = (head + 1) % self.nr();
        }
        if count > 0 {
            self.mem
                .header(HeaderWord::Head)
                .store(head, Ordering::Release);
        }
        count
    }
}
