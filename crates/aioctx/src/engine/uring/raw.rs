//! The io_uring instance as this engine maps and drives it: the three mappings, the enter
//! call, and one owner for each index the program writes.
//!
//! The submission queue's tail and the completion queue's head are the two words the
//! program writes into the shared rings. Each is kept by exactly one value of its own
//! ([`SqProducer`], [`CqConsumer`]), created once with the ring, held inside the lock of its
//! queue and never copied; the shared word is only ever stored from that value, through a
//! `&mut` borrow of it, so no store can happen after its lock was let go.
//!
//! (The io-uring crate's queue handles are snapshots that store their copy of the tail when
//! dropped. A handle made only to ask whether the queue was empty, as the tail expression of
//! a block holding the lock, was dropped after the guard (Rust 2021 drops a tail
//! expression's temporaries after the block's locals): its stale tail landed after other
//! threads had pushed and the kernel had taken their SQEs, so the tail fell behind the
//! kernel's head, new SQEs went unseen and the next enter ran up to a lap of old ones again,
//! completing freed requests a second time.) The kernel clamps what it submits to its own
//! view of head and tail, so an enter needs no lock.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use io_uring::squeue;

const IORING_SETUP_CQSIZE: u32 = 1 << 3;
const IORING_SETUP_CLAMP: u32 = 1 << 4;
const IORING_FEAT_SINGLE_MMAP: u32 = 1 << 0;
const IORING_OFF_SQ_RING: libc::off_t = 0;
const IORING_OFF_CQ_RING: libc::off_t = 0x800_0000;
const IORING_OFF_SQES: libc::off_t = 0x1000_0000;
/// `io_uring_enter`: wait for (or flush) completions.
const IORING_ENTER_GETEVENTS: u32 = 1 << 0;
/// SQ ring flags: completions wait in the kernel's overflow list, or task work is pending;
/// an enter with GETEVENTS moves them on.
const IORING_SQ_CQ_OVERFLOW: u32 = 1 << 1;
const IORING_SQ_TASKRUN: u32 = 1 << 2;
/// `io_uring_enter`: the fd argument is an index into the thread's registered rings.
const IORING_ENTER_REGISTERED_RING: u32 = 1 << 4;
/// `io_uring_register`: registers ring fds with the calling thread.
const IORING_REGISTER_RING_FDS: u32 = 20;
/// `struct io_uring_rsrc_update`'s offset that lets the kernel choose the index.
const ANY_INDEX: u32 = u32::MAX;

/// `struct io_uring_rsrc_update`.
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// How a thread enters a ring.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Through the index the ring is registered at with the thread: the ring's number is
    /// not used again, so a program that closes it (`closefrom`, a close loop up to its
    /// limit) or opens another file on it does not cut the thread off its ring.
    Registered(u32),
    /// Through the ring's number (the kernel refused the registration: too old, or the
    /// thread's table full).
    Number,
    /// Not at all: the number no longer names the ring (the program closed it before this
    /// thread first entered), and nothing else reaches it from this thread.
    Lost,
}

/// The rings a thread entered, by address, and how it enters each (address 0: unused).
/// More rings than entries (a forked child's new ones after its parent's) take the last.
const WAYS: usize = 8;

thread_local! {
    static WAYS_OF_THREAD: Cell<[(usize, Way); WAYS]> = const { Cell::new([(0, Way::Number); WAYS]) };
}

/// `struct io_sqring_offsets`.
#[repr(C)]
#[derive(Default)]
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_cqring_offsets`.
#[repr(C)]
#[derive(Default)]
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_uring_params`.
#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

/// `struct io_uring_cqe` (without the 32-byte extension, which is not set up).
#[repr(C)]
struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

