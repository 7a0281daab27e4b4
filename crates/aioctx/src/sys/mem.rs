//! Memory the I/O engines write into: the mapped completion ring, aligned buffers for
//! O_DIRECT, and caller memory handed over through the C ABI.

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::abi::{AioRingHeader, IoEvent};

/// A page-aligned, zeroed mapping holding an `aio_ring`: the 32-byte header followed by
/// `nr` events, then an identity slot (the 32 bytes after the last event). Its address is
/// the C handle.
///
/// The memory is mapped twice (a memfd, closed once mapped): the library reads and writes
/// only its own view, which nobody else knows of, and the caller holds the other, which it
/// may move with `mremap`, as the kernel allows for its own ring (checkpoint/restore tools
/// do): completions keep landing in the same pages, visible at the new address. The first
/// word of the identity slot is a token that tells this ring's memory from any other, so
/// that a handle at a new address can be recognised (`moved_to`); it lies inside the pages
/// the kernel's own ring of that many events would take, so a caller that moves exactly
/// those moves it too. Where no memfd can be
/// made, a single anonymous mapping serves both, and a moved ring is not recognised.
pub struct RingMem {
    map: Mapping,
    /// The caller's view (None: the caller holds `map` itself).
    caller: Option<CallerView>,
    nr: u32,
    /// Where the identity slot starts: right after the last event.
    identity_offset: usize,
    token: u64,
}

/// The caller's mapping of the ring, wherever the caller last moved it as far as we know.
struct CallerView {
    addr: AtomicUsize,
    len: usize,
}

/// An anonymous, private, zeroed, page-aligned mapping, unmapped on drop.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// A shared mapping of `len` bytes of `fd`.
    fn shared(fd: &std::os::fd::OwnedFd, len: usize) -> io::Result<Mapping> {
        use std::os::fd::AsRawFd;
        // SAFETY: a shared mapping of a memfd we own, with no address hint; checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
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
    /// to whole pages and every slot that fits is used, as the kernel does, but for the
    /// last, the identity slot).
    pub fn map(min_events: u32) -> io::Result<RingMem> {
        let header = std::mem::size_of::<AioRingHeader>();
        let event = std::mem::size_of::<IoEvent>();
        let page = page_size();
        let wanted = header + (min_events as usize + 1) * event;
        let total = wanted.div_ceil(page) * page;
        let slots = (total - header) / event;
        let nr =
            u32::try_from(slots - 1).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let (map, caller) = match two_views(total) {
            Ok((own, caller)) => {
                let view = CallerView {
                    addr: AtomicUsize::new(caller.as_ptr() as usize),
                    len: caller.len,
                };
                // The caller's view is unmapped by `drop`, where the caller left it.
                std::mem::forget(caller);
                (own, Some(view))
            }
            Err(_) => (Mapping::new(total)?, None),
        };
        let token = ring_token(map.as_ptr() as usize);
        let ring = RingMem {
            map,
            caller,
            nr,
            identity_offset: header + nr as usize * event,
            token,
        };
        ring.identity().store(token, Ordering::Relaxed);
        Ok(ring)
    }

    /// Number of event slots.
    pub fn nr(&self) -> u32 {
        self.nr
    }

    /// Address of the header: the C handle (where the caller last moved it, as far as
    /// `moved_to` was told).
    pub fn as_ptr(&self) -> *mut AioRingHeader {
        match &self.caller {
            Some(view) => view.addr.load(Ordering::Relaxed) as *mut AioRingHeader,
            None => self.map.as_ptr().cast(),
        }
    }

    /// Where the identity token lies, from the handle, and what it is: a handle whose
    /// memory holds `token` at `offset` is this ring's memory.
    pub fn identity_at(&self) -> (usize, u64) {
        (self.identity_offset, self.token)
    }

    /// Records that the caller moved its view to `handle` (checked by the C ABI through
    /// the identity token); false if the ring cannot move (a single mapping).
    pub fn moved_to(&self, handle: *mut AioRingHeader) -> bool {
        match &self.caller {
            Some(view) => {
                view.addr.store(handle as usize, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    fn identity(&self) -> &AtomicU64 {
        // SAFETY: the identity slot follows the header and events inside the live mapping,
        // 8-aligned (a multiple of 32 from a page-aligned base).
        unsafe {
            &*self
                .map
                .as_ptr()
                .add(self.identity_offset)
                .cast::<AtomicU64>()
        }
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

impl Drop for RingMem {
    /// Unmaps the caller's view only if it still is this ring's memory where we last knew
    /// it: a caller that moved it without telling us may have mapped something else there.
    fn drop(&mut self) {
        let Some(view) = &self.caller else { return };
        let addr = view.addr.load(Ordering::Relaxed);
        let still_ours = match read_own_memory(addr + self.identity_offset) {
            Ok(token) => token == self.token,
            // Nothing mapped there: the caller moved it away.
            Err(libc::EFAULT) => false,
            // The check itself is refused (a seccomp filter): the caller most likely left
            // the ring where it was, and leaking it on every destroy would be worse.
            Err(_) => true,
        };
        if still_ours {
            // SAFETY: the range is the caller's view of this ring (its token is there),
            // which nothing of ours uses; the caller destroyed the context.
            unsafe { libc::munmap(addr as *mut libc::c_void, view.len) };
        }
    }
}

/// The same fresh memfd mapped twice: the library's view and the caller's.
fn two_views(len: usize) -> io::Result<(Mapping, Mapping)> {
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create takes a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"aioctx-ring".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns; it is closed when this returns
    // (the mappings keep the memory).
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate sizes the memfd we own.
    if unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&fd), len as libc::off_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((Mapping::shared(&fd, len)?, Mapping::shared(&fd, len)?))
}

/// A token no other memory is likely to hold at that place: the library's own view's
/// address (unique among live rings) mixed with a per-process random salt.
fn ring_token(own: usize) -> u64 {
    static SALT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let salt = *SALT.get_or_init(|| {
        let mut salt = 0u64;
        // SAFETY: getrandom writes at most 8 bytes into the live local.
        unsafe { libc::getrandom((&mut salt as *mut u64).cast(), 8, 0) };
        salt | 1
    });
    (own as u64).rotate_left(17) ^ salt
}

/// Reads 8 bytes of this process's memory at `addr` (`EFAULT` where nothing is mapped).
fn read_own_memory(addr: usize) -> Result<u64, i32> {
    let mut value = 0u64;
    let local = libc::iovec {
        iov_base: (&mut value as *mut u64).cast(),
        iov_len: 8,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: 8,
    };
    // SAFETY: `local` is 8 bytes of a live local; the kernel checks `remote` and fails
    // instead of faulting.
    let done = unsafe { libc::process_vm_readv(super::fork::pid(), &local, 1, &remote, 1, 0) };
    match done {
        8 => Ok(value),
        -1 => Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EFAULT)),
        _ => Err(libc::EFAULT),
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

    /// The start of the memory.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the length is 0.
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

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.map.len
    }

    /// Whether the length is 0.
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
