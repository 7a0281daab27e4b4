//! Buffers a request owns while it is in flight and hands back on completion.

use std::io;
use std::ops::{Deref, DerefMut};

use std::ops::Range;
use std::sync::Arc;

use crate::sys::mem::{AlignedMem, RawMem, SharedMem};

/// A buffer with a chosen alignment, for O_DIRECT (which wants the address, length and
/// offset aligned to the device's logical block size).
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

/// A buffer owned by a request: reads fill its whole length, writes send its whole length.
#[derive(Debug)]
pub enum Buf {
    Vec(Vec<u8>),
    Boxed(Box<[u8]>),
    Aligned(AlignedBuf),
}

impl Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Buf::Vec(v) => v,
            Buf::Boxed(b) => b,
            Buf::Aligned(a) => a,
        }
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Buf::Vec(v) => v,
            Buf::Boxed(b) => b,
            Buf::Aligned(a) => a,
        }
    }
}

impl From<Vec<u8>> for Buf {
    fn from(v: Vec<u8>) -> Buf {
        Buf::Vec(v)
    }
}

impl From<Box<[u8]>> for Buf {
    fn from(b: Box<[u8]>) -> Buf {
        Buf::Boxed(b)
    }
}

impl From<AlignedBuf> for Buf {
    fn from(a: AlignedBuf) -> Buf {
        Buf::Aligned(a)
    }
}

/// The memory a request reads into or writes from: owned by the request (Rust callers),
/// shared memory the caller keeps reusing, or lent by a C caller for the request's lifetime.
#[derive(Debug)]
pub(crate) enum Buffers {
    None,
    Owned(Vec<Buf>),
    Shared(Arc<SharedMem>, Range<usize>),
    Lent(Vec<RawMem>),
}

impl Buffers {
    /// `(address, length)` of each segment, in order, for the engines.
    pub(crate) fn segments(&mut self) -> Vec<(*mut u8, usize)> {
        match self {
            Buffers::None => Vec::new(),
            Buffers::Owned(bufs) => bufs.iter_mut().map(|b| (b.as_mut_ptr(), b.len())).collect(),
            Buffers::Shared(mem, range) => vec![(mem.ptr_at(range.start), range.len())],
            Buffers::Lent(raw) => raw.iter().map(|r| (r.as_ptr(), r.len())).collect(),
        }
    }

    /// Total length in bytes.
    pub(crate) fn total_len(&self) -> usize {
        match self {
            Buffers::None => 0,
            Buffers::Owned(bufs) => bufs.iter().map(|b| b.len()).sum(),
            Buffers::Shared(_, range) => range.len(),
            Buffers::Lent(raw) => raw.iter().map(|r| r.len()).sum(),
        }
    }

    /// The owned buffers, to hand back to a Rust caller; lent memory stays the caller's.
    pub(crate) fn into_owned(self) -> Vec<Buf> {
        match self {
            Buffers::Owned(bufs) => bufs,
            Buffers::None | Buffers::Shared(..) | Buffers::Lent(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AlignedBuf;

    #[test]
    fn an_empty_aligned_buf_has_no_bytes() {
        let empty = AlignedBuf::page_aligned(0).unwrap();
        assert_eq!(empty.len(), 0);
        assert!(empty.is_empty());
        assert_eq!(AlignedBuf::new(3, 512).unwrap().len(), 3);
    }
}