/// One shared mapping of the ring's fd, unmapped on drop.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn new(fd: BorrowedFd<'_>, len: usize, offset: libc::off_t) -> io::Result<Map> {
        // SAFETY: a new shared mapping chosen by the kernel; nothing else is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = Map {
            ptr: ptr.cast(),
            len,
        };
        // A forked child does not get the rings (its copies of the contexts are invalid).
        // SAFETY: advice on the mapping just made.
        if unsafe { libc::madvise(ptr, len, libc::MADV_DONTFORK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(map)
    }

    /// The address `offset` bytes into the mapping.
    fn at<T>(&self, offset: u32) -> *mut T {
        debug_assert!(offset as usize + std::mem::size_of::<T>() <= self.len);
        // SAFETY: in bounds of the mapping (the kernel's offsets lie inside what it sized).
        unsafe { self.ptr.add(offset as usize).cast() }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: the mapping is this value's own and nothing points into it any more.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The writer of the submission queue's tail: one per ring, from [`RawRing::new`].
pub(super) struct SqProducer {
    tail: u32,
}

/// The writer of the completion queue's head: one per ring, from [`RawRing::new`].
pub(super) struct CqConsumer {
    head: u32,
}

/// An io_uring instance: its fd and its mapped rings.
pub(super) struct RawRing {
    sq_head: *const AtomicU32,
    sq_tail: *const AtomicU32,
    sq_flags: *const AtomicU32,
    sq_mask: u32,
    sq_entries: u32,
    sqes: *mut squeue::Entry,
    cq_head: *const AtomicU32,
    cq_tail: *const AtomicU32,
    cq_mask: u32,
    cqes: *const Cqe,
    /// Unmapped before the fd closes (fields drop in order).
    _maps: Vec<Map>,
    fd: OwnedFd,
    /// The ring's file (`st_dev`, `st_ino`: each io_uring has an inode of its own), to
    /// tell whether its number still names it.
    identity: (u64, u64),
}

// SAFETY: the pointers are into mappings the ring owns; the shared words are atomics, the
// SQE slots are written only by the holder of the one `SqProducer` and the CQEs read only
// by the holder of the one `CqConsumer`.
unsafe impl Send for RawRing {}
// SAFETY: as for Send.
unsafe impl Sync for RawRing {}

impl RawRing {
    /// Sets up a ring of at least `sq_entries` SQEs (clamped by the kernel) and `cq_entries`
    /// CQEs, with the only producer and consumer it will have.
    pub(super) fn new(
        sq_entries: u32,
        cq_entries: u32,
    ) -> io::Result<(RawRing, SqProducer, CqConsumer)> {
        let mut params = Params {
            flags: IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP,
            cq_entries,
            ..Params::default()
        };
        // SAFETY: io_uring_setup writes the params struct, which is live and laid out as
        // the kernel's.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_io_uring_setup,
                sq_entries,
                &mut params as *mut Params,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: io_uring_setup returned a new fd that nothing else owns.
        let fd = crate::sys::fd::into_own_range(unsafe { OwnedFd::from_raw_fd(ret as i32) });
        let identity = identity(fd.as_raw_fd())?;
        let (sq_off, cq_off) = (&params.sq_off, &params.cq_off);
        let sq_len = sq_off.array as usize + params.sq_entries as usize * 4;
        let cq_len = cq_off.cqes as usize + params.cq_entries as usize * std::mem::size_of::<Cqe>();
        let single = params.features & IORING_FEAT_SINGLE_MMAP != 0;
        let sq_map = Map::new(
            fd.as_fd(),
            if single { sq_len.max(cq_len) } else { sq_len },
            IORING_OFF_SQ_RING,
        )?;
        let cq_map = if single {
            None
        } else {
            Some(Map::new(fd.as_fd(), cq_len, IORING_OFF_CQ_RING)?)
        };
        let sqe_map = Map::new(
            fd.as_fd(),
            params.sq_entries as usize * std::mem::size_of::<squeue::Entry>(),
            IORING_OFF_SQES,
        )?;
        let cq = cq_map.as_ref().unwrap_or(&sq_map);
        // SAFETY: the kernel's offsets point at its u32 fields inside the mapping.
        let (sq_mask, cq_mask) = unsafe {
            (
                *sq_map.at::<u32>(sq_off.ring_mask),
                *cq.at::<u32>(cq_off.ring_mask),
            )
        };
        // SQE slot i is always array entry i, so the tail alone says which SQEs are out.
        let array = sq_map.at::<u32>(sq_off.array);
        for i in 0..params.sq_entries {
            // SAFETY: the array has sq_entries u32s; the kernel reads none before a tail
            // is published.
            unsafe { array.add(i as usize).write(i) };
        }
        let sq_head: *const AtomicU32 = sq_map.at(sq_off.head);
        let cq_head: *const AtomicU32 = cq.at(cq_off.head);
        let raw = RawRing {
            sq_head,
            sq_tail: sq_map.at(sq_off.tail),
            sq_flags: sq_map.at(sq_off.flags),
            sq_mask,
            sq_entries: params.sq_entries,
            sqes: sqe_map.at(0),
            cq_head,
            cq_tail: cq.at(cq_off.tail),
            cq_mask,
            cqes: cq.at(cq_off.cqes),
            _maps: [Some(sq_map), cq_map, Some(sqe_map)]
                .into_iter()
                .flatten()
                .collect(),
            fd,
            identity,
        };
        // SAFETY: the indices' words are live for as long as `raw`.
        let (tail, head) = unsafe {
            (
                (*raw.sq_tail).load(Ordering::Acquire),
                (*raw.cq_head).load(Ordering::Acquire),
            )
        };
        Ok((raw, SqProducer { tail }, CqConsumer { head }))
    }

    fn sq_head(&self) -> u32 {
        // SAFETY: a word of the live mapping.
        unsafe { (*self.sq_head).load(Ordering::Acquire) }
    }

    /// Queues one SQE and publishes it; false when the queue is full (the kernel has not
    /// taken the SQEs before it yet).
    ///
    /// # Safety
    /// The memory the entry points at must stay valid until its CQE is taken.
    pub(super) unsafe fn push(&self, sq: &mut SqProducer, entry: &squeue::Entry) -> bool {
        let queued = sq.tail.wrapping_sub(self.sq_head());
        debug_assert!(
            queued <= self.sq_entries,
            "SQ tail behind the kernel's head"
        );
        if queued >= self.sq_entries {
            return false;
        }
        // SAFETY: the slot is in bounds and the kernel is done with it (it is past the
        // head); `sq` is the only writer of slots and tail.
        unsafe {
            self.sqes
                .add((sq.tail & self.sq_mask) as usize)
                .write(entry.clone())
        };
        sq.tail = sq.tail.wrapping_add(1);
        // SAFETY: a word of the live mapping. Release: the SQE is written before the kernel
        // can see the tail that covers it.
        unsafe { (*self.sq_tail).store(sq.tail, Ordering::Release) };
        true
    }

    /// The tail published last (by whichever thread pushed), for [`RawRing::taken_through`].
    pub(super) fn published_tail(&self) -> u32 {
        // SAFETY: a word of the live mapping.
        unsafe { (*self.sq_tail).load(Ordering::Acquire) }
    }

    /// Whether the kernel took every SQE before `tail` (it moves its head only once it has
    /// issued the SQEs it took, at the end of the enter that took them).
    pub(super) fn taken_through(&self, tail: u32) -> bool {
        // The head never passes the tail, and both are within a queue's length of `tail`.
        tail.wrapping_sub(self.sq_head()) as i32 <= 0
    }

    /// SQEs published and not yet taken by the kernel.
    pub(super) fn queued(&self, sq: &SqProducer) -> u32 {
        sq.tail.wrapping_sub(self.sq_head())
    }

    /// Hands the published SQEs to the kernel (any thread, no lock: the kernel takes at
    /// most what lies between its head and the tail, under its own lock). Also flushes
    /// completions the kernel holds back (CQ overflow, task work).
    pub(super) fn submit(&self) -> io::Result<u32> {
        // SAFETY: words of the live mapping.
        let (tail, flags) = unsafe {
            (
                (*self.sq_tail).load(Ordering::Acquire),
                (*self.sq_flags).load(Ordering::Acquire),
            )
        };
        let to_submit = tail.wrapping_sub(self.sq_head()).min(self.sq_entries);
        let held_back = flags & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN) != 0;
        if to_submit == 0 && !held_back {
            return Ok(0);
        }
        let getevents = if held_back { IORING_ENTER_GETEVENTS } else { 0 };
        self.enter(to_submit, 0, getevents)
    }

    /// Whether the kernel holds completions aside because the completion queue was full
    /// (IORING_FEAT_NODROP keeps them until an enter flushes them).
    pub(super) fn cq_overflowed(&self) -> bool {
        // SAFETY: a word of the live mapping.
        let flags = unsafe { (*self.sq_flags).load(Ordering::Acquire) };
        flags & IORING_SQ_CQ_OVERFLOW != 0
    }

    /// Moves the completions the kernel holds aside into the completion queue, as far as
    /// it has room.
    pub(super) fn flush_overflow(&self) {
        let _ = self.enter(0, 0, IORING_ENTER_GETEVENTS);
    }

    /// Hands in the published SQEs and waits for one CQE (or a signal).
    pub(super) fn submit_and_wait(&self) -> io::Result<u32> {
        // SAFETY: a word of the live mapping.
        let tail = unsafe { (*self.sq_tail).load(Ordering::Acquire) };
        let to_submit = tail.wrapping_sub(self.sq_head()).min(self.sq_entries);
        self.enter(to_submit, 1, IORING_ENTER_GETEVENTS)
    }

    /// Whether this thread can enter the ring (see [`Way`]); the first call on a thread
    /// registers the ring with it.
    pub(super) fn enters_here(&self) -> bool {
        self.way() != Way::Lost
    }

    /// Whether the ring's number still names the ring (one `fstat`).
    pub(super) fn still_numbered(&self) -> bool {
        identity(self.fd.as_raw_fd()).is_ok_and(|found| found == self.identity)
    }

    /// How this thread enters the ring, learnt at its first enter.
    fn way(&self) -> Way {
        let me = self as *const RawRing as usize;
        let known = WAYS_OF_THREAD.try_with(|ways| {
            let mut table = ways.get();
            if let Some(&(_, way)) = table.iter().find(|(ring, _)| *ring == me) {
                return way;
            }
            let way = self.learn_way();
            let free = table.iter().position(|(ring, _)| *ring == 0);
            table[free.unwrap_or(WAYS - 1)] = (me, way);
            ways.set(table);
            way
        });
        // A thread's locals have no destructor here, so they are always there; without
        // them the number serves.
        known.unwrap_or(Way::Number)
    }

    /// Registers the ring with this thread, if its number still names it.
    fn learn_way(&self) -> Way {
        if !self.still_numbered() {
            return Way::Lost;
        }
        let mut update = RsrcUpdate {
            offset: ANY_INDEX,
            resv: 0,
            data: self.fd.as_raw_fd() as u64,
        };
        // SAFETY: io_uring_register on this ring's fd reads and writes one live
        // `io_uring_rsrc_update`, laid out as the kernel's.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.fd.as_raw_fd(),
                IORING_REGISTER_RING_FDS,
                &mut update as *mut RsrcUpdate,
                1u32,
            )
        };
        if ret == 1 {
            Way::Registered(update.offset)
        } else {
            Way::Number
        }
    }

    /// `io_uring_enter` with no signal mask, the way this thread enters the ring.
    fn enter(&self, to_submit: u32, min_complete: u32, flags: u32) -> io::Result<u32> {
        let (target, flags) = match self.way() {
            Way::Registered(index) => (index as RawFd, flags | IORING_ENTER_REGISTERED_RING),
            Way::Number => (self.fd.as_raw_fd(), flags),
            Way::Lost => return Err(io::Error::from_raw_os_error(libc::EBADF)),
        };
        // SAFETY: io_uring_enter on this ring (by its number or its registered index) with
        // no argument pointer.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                target,
                to_submit,
                min_complete,
                flags,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret as u32)
        }
    }

    /// Whether CQEs wait that no thread has taken (the published head is behind the tail),
    /// without the completion lock: one a thread is taking now is its to take.
    pub(super) fn cq_ready(&self) -> bool {
        // SAFETY: words of the live mapping; Acquire on the tail as in `pop`.
        let (head, tail) = unsafe {
            (
                (*self.cq_head).load(Ordering::Relaxed),
                (*self.cq_tail).load(Ordering::Acquire),
            )
        };
        head != tail
    }

    /// Takes the oldest CQE there is, if any (`(user_data, res)`); the kernel may reuse its
    /// slot once [`RawRing::release`] published the new head.
    pub(super) fn pop(&self, cq: &mut CqConsumer) -> Option<(u64, i32)> {
        // SAFETY: a word of the live mapping; Acquire pairs with the kernel's release of
        // the tail after it wrote the CQE.
        let tail = unsafe { (*self.cq_tail).load(Ordering::Acquire) };
        if tail == cq.head {
            return None;
        }
        // SAFETY: the slot is in bounds and written (it is before the tail); `cq` is the
        // only reader that moves the head.
        let cqe = unsafe { &*self.cqes.add((cq.head & self.cq_mask) as usize) };
        let taken = (cqe.user_data, cqe.res);
        cq.head = cq.head.wrapping_add(1);
        Some(taken)
    }

    /// Publishes the head after the CQEs `pop` took: their slots go back to the kernel.
    pub(super) fn release(&self, cq: &CqConsumer) {
        // SAFETY: a word of the live mapping; Release: the CQEs were read before.
        unsafe { (*self.cq_head).store(cq.head, Ordering::Release) };
    }
}

impl AsFd for RawRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The file `fd` names, as (`st_dev`, `st_ino`).
fn identity(fd: RawFd) -> io::Result<(u64, u64)> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one live `stat`; a number that names nothing is EBADF.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((stat.st_dev, stat.st_ino))
}
