//! The requests an io_uring instance holds, by context: what cancel and destroy may name.
//!
//! A request's address (its SQE's `user_data`) stays in this table from before its SQE is
//! pushed until its CQE was taken, and the table lives under the instance's submission
//! lock, under which every cancel SQE is pushed: so the address a cancel names cannot have
//! been freed and reused by another request in between. Every request is recorded with
//! its context (its owner), and each context's requests are also listed apart, so that
//! cancel and destroy touch exactly their own context's requests, and a CQE is looked up
//! by its `user_data` alone, without reading the request it names.

use std::collections::{HashMap, HashSet};

/// A context among those sharing an instance.
pub(super) type Owner = u64;

/// How often a request the kernel cancelled on its own is submitted again before its
/// `-ECANCELED` is delivered (a bound against resubmitting for ever).
const MAX_RESUBMITS: u8 = 64;

/// A request the kernel holds, as the table knows it.
pub(super) struct Registered {
    /// The context it belongs to.
    owner: Owner,
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
    fn orphaned(&self, res: i32) -> bool {
        res == -libc::ECANCELED && !self.cancel_issued && self.resubmitted < MAX_RESUBMITS
    }
}

/// One context's part of the table.
#[derive(Default)]
struct Context {
    /// Its requests in the kernel, by `user_data`.
    requests: HashSet<u64>,
    /// Set by `cancel_all`: the context is dying and starts nothing more.
    closed: bool,
}

/// What became of a request whose CQE was taken.
pub(super) enum Taken {
    /// Not a request in the table (a cancel's or a NOP's CQE): nothing to free.
    Unknown,
    /// Forgotten: its request may be completed and freed.
    Done,
    /// Cancelled by the kernel on its own (its submitting thread exited): it stays
    /// recorded and is to be submitted again.
    Resubmit,
}

/// Every context's requests in the kernel.
#[derive(Default)]
pub(super) struct InKernel {
    requests: HashMap<u64, Registered>,
    contexts: HashMap<Owner, Context>,
}

impl InKernel {
    /// A new context on the instance.
    pub(super) fn open(&mut self, owner: Owner) {
        self.contexts.insert(owner, Context::default());
    }

    /// Whether `owner` may start requests: it is open and `cancel_all` did not close it.
    pub(super) fn is_open(&self, owner: Owner) -> bool {
        self.contexts.get(&owner).is_some_and(|c| !c.closed)
    }

    /// Records a request of an open context before its SQE is pushed (see `is_open`);
    /// false (nothing recorded) if its context is closed.
    pub(super) fn register(&mut self, owner: Owner, user_data: u64, key: u64) -> bool {
        let Some(context) = self.contexts.get_mut(&owner).filter(|c| !c.closed) else {
            return false;
        };
        context.requests.insert(user_data);
        self.requests.insert(
            user_data,
            Registered {
                owner,
                key,
                cancel_issued: false,
                resubmitted: 0,
            },
        );
        true
    }

    /// Called with the result of a request's taken CQE: forgets it (after which its memory
    /// may be freed), or keeps it to be submitted again if the kernel cancelled it on its
    /// own and its context is not closing.
    pub(super) fn taken(&mut self, user_data: u64, res: i32) -> Taken {
        let Some(registered) = self.requests.get_mut(&user_data) else {
            return Taken::Unknown;
        };
        let context = self.contexts.get_mut(&registered.owner);
        let closed = context.as_ref().is_none_or(|c| c.closed);
        if !closed && registered.orphaned(res) {
            registered.resubmitted += 1;
            return Taken::Resubmit;
        }
        if let Some(context) = context {
            context.requests.remove(&user_data);
        }
        self.requests.remove(&user_data);
        Taken::Done
    }

    /// Marks for cancel the request of `owner` whose identity is `key` and that no cancel
    /// named yet; its `user_data`, or None if there is no such request.
    pub(super) fn cancel_one(&mut self, owner: Owner, key: u64) -> Option<u64> {
        let context = self.contexts.get(&owner)?;
        let requests = &mut self.requests;
        let user_data = context.requests.iter().copied().find(|user_data| {
            requests
                .get(user_data)
                .is_some_and(|r| r.key == key && !r.cancel_issued)
        })?;
        if let Some(registered) = requests.get_mut(&user_data) {
            registered.cancel_issued = true;
        }
        Some(user_data)
    }

