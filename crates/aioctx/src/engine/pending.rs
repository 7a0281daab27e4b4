//! The keyed, cancellable set of requests an engine keeps in user space: queued for a
//! worker, waiting in the poller for readiness, or polls out in the kernel. One place for
//! what each of them needs: arrival order, an id to find an entry again, and cancel's
//! "take those matching this key, at most this many".

use std::collections::BTreeMap;

/// What a pending entry is known by to cancel: its request's key (`obj`), if it has one
/// that may be cancelled now.
pub(crate) trait Keyed {
    fn cancel_key(&self) -> Option<u64>;
}

impl Keyed for crate::core::Inflight {
    fn cancel_key(&self) -> Option<u64> {
        Some(self.request.key())
    }
}

/// Entries by id, which is arrival order.
pub(crate) struct Pending<T> {
    next_id: u64,
    entries: BTreeMap<u64, T>,
}

impl<T> Default for Pending<T> {
    fn default() -> Pending<T> {
        Pending {
            next_id: 0,
            entries: BTreeMap::new(),
        }
    }
}

impl<T: Keyed> Pending<T> {
    /// Adds an entry behind all others; returns its id.
    pub(crate) fn insert(&mut self, entry: T) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(id, entry);
        id
    }

    /// Takes the oldest entry.
    pub(crate) fn pop_oldest(&mut self) -> Option<T> {
        self.entries.pop_first().map(|(_, entry)| entry)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        self.entries.get_mut(&id)
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<T> {
        self.entries.remove(&id)
    }

    /// The entries, oldest first, with their ids.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.entries.iter().map(|(id, entry)| (*id, entry))
    }

    /// The ids of the oldest entries (at most `limit`) whose key `matching` selects and
    /// `eligible` admits, without taking them: for entries a cancel marks rather than takes.
    pub(crate) fn select(
        &self,
        matching: impl Fn(u64) -> bool,
        eligible: impl Fn(&T) -> bool,
        limit: usize,
    ) -> Vec<u64> {
        self.entries
            .iter()
            .filter(|(_, entry)| eligible(entry) && entry.cancel_key().is_some_and(&matching))
            .map(|(id, _)| *id)
            .take(limit)
            .collect()
    }

    /// Takes the oldest entries (at most `limit`) whose key `matching` selects.
    pub(crate) fn take(&mut self, matching: impl Fn(u64) -> bool, limit: usize) -> Vec<T> {
        let chosen = self.select(matching, |_| true, limit);
        chosen
            .into_iter()
            .filter_map(|id| self.remove(id))
            .collect()
    }

    /// Takes every entry (destroy's cancel of all).
    pub(crate) fn cancel_all(&mut self) -> Vec<T> {
        std::mem::take(&mut self.entries).into_values().collect()
    }

    /// Forgets every entry without completing it (a forked child's copies of the parent's
    /// requests, which must never run there).
    pub(crate) fn forget_all(&mut self) {
        std::mem::forget(std::mem::take(&mut self.entries));
    }
}
