//! The handle table: which `io_context_t` values name a live context of this process.
//!
//! A handle is the address of its context's ring (SPEC §2), but it is only ever looked up
//! here, never dereferenced, so a stale, forged or destroyed handle is `EINVAL`. After
//! `fork()` the child's copies of the parent's entries stop resolving (as the kernel's do):
//! every entry carries the fork generation it was made in.
//!
//! A ring the caller moved with `mremap` keeps working at its new address, as on the
//! kernel: a handle not in the table whose memory holds a live ring's identity token (read
//! without faulting) is that ring, and the table follows it there. Its old address then
//! names nothing, as on the kernel: every lookup checks that token (a caller that scribbles
//! over it, past the last event, loses its handle).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use aioctx::ffi::{generation, hold_write_across_fork};
use aioctx::Context;

use crate::user;

struct Entry {
    context: Arc<Context>,
    generation: u64,
}

type Table = BTreeMap<usize, Entry>;

/// Handle to context. Setup and destroy write it; every other call reads it.
static TABLE: RwLock<Table> = RwLock::new(BTreeMap::new());

/// How many times the table changed, counted after each change under its lock: a lookup
/// a thread remembers ([`LAST`]) stands while the count is the one read before it.
static CHANGES: AtomicU64 = AtomicU64::new(0);

/// A thread's last lookup that found its context filed: a program that submits and reaps
/// on one context finds it again without the table's lock (two atomic updates) and walk.
/// Only a weak reference: a destroyed context is not kept alive by it.
struct Last {
    handle: usize,
    changes: u64,
    generation: u64,
    context: Weak<Context>,
}

thread_local! {
    static LAST: Cell<Option<Last>> = const { Cell::new(None) };
}

// Entries carry the library's fork generation (`aioctx::ffi::generation`), which a child
// of `fork()` counts one higher: entries of an older generation belong to an ancestor
// process. The parent's entries are never dropped in the child (dropping one would wait for
// requests whose workers did not survive the fork); they leak.

fn read_table() -> RwLockReadGuard<'static, Table> {
    TABLE
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_table() -> RwLockWriteGuard<'static, Table> {
    TABLE
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Has the library's fork registry hold the table's write lock across `fork()` (the
/// process has one fork-handler registration), so the child never inherits it locked by
/// a thread that does not exist there. The table is a leaf lock: nothing takes another lock
/// while holding it, and no lock of the library is held while taking it, so where it falls
/// in the registry's order does not matter.
fn watch_forks() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| hold_write_across_fork(&TABLE, |_| {}));
}

/// Registers a new context; returns its handle (its ring's address).
pub(crate) fn insert(context: Context) -> (usize, Arc<Context>) {
    watch_forks();
    let handle = context.ring_ptr() as usize;
    let context = Arc::new(context);
    let entry = Entry {
        context: Arc::clone(&context),
        generation: generation(),
    };
    let mut table = write_table();
    table.insert(handle, entry);
    changed();
    drop(table);
    (handle, context)
}

/// The live context a handle names in this process, if any.
pub(crate) fn lookup(handle: usize) -> Option<Arc<Context>> {
    let generation = generation();
    // Read before the table: a change made after it shows in the count.
    let changes = CHANGES.load(Ordering::Acquire);
    let filed = last_lookup(handle, changes, generation).or_else(|| {
        let filed = read_table()
            .get(&handle)
            .filter(|entry| entry.generation == generation)
            .map(|entry| Arc::clone(&entry.context))?;
        let last = Last {
            handle,
            changes,
            generation,
            context: Arc::downgrade(&filed),
        };
        let _ = LAST.try_with(|cell| cell.set(Some(last)));
        Some(filed)
    });
    match filed {
        // Still there, unless the caller moved it away (then the new address will say).
        Some(context) if holds_ring_of(handle, &context) => Some(context),
        Some(_) => None,
        None => moved_ring(handle, generation),
    }
}

/// This thread's last lookup, if it was of `handle` and the table has not changed since.
fn last_lookup(handle: usize, changes: u64, generation: u64) -> Option<Arc<Context>> {
    // Taken out and put back: a lookup from a signal handler meanwhile finds none.
    let last = LAST.try_with(Cell::take).ok().flatten()?;
    let found = (last.handle == handle && last.changes == changes && last.generation == generation)
        .then(|| last.context.upgrade())
        .flatten();
    let _ = LAST.try_with(|cell| cell.set(Some(last)));
    found
}

/// Counts a change of the table; called under its write lock, after the change.
fn changed() {
    CHANGES.fetch_add(1, Ordering::Release);
}

/// Whether the memory at `handle` holds `context`'s ring (its identity token, read
/// without faulting and without a system call).
fn holds_ring_of(handle: usize, context: &Context) -> bool {
    let (offset, token) = context.ring_identity();
    handle
        .checked_add(offset)
        .is_some_and(|at| user::read::<u64>(at) == Ok(token))
}

/// The live context whose ring the caller moved to `handle`, now filed under it.
fn moved_ring(handle: usize, generation: u64) -> Option<Arc<Context>> {
    // The header's `nr` only says where to look for the token: a wrong one finds nothing.
    let nr: u32 = user::read(handle.checked_add(4)?).ok()?;
    let event = size_of::<aioctx::ffi::abi::IoEvent>();
    let offset = (nr as usize).checked_mul(event)?.checked_add(32)?;
    let token: u64 = user::read(handle.checked_add(offset)?).ok()?;
    let mut table = write_table();
    let old = table
        .iter()
        .find(|(_, entry)| {
            entry.generation == generation && entry.context.ring_identity() == (offset, token)
        })
        .map(|(&old, _)| old)?;
    // A ring in one mapping cannot follow a move: the library still writes at the old
    // address, so the new one is not a handle.
    if !table[&old].context.ring_moved_to(handle as *mut _) {
        return None;
    }
    let entry = table.remove(&old)?;
    let context = Arc::clone(&entry.context);
    table.insert(handle, entry);
    changed();
    Some(context)
}

/// Forgets a destroyed context's handle (unless it already names another context). The
/// ring stays mapped until the last caller still using the context lets go of it.
pub(crate) fn remove(handle: usize, context: &Arc<Context>) {
    let mut table = write_table();
    let removed = table
        .get(&handle)
        .is_some_and(|entry| Arc::ptr_eq(&entry.context, context))
        .then(|| table.remove(&handle));
    changed();
    // A context is released outside the lock: its drop may unmap the ring.
    drop(table);
    drop(removed);
}

/// The live contexts of this process, unless the table is busy (for a report at exit, which
/// must not wait for a thread that will never run again).
pub(crate) fn live_contexts() -> Vec<Arc<Context>> {
    let Ok(table) = TABLE.try_read() else {
        return Vec::new();
    };
    let generation = generation();
    table
        .values()
        .filter(|entry| entry.generation == generation)
        .map(|entry| Arc::clone(&entry.context))
        .collect()
}
