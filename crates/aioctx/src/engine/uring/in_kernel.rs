//! The requests an io_uring instance holds, by context: what cancel and destroy may name.
//!
//! A request's address (its SQE's `user_data`) stays in this table from before its SQE is
//! pushed until its CQE was taken, and the table lives under the instance's submission
//! lock, under which every cancel SQE is pushed: so the address a cancel names cannot have
//! been freed and reused by another request in between. Every request is recorded with
//! its context (its owner), and each context's requests are also listed apart, so that
//! cancel and destroy touch exactly their own context's requests, and a CQE is looked up
//! by its `user_data` alone, without reading the request it names.
//!
//! A read or write of a regular file or a block device is counted by the generation it
//! started in, so that a thread that exits can wait until every such request that may be
//! tied to it was taken (`exit.rs`).

use std::collections::{HashMap, HashSet, VecDeque};

/// A context among those sharing an instance.
pub(super) type Owner = u64;

/// How often a request the kernel cancelled on its own is submitted again before its
/// `-ECANCELED` is delivered (a bound against resubmitting for ever).
const MAX_RESUBMITS: u8 = 64;

/// What a request's SQE names its file by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fd {
    /// A descriptor the request holds open itself: it may be submitted again at any time.
    Held,
    /// The number a C caller lent for its submit call only: once the call returned, the
    /// number may name another file, so the request is never submitted again.
    Lent,
}

/// What a request is, for what becomes of it when the thread that submitted it exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Kind {
    /// What its SQE names its file by.
    pub(super) fd: Fd,
    /// Whether it reads or writes a regular file or a block device: its time is bounded by
    /// the device, so a thread that exits waits for it (else the kernel may fail it).
    pub(super) file_io: bool,
}

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
    /// What its SQE names its file by.
    fd: Fd,
    /// For a read or write of a file, the generation it started in (see [`Generations`]).
    generation: Option<u64>,
}

impl Registered {
    /// Whether `res` is a cancel nobody asked for, from the exit of the submitting thread,
    /// of a request that may be submitted again (one on a lent number may not: its
    /// `-ECANCELED` is its result).
    fn orphaned(&self, res: i32) -> bool {
        res == -libc::ECANCELED
            && !self.cancel_issued
            && self.resubmitted < MAX_RESUBMITS
            && self.fd == Fd::Held
    }
}

/// The reads and writes of files in the kernel, counted by generation. A thread that exits
/// closes the current generation (those that start after belong to the next) and waits
/// until every generation up to it is empty: a request it may have handed to the kernel
/// (its own, or another thread's it submitted along with its own in one enter) started
/// before, and nothing started later holds it up.
#[derive(Debug, Default)]
struct Generations {
    /// The generation of `counts[0]`; every one before it is empty.
    base: u64,
    /// Requests in flight per generation, from `base` to the current one (the last).
    counts: VecDeque<usize>,
}

impl Generations {
    /// Counts a request in the current generation, which it returns.
    fn start(&mut self) -> u64 {
        if self.counts.is_empty() {
            self.counts.push_back(0);
        }
        if let Some(current) = self.counts.back_mut() {
            *current += 1;
        }
        self.current()
    }

    fn current(&self) -> u64 {
        self.base + self.counts.len().saturating_sub(1) as u64
    }

    /// Counts out a request of `generation`.
    fn taken(&mut self, generation: u64) {
        let index = generation.saturating_sub(self.base) as usize;
        if let Some(count) = self.counts.get_mut(index) {
            *count = count.saturating_sub(1);
        }
        self.compact();
    }

    /// Drops the empty generations before the first one with requests (the current one
    /// stays).
    fn compact(&mut self) {
        while self.counts.len() > 1 && self.counts.front() == Some(&0) {
            self.counts.pop_front();
            self.base += 1;
        }
    }

    /// Ends the current generation for an exiting thread: the last one it waits for, or
    /// None if no request is in flight.
    fn close(&mut self) -> Option<u64> {
        self.compact();
        match self.counts.back() {
            None => None,
            Some(0) if self.counts.len() == 1 => None,
            // The current one is empty: the thread waits for those before it only.
            Some(0) => Some(self.current() - 1),
            Some(_) => {
                let last = self.current();
                self.counts.push_back(0);
                Some(last)
            }
        }
    }