    /// Closes `owner` (it starts nothing more) and marks for cancel every request of it
    /// that no cancel named yet; their `user_data`s.
    pub(super) fn cancel_all(&mut self, owner: Owner) -> Vec<u64> {
        let Some(context) = self.contexts.get_mut(&owner) else {
            return Vec::new();
        };
        context.closed = true;
        let requests = &mut self.requests;
        context
            .requests
            .iter()
            .copied()
            .filter(|user_data| match requests.get_mut(user_data) {
                Some(registered) if !registered.cancel_issued => {
                    registered.cancel_issued = true;
                    true
                }
                _ => false,
            })
            .collect()
    }

    /// Drops the part of a context that is gone (destroy left nothing of it in the kernel).
    /// The maps shrink as contexts go, so that many contexts, once destroyed, leave no
    /// memory behind.
    pub(super) fn forget(&mut self, owner: Owner) {
        if let Some(context) = self.contexts.remove(&owner) {
            for user_data in context.requests {
                self.requests.remove(&user_data);
            }
        }
        if self.contexts.capacity() > 64 && self.contexts.len() < self.contexts.capacity() / 4 {
            self.contexts.shrink_to(2 * self.contexts.len());
        }
        if self.requests.capacity() > 1024 && self.requests.len() < self.requests.capacity() / 4 {
            self.requests.shrink_to(2 * self.requests.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECANCELED: i32 = -libc::ECANCELED;

    fn two_contexts() -> InKernel {
        let mut in_kernel = InKernel::default();
        in_kernel.open(1);
        in_kernel.open(2);
        in_kernel
    }

    #[test]
    fn a_request_is_cancelled_once() {
        let mut in_kernel = two_contexts();
        assert!(in_kernel.register(1, 0x1000, 7));
        assert_eq!(in_kernel.cancel_one(1, 7), Some(0x1000));
        assert_eq!(in_kernel.cancel_one(1, 7), None);
        assert!(
            in_kernel.cancel_all(1).is_empty(),
            "already being cancelled"
        );
    }

    #[test]
    fn cancel_touches_only_its_own_context() {
        let mut in_kernel = two_contexts();
        in_kernel.register(1, 0x1000, 7);
        in_kernel.register(2, 0x2000, 7);
        assert_eq!(in_kernel.cancel_all(1), vec![0x1000]);
        assert!(!in_kernel.is_open(1));
        assert!(!in_kernel.register(1, 0x3000, 8), "closed");
        assert!(in_kernel.register(2, 0x3000, 8), "the other is open");
        assert_eq!(in_kernel.cancel_one(2, 7), Some(0x2000));
        assert!(matches!(in_kernel.taken(0x2000, 0), Taken::Done));
        assert!(matches!(in_kernel.taken(0x2000, 0), Taken::Unknown));
    }

    #[test]
    fn an_orphan_is_resubmitted_unless_cancelled_or_closed() {
        let mut in_kernel = two_contexts();
        in_kernel.register(1, 0x1000, 7);
        in_kernel.register(1, 0x2000, 8);
        in_kernel.register(2, 0x3000, 9);
        in_kernel.cancel_one(1, 7);
        assert!(matches!(in_kernel.taken(0x1000, ECANCELED), Taken::Done));
        assert!(matches!(
            in_kernel.taken(0x2000, ECANCELED),
            Taken::Resubmit
        ));
        assert!(matches!(in_kernel.taken(0x2000, 0), Taken::Done));
        in_kernel.cancel_all(2);
        assert!(matches!(in_kernel.taken(0x3000, ECANCELED), Taken::Done));
    }

    #[test]
    fn forget_leaves_nothing() {
        let mut in_kernel = two_contexts();
        in_kernel.register(1, 0x1000, 7);
        in_kernel.forget(1);
        assert!(matches!(in_kernel.taken(0x1000, 0), Taken::Unknown));
        assert!(!in_kernel.register(1, 0x1000, 7));
    }
}
