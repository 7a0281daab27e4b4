//! Buffers a request owns while it is in flight and hands back, as the type that went in,
//! on completion.
//!
//! A caller's buffer type takes part by implementing [`IoBuf`] (memory a write sends) and
//! [`IoBufMut`] (memory a read fills), as in tokio-uring. Inside, a request keeps its
//! buffers behind one erased box ([`Buf`]), so the engines see only `(address, length)`
//! segments and stay free of type parameters; the completion downcasts the box back to the
//! caller's type, and a wrong type asked for is `None`, never a reinterpretation.

use std::any::Any;
use std::io;
use std::ops::Range;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use smallvec::{smallvec, SmallVec};

use crate::sys::mem::{AlignedMem, RawMem, SharedMem};

/// Memory a write can send: a stable address and a length of initialized bytes.
///
/// # Safety
///
/// An implementor promises that `stable_ptr` points to `bytes_total()` bytes, of which the
/// first `bytes_init()` are initialized; that the address and both lengths stay the same
/// while the value is moved and while nothing calls a `&mut self` method on it (the
/// request owns it, so nothing can); and that the memory is not freed or written by anyone
/// else until the value is dropped.
pub unsafe trait IoBuf: Send + Sync + 'static {
    /// The address of the first byte.
    fn stable_ptr(&self) -> *const u8;

    /// How many bytes from the start are initialized: what a write sends.
    fn bytes_init(&self) -> usize;

    /// How many bytes the memory holds: what a read may fill.
    fn bytes_total(&self) -> usize;
}

/// Memory a read can fill: an [`IoBuf`] that may be written through its pointer.
///
/// # Safety
///
/// As [`IoBuf`]; in addition `stable_mut_ptr` is valid for writes of `bytes_total()` bytes,
/// and `set_init` records that bytes up to `pos` are initialized without moving them.
pub unsafe trait IoBufMut: IoBuf {
    /// The address of the first byte, for writing.
    fn stable_mut_ptr(&mut self) -> *mut u8;

    /// Records that the first `pos` bytes are initialized (a read filled them).
    ///
    /// # Safety
    ///
    /// The first `pos` bytes (`pos <= bytes_total()`) must be initialized.
    unsafe fn set_init(&mut self, pos: usize);
}

// SAFETY: a Vec's heap block does not move when the Vec does; `len <= capacity`, and the
// first `len` bytes are initialized. An empty Vec's dangling pointer is never accessed (length 0).
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: as above; the spare capacity is writable and `set_len` only grows over bytes
// the caller says are initialized.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        if pos > self.len() {
            // SAFETY: `pos <= capacity` and the bytes below it are initialized, by the
            // contract of `set_init`.
            unsafe { self.set_len(pos) }
        }
    }
}

// SAFETY: a boxed slice's block does not move with the box; all of it is initialized.
unsafe impl IoBuf for Box<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: as above; the length is fixed, so nothing needs recording.
unsafe impl IoBufMut for Box<[u8]> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, _pos: usize) {}
}

// SAFETY: 'static memory never moves or goes away, and a shared slice is only ever read.
unsafe impl IoBuf for &'static [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: 'static memory never moves or goes away; the exclusive borrow moved into the
// request, so nobody else can reach it until it comes back.
unsafe impl IoBuf for &'static mut [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: as above; all of it is initialized, the length is fixed.
unsafe impl IoBufMut for &'static mut [u8] {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, _pos: usize) {}
}

/// A buffer with a chosen alignment, for O_DIRECT (which wants the address, length and
/// offset aligned to the device's logical block size).
///
/// ```
/// let buf = aioctx::AlignedBuf::page_aligned(8192)?;
/// assert_eq!(buf.as_ptr() as usize % 4096, 0);
/// assert!(buf.iter().all(|&b| b == 0));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct AlignedBuf(AlignedMem);

