//! Memory the I/O engines write into: the mapped completion ring, aligned buffers for
//! O_DIRECT, and caller memory handed over through the C ABI.

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::abi::{AioRingHeader, IoEvent};

/// An anonymous, page-aligned, zeroed mapping holding an `aio_ring`: the 32-byte header
/// followed by `nr` events. It is the C handle, so its address must never move.
pub struct RingMem {
    map: Mapping,
    nr: u32,
}

/// An anonymous, private, zeroed, page-aligned mapping, unmapped on drop.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(Mapping { base, len })
    }

    fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

// SAFETY: the mapping is plain memory; every access after construction goes through
// atomics (header words and event words), so sharing it between threads is sound.
unsafe impl Send for RingMem {}
// SAFETY: as above, no access through `&RingMem` is a non-atomic write.
unsafe impl Sync for RingMem {}

/// The words of the header, in order, as `u32` indices.
#[derive(Clone, Copy)]
pub enum HeaderWord {
    Id = 0,
    Nr = 1,
    Head = 2,
    Tail = 3,
    Magic = 4,
    CompatFeatures = 5,
    IncompatFeatures = 6,
    HeaderLength = 7,
}

impl RingMem {
    /// Maps a ring with room for at least `min_events` events (the mapping is rounded up
    /// to whole pages and every slot that fits is used, as the kernel does).
    pub fn map(min_events: u32) -> io::Result<RingMem> {
        let header = std::mem::size_of::<AioRingHeader>();
        let event = std::mem::size_of::<IoEvent>();
        let page = page_size();
        let wanted = header + (min_events as usize) * event;
        let len = wanted.div_ceil(page) * page;
        let nr = u32::try_from((len - header) / event)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        Ok(RingMem {
            map: Mapping::new(len)?,
            nr,
        })
    }

    /// Number of event slots.
    pub fn nr(&self) -> u32 {
        self.nr
    }

    /// Address of the header: the C handle.
    pub fn as_ptr(&self) -> *mut AioRingHeader {
        self.map.as_ptr().cast()
    }

    /// One header word. Consumers outside this process's Rust code (C programs reaping the
    /// ring) write `head` with plain stores; atomics here keep our side free of data races.
    pub fn header(&self, word: HeaderWord) -> &AtomicU32 {
        // SAFETY: the header is 8 aligned u32 words at the start of a live page-aligned
        // mapping, and AtomicU32 has the layout of u32.
        unsafe { &*self.map.as_ptr().cast::<AtomicU32>().add(word as usize) }
    }

    fn event_words(&self, slot: u32) -> &[AtomicU64; 4] {
        assert!(slot < self.nr, "ring slot out of range");
        let offset = std::mem::size_of::<AioRingHeader>() + slot as usize * 32;
        // SAFETY: `slot < nr`, so the 32 bytes at `offset` lie inside the mapping; the
        // offset is a multiple of 8 from a page-aligned base.
        unsafe { &*self.map.as_ptr().add(offset).cast::<[AtomicU64; 4]>() }
    }

    /// Stores an event into a slot; publication is the caller's store to `tail`.
    pub fn write_event(&self, slot: u32, event: IoEvent) {
        let words = self.event_words(slot);
        words[0].store(event.data, Ordering::Relaxed);
        words[1].store(event.obj, Ordering::Relaxed);
        words[2].store(event.res as u64, Ordering::Relaxed);
        words[3].store(event.res2 as u64, Ordering::Relaxed);
    }

    /// Loads the event in a slot the caller has seen published.
    pub fn read_event(&self, slot: u32) -> IoEvent {
        let words = self.event_words(slot);
        IoEvent {
            data: words[0].load(Ordering::Relaxed),
            obj: words[1].load(Ordering::Relaxed),
            res: words[2].load(Ordering::Relaxed) as i64,
            res2: words[3].load(Ordering::Relaxed) as i64,
        }
    }
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// A zeroed heap allocation with a chosen alignment (for O_DIRECT).
pub struct AlignedMem {
    ptr: NonNull<u8>,
    /// At least one byte: the allocator takes no empty layouts.
    layout: Layout,
    /// The length asked for, which may be 0.
    len: usize,
}

// SAFETY: AlignedMem uniquely owns its allocation, like a Box<[u8]>.
unsafe impl Send for AlignedMem {}
// SAFETY: shared access only hands out `&[u8]`.
unsafe impl Sync for AlignedMem {}

impl AlignedMem {
    /// Allocates `len` zeroed bytes aligned to `align` (a power of two).
    pub fn zeroed(len: usize, align: usize) -> io::Result<AlignedMem> {
        let layout = Layout::from_size_align(len.max(1), align)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: the layout has a nonzero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(AlignedMem { ptr, layout, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` owns `len` initialised (zeroed or written) bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len()) }
    }
}

impl Drop for AlignedMem {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this exact layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// Caller memory described by address and length: what a C iocb points at. aioctx never
/// frees it; the caller keeps it valid until the request's event is delivered.
#[derive(Debug)]
pub struct RawMem {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: RawMem is an address the caller lent for the request's lifetime (see `new`); the
// engine's worker threads use it exactly as the kernel would.
unsafe impl Send for RawMem {}
// SAFETY: as above; aioctx itself never reads or writes through a shared RawMem.
unsafe impl Sync for RawMem {}

impl RawMem {
    /// # Safety
    /// `ptr..ptr+len` must stay valid for reads and writes until the request that carries it
    /// has completed (its event is in the ring), exactly as for kernel AIO.
    pub unsafe fn new(ptr: *mut u8, len: usize) -> RawMem {
        RawMem { ptr, len }
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Memory a caller keeps and reuses across requests and contexts, as a C program reuses its
/// buffers: mapped once and unmapped only when the last `Arc` (the caller's or an in-flight
/// request's) goes. Rust reads and writes it only as atomic words, so an engine writing into
/// it at any time is observable (the race reproducer looks for exactly that), never undefined
/// behaviour. Page-aligned, so it serves O_DIRECT.
pub struct SharedMem {
    map: Mapping,
}

// SAFETY: the mapping is plain memory accessed from Rust only through atomics.
unsafe impl Send for SharedMem {}
// SAFETY: as above.
unsafe impl Sync for SharedMem {}

impl SharedMem {
    /// Maps `len` zeroed bytes (rounded up to a multiple of 8).
    pub fn map(len: usize) -> io::Result<SharedMem> {
        let len = len.max(8).next_multiple_of(8);
        Ok(SharedMem {
            map: Mapping::new(len)?,
        })
    }

    pub fn len(&self) -> usize {
        self.map.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The memory as 64-bit words.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is `len` bytes, a multiple of 8, page-aligned, and lives as
        // long as `self`; AtomicU64 has the layout of u64.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU64>(), self.len() / 8) }
    }

    /// Address of byte `offset`, for an engine to read or write through.
    pub fn ptr_at(&self, offset: usize) -> *mut u8 {
        assert!(offset <= self.len(), "offset past the end of shared memory");
        // SAFETY: `offset <= len`, so the result is inside or one past the mapping.
        unsafe { self.map.as_ptr().add(offset) }
    }
}

impl std::fmt::Debug for SharedMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMem")
            .field("len", &self.len())
            .finish()
    }
}
