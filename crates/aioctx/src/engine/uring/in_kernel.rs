//! The requests an io_uring instance holds, by context: what cancel and destroy may name.
//!
//! A request's address (its SQE's `user_data`) stays in this table from before its SQE is
//! pushed until its CQE was taken, and the table lives under the instance's submission
//! lock, under which every cancel SQE is pushed: so the address a cancel names cannot have
//! been freed and reused by another request in between. Each context has a table of its
//! own, so that cancel and destroy touch exactly their own context's requests.

use std::collections::HashMap;

/// A context among those sharing an instance.
pub(super) type Owner = u64;

/// How often a request the kernel cancelled on its own is submitted again before its
/// `-ECANCELED` is delivered (a bound against resubmitting for ever).
const MAX_RESUBMITS: u8 = 64;

/// A request the kernel holds, as the table knows it.
pub(super) struct Registered {
    /// The request's identity (`obj`), for cancel.
    key: u64,
    /// Whether a cancel was issued for it: `-ECANCELED` is then its answer, and a second
    /// cancel is `EINVAL` (a request answers `-EINPROGRESS` once).
    cancel_issued: bool,
    /// How often it was submitted again after the kernel cancelled it on its own.
    resubmitted: u8,
}

impl Registered {
    /// Whether `res` is a cancel nobody asked for, from the exit of the submitting thread.
    pub(super) fn orphaned(&self, res: i32) -> bool {
        res == -libc::ECANCELED && !self.cancel_issued && self.resubmitted < MAX_RESUBMITS
    }

    /// The entry of the same request submitted again after it was orphaned.
    pub(super) fn resubmitted(self) -> Registered {
        Registered {
            resubmitted: self.resubmitted + 1,
            ..self
        }
    }
}

/// Every context's requests in the kernel, by `user_data`.
#[derive(Default)]
pub(super) struct InKernel {
    tables: HashMap<Owner, HashMap<u64, Registered>>,
}

impl InKernel {
    /// Records a request before its SQE is pushed.
    pub(super) fn register(&mut self, owner: Owner, user_data: u64, key: u64) {
        self.insert(
            owner,
            user_data,
            Registered {
                key,
                cancel_issued: false,
                resubmitted: 0,
            },
        );
    }

    /// Records a request again (one that was orphaned and is submitted anew).
    pub(super) fn insert(&mut self, owner: Owner, user_data: u64, registered: Registered) {
        self.tables
            .entry(owner)
            .or_default()
            .insert(user_data, registered);
    }

    /// Forgets a request whose CQE was taken; after this its memory may be freed.
    pub(super) fn unregister(&mut self, owner: Owner, user_data: u64) -> Option<Registered> {
        self.tables.get_mut(&owner)?.remove(&user_data)
    }

    /// Marks for cancel the request of `owner` whose identity is `key` and that no cancel
    /// named yet; its `user_data`, or None if there is no such request.
    pub(super) fn cancel_one(&mut self, owner: Owner, key: u64) -> Option<u64> {
        let table = self.tables.get_mut(&owner)?;
        let (&user_data, registered) = table
            .iter_mut()
            .find(|(_, registered)| registered.key == key && !registered.cancel_issued)?;
        registered.cancel_issued = true;
        Some(user_data)
    }

    /// Marks for cancel every request of `owner` that no cancel named yet; their
    /// `user_data`s.
    pub(super) fn cancel_all(&mut self, owner: Owner) -> Vec<u64> {
        let Some(table) = self.tables.get_mut(&owner) else {
            return Vec::new();
        };
        table
            .iter_mut()
            .filter(|(_, registered)| !registered.cancel_issued)
            .map(|(&user_data, registered)| {
                registered.cancel_issued = true;
                user_data
            })
            .collect()
    }

    /// Drops the table of a context that is gone (destroy left nothing of it in the kernel).
    /// The map of tables shrinks as contexts go, so that many contexts, once destroyed,
    /// leave no memory behind.
    pub(super) fn forget(&mut self, owner: Owner) {
        self.tables.remove(&owner);
        if self.tables.capacity() > 64 && self.tables.len() < self.tables.capacity() / 4 {
            self.tables.shrink_to(2 * self.tables.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_cancelled_once() {
        let mut in_kernel = InKernel::default();
        in_kernel.register(1, 0x1000, 7);
        assert_eq!(in_kernel.cancel_one(1, 7), Some(0x1000));
        assert_eq!(in_kernel.cancel_one(1, 7), None);
        assert!(
            in_kernel.cancel_all(1).is_empty(),
            "already being cancelled"
        );
    }

    #[test]
    fn cancel_touches_only_its_own_context() {
        let mut in_kernel = InKernel::default();
        in_kernel.register(1, 0x1000, 7);
        in_kernel.register(2, 0x2000, 7);
        assert_eq!(in_kernel.cancel_all(1), vec![0x1000]);
        assert_eq!(in_kernel.cancel_one(2, 7), Some(0x2000));
        assert!(in_kernel.unregister(1, 0x2000).is_none());
        assert!(in_kernel.unregister(2, 0x2000).is_some());
    }

    #[test]
    fn a_cancelled_request_is_not_resubmitted() {
        let mut in_kernel = InKernel::default();
        in_kernel.register(1, 0x1000, 7);
        in_kernel.register(1, 0x2000, 8);
        in_kernel.cancel_one(1, 7);
        let cancelled = in_kernel.unregister(1, 0x1000).unwrap();
        let orphan = in_kernel.unregister(1, 0x2000).unwrap();
        assert!(!cancelled.orphaned(-libc::ECANCELED));
        assert!(orphan.orphaned(-libc::ECANCELED));
        assert!(!orphan.orphaned(0));
    }
}