    /// Whether every request of `generation` and those before it was taken.
    fn empty_through(&self, generation: u64) -> bool {
        self.base > generation
            || self
                .counts
                .iter()
                .take((generation - self.base) as usize + 1)
                .all(|&count| count == 0)
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
    file_io: Generations,
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
    pub(super) fn register(&mut self, owner: Owner, user_data: u64, key: u64, kind: Kind) -> bool {
        let Some(context) = self.contexts.get_mut(&owner).filter(|c| !c.closed) else {
            return false;
        };
        context.requests.insert(user_data);
        let generation = kind.file_io.then(|| self.file_io.start());
        self.requests.insert(
            user_data,
            Registered {
                owner,
                key,
                cancel_issued: false,
                resubmitted: 0,
                fd: kind.fd,
                generation,
            },
        );
        true
    }

    /// Removes a request from the table.
    fn remove(&mut self, user_data: u64) {
        if let Some(registered) = self.requests.remove(&user_data) {
            if let Some(generation) = registered.generation {
                self.file_io.taken(generation);
            }
        }
    }

    /// Ends the current generation of reads and writes of files, for a thread that exits:
    /// the last generation it is to wait for (see `file_io_taken_through`), or None if no
    /// such request is in flight.
    pub(super) fn close_file_io_generation(&mut self) -> Option<u64> {
        self.file_io.close()
    }

    /// Whether every read or write of a file of `generation` and before was taken.
    pub(super) fn file_io_taken_through(&self, generation: u64) -> bool {
        self.file_io.empty_through(generation)
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
        self.remove(user_data);
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
                self.remove(user_data);
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

    const PIPE: Kind = Kind {
        fd: Fd::Held,
        file_io: false,
    };
    const HELD_FILE: Kind = Kind {
        fd: Fd::Held,
        file_io: true,
    };
    const LENT_FILE: Kind = Kind {
        fd: Fd::Lent,
        file_io: true,
    };

    fn two_contexts() -> InKernel {
        let mut in_kernel = InKernel::default();
        in_kernel.open(1);
        in_kernel.open(2);
        in_kernel
    }

    #[test]
    fn a_request_is_cancelled_once() {
        let mut in_kernel = two_contexts();
        assert!(in_kernel.register(1, 0x1000, 7, PIPE));
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
        in_kernel.register(1, 0x1000, 7, PIPE);
        in_kernel.register(2, 0x2000, 7, PIPE);
        assert_eq!(in_kernel.cancel_all(1), vec![0x1000]);
        assert!(!in_kernel.is_open(1));
        assert!(!in_kernel.register(1, 0x3000, 8, PIPE), "closed");
        assert!(in_kernel.register(2, 0x3000, 8, PIPE), "the other is open");
        assert_eq!(in_kernel.cancel_one(2, 7), Some(0x2000));
        assert!(matches!(in_kernel.taken(0x2000, 0), Taken::Done));
        assert!(matches!(in_kernel.taken(0x2000, 0), Taken::Unknown));
    }

    #[test]
    fn an_orphan_is_resubmitted_unless_cancelled_or_closed() {
        let mut in_kernel = two_contexts();
        in_kernel.register(1, 0x1000, 7, PIPE);
        in_kernel.register(1, 0x2000, 8, PIPE);
        in_kernel.register(2, 0x3000, 9, PIPE);
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
        in_kernel.register(1, 0x1000, 7, PIPE);
        in_kernel.forget(1);
        assert!(matches!(in_kernel.taken(0x1000, 0), Taken::Unknown));
        assert!(!in_kernel.register(1, 0x1000, 7, PIPE));
    }

    #[test]
    fn an_orphan_on_a_lent_number_is_never_resubmitted() {
        let mut in_kernel = two_contexts();
        in_kernel.register(1, 0x1000, 7, LENT_FILE);
        assert!(matches!(in_kernel.taken(0x1000, ECANCELED), Taken::Done));
        assert!(matches!(in_kernel.taken(0x1000, 0), Taken::Unknown));
    }

    #[test]
    fn an_exiting_thread_waits_for_the_file_requests_before_it_only() {
        let mut in_kernel = two_contexts();
        assert_eq!(
            in_kernel.close_file_io_generation(),
            None,
            "nothing in flight"
        );
        in_kernel.register(1, 0x1000, 7, LENT_FILE);
        in_kernel.register(2, 0x2000, 8, LENT_FILE);
        in_kernel.register(1, 0x3000, 9, PIPE);
        in_kernel.register(2, 0x5000, 11, HELD_FILE);
        let first = in_kernel.close_file_io_generation().expect("two in flight");
        in_kernel.register(1, 0x4000, 10, LENT_FILE);
        let second = in_kernel
            .close_file_io_generation()
            .expect("three in flight");
        assert!(second > first);
        assert!(!in_kernel.file_io_taken_through(first));
        in_kernel.taken(0x1000, 0);
        in_kernel.taken(0x3000, 0);
        assert!(!in_kernel.file_io_taken_through(first));
        in_kernel.taken(0x2000, 0);
        assert!(!in_kernel.file_io_taken_through(first));
        assert!(matches!(
            in_kernel.taken(0x5000, ECANCELED),
            Taken::Resubmit
        ));
        assert!(
            !in_kernel.file_io_taken_through(first),
            "still in the kernel"
        );
        in_kernel.taken(0x5000, 0);
        assert!(
            in_kernel.file_io_taken_through(first),
            "the later one does not count"
        );
        assert!(!in_kernel.file_io_taken_through(second));
        in_kernel.forget(1);
        assert!(in_kernel.file_io_taken_through(second));
        assert_eq!(in_kernel.close_file_io_generation(), None);
    }

    #[test]
    fn a_closed_generation_with_nothing_new_waits_for_the_ones_before() {
        let mut in_kernel = two_contexts();
        in_kernel.register(1, 0x1000, 7, LENT_FILE);
        let first = in_kernel.close_file_io_generation().expect("one in flight");
        assert_eq!(in_kernel.close_file_io_generation(), Some(first));
        in_kernel.taken(0x1000, 0);
        assert!(in_kernel.file_io_taken_through(first));
    }
}