impl AlignedBuf {
    /// `len` zeroed bytes aligned to `align` (a power of two).
    pub fn new(len: usize, align: usize) -> io::Result<AlignedBuf> {
        AlignedMem::zeroed(len, align).map(AlignedBuf)
    }

    /// `len` zeroed bytes aligned to 4096, good for O_DIRECT on every common device.
    pub fn page_aligned(len: usize) -> io::Result<AlignedBuf> {
        AlignedBuf::new(len, 4096)
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_mut_slice()
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len())
            .finish()
    }
}

// SAFETY: the aligned block is allocated once and freed only on drop; it does not move
// with the value; all of it is initialized (zeroed at allocation).
unsafe impl IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.0.as_slice().as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: as above; the length is fixed.
unsafe impl IoBufMut for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.0.as_mut_slice().as_mut_ptr()
    }
    unsafe fn set_init(&mut self, _pos: usize) {}
}

#[cfg(feature = "bytes")]
// SAFETY: `Bytes` is immutable and reference counted: its bytes never move or change while
// any handle (this one) lives.
unsafe impl IoBuf for bytes::Bytes {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

#[cfg(feature = "bytes")]
// SAFETY: a `BytesMut` owns its view of the block exclusively; the block does not move
// with the value; the first `len` bytes are initialized, up to `capacity` are writable.
unsafe impl IoBuf for bytes::BytesMut {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

#[cfg(feature = "bytes")]
// SAFETY: as above; `set_len` only grows over bytes the caller says are initialized.
unsafe impl IoBufMut for bytes::BytesMut {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        if pos > self.len() {
            // SAFETY: `pos <= capacity` and the bytes below it are initialized, by the
            // contract of `set_init`.
            unsafe { self.set_len(pos) }
        }
    }
}

/// The buffers of one request, of one caller type, erased: the engines see segments, the
/// completion gets the type back.
trait Segments: Send + Sync {
    /// `(address, length)` of each segment, in order.
    fn segments(&mut self) -> SegmentList;
    /// Total length of the segments.
    fn total_len(&self) -> usize;
    /// Records that a read transferred `n` bytes, segment by segment.
    fn filled(&mut self, n: usize);
    /// The typed buffers, for a downcast.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

/// Buffers a read fills: each up to its whole capacity.
struct Filled<B>(Vec<B>);

/// Buffers a write sends: each's initialized bytes.
struct Sent<B>(Vec<B>);

impl<B: IoBufMut> Segments for Filled<B> {
    fn segments(&mut self) -> SegmentList {
        let segment = |b: &mut B| (b.stable_mut_ptr(), b.bytes_total());
        self.0.iter_mut().map(segment).collect()
    }
    fn total_len(&self) -> usize {
        self.0.iter().map(IoBuf::bytes_total).sum()
    }
    fn filled(&mut self, n: usize) {
        let mut left = n;
        for buf in &mut self.0 {
            let here = left.min(buf.bytes_total());
            if here > 0 {
                // SAFETY: the engine reported `n` bytes transferred into the segments in
                // order, so the first `here` bytes of this one were written.
                unsafe { buf.set_init(here) };
            }
            left -= here;
        }
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        Box::new(self.0)
    }
}

impl<B: IoBuf> Segments for Sent<B> {
    fn segments(&mut self) -> SegmentList {
        // Engines only read through a write's segments.
        let segment = |b: &B| (b.stable_ptr().cast_mut(), b.bytes_init());
        self.0.iter().map(segment).collect()
    }
    fn total_len(&self) -> usize {
        self.0.iter().map(IoBuf::bytes_init).sum()
    }
    fn filled(&mut self, _n: usize) {}
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        Box::new(self.0)
    }
}

/// The caller's buffers of one request, owned by it while it is in flight.
pub(crate) struct Buf(Box<dyn Segments>);

impl Buf {
    /// Buffers a read fills.
    pub(crate) fn filled<B: IoBufMut>(bufs: Vec<B>) -> Buf {
        Buf(Box::new(Filled(bufs)))
    }

    /// Buffers a write sends.
    pub(crate) fn sent<B: IoBuf>(bufs: Vec<B>) -> Buf {
        Buf(Box::new(Sent(bufs)))
    }

    /// Records the bytes a completed read transferred (`res`, if it is not an error).
    pub(crate) fn complete(&mut self, res: i64) {
        if let Ok(n) = usize::try_from(res) {
            self.0.filled(n);
        }
    }

    /// The buffers as the type that went in, or None if they were of another type.
    pub(crate) fn into_typed<B: IoBuf>(self) -> Option<Vec<B>> {
        self.0.into_any().downcast::<Vec<B>>().ok().map(|b| *b)
    }
}

impl std::fmt::Debug for Buf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buf")
            .field("len", &self.0.total_len())
            .finish()
    }
}

#[cfg(test)]
impl From<Vec<u8>> for Buf {
    fn from(v: Vec<u8>) -> Buf {
        Buf::filled(vec![v])
    }
}

/// The memory a request reads into or writes from: owned by the request (Rust callers),
/// shared memory the caller keeps reusing, or lent by a C caller for the request's lifetime.
#[derive(Debug)]
pub(crate) enum Buffers {
    None,
    Owned(Buf),
    Shared(Arc<SharedMem>, Range<usize>),
    Lent(Vec<RawMem>),
}

/// `(address, length)` of each segment of a request, in order: most have one or a few,
/// which take no allocation.
pub(crate) type SegmentList = SmallVec<[(*mut u8, usize); 4]>;

impl Buffers {
    /// `(address, length)` of each segment, in order, for the engines.
    pub(crate) fn segments(&mut self) -> SegmentList {
        match self {
            Buffers::None => SegmentList::new(),
            Buffers::Owned(buf) => buf.0.segments(),
            Buffers::Shared(mem, range) => smallvec![(mem.ptr_at(range.start), range.len())],
            Buffers::Lent(raw) => raw.iter().map(|r| (r.as_ptr(), r.len())).collect(),
        }
    }

    /// Total length in bytes.
    pub(crate) fn total_len(&self) -> usize {
        match self {
            Buffers::None => 0,
            Buffers::Owned(buf) => buf.0.total_len(),
            Buffers::Shared(_, range) => range.len(),
            Buffers::Lent(raw) => raw.iter().map(|r| r.len()).sum(),
        }
    }

    /// The owned buffers, to hand back to a Rust caller; lent memory stays the caller's.
    pub(crate) fn into_owned(self) -> Vec<Buf> {
        match self {
            Buffers::Owned(buf) => vec![buf],
            Buffers::None | Buffers::Shared(..) | Buffers::Lent(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AlignedBuf, Buf};

    #[test]
    fn an_empty_aligned_buf_has_no_bytes() {
        let empty = AlignedBuf::page_aligned(0).unwrap();
        assert_eq!(empty.len(), 0);
        assert!(empty.is_empty());
        assert_eq!(AlignedBuf::new(3, 512).unwrap().len(), 3);
    }

    #[test]
    fn a_read_into_spare_capacity_grows_the_vec_by_what_it_filled() {
        let mut buf = Buf::filled(vec![Vec::with_capacity(16)]);
        buf.complete(5);
        assert_eq!(buf.into_typed::<Vec<u8>>().unwrap()[0].len(), 5);
    }

    #[test]
    fn buffers_come_back_only_as_the_type_that_went_in() {
        let buf = Buf::sent(vec![Box::<[u8]>::from(&b"abc"[..])]);
        assert!(Buf::sent(vec![vec![1u8]])
            .into_typed::<Box<[u8]>>()
            .is_none());
        assert_eq!(&*buf.into_typed::<Box<[u8]>>().unwrap()[0], b"abc");
    }
}
