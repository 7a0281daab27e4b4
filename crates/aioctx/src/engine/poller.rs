//! One thread for the whole process that waits for descriptors to become ready, so that
//! nothing waiting for a peer holds a worker and everything waiting can be cancelled:
//! `POLL` requests, and reads and writes of pipes, FIFOs, sockets and character devices.
//!
//! A read or write of such a file is tried at submit without blocking (`RWF_NOWAIT`, the
//! way the kernel's AIO would do it inside `io_submit` if the file has room or data);
//! failing that (`EAGAIN`) it waits here for `POLLIN` or `POLLOUT` and is tried again, on
//! the poll thread, still without blocking. An `EAGAIN` after readiness (another reader
//! took the data first) goes back to waiting.
//!
//! **The rule for transfers cut short.** A read completes with its first transfer, as a
//! blocking read of a pipe or socket returns what is there. A write completes when all of
//! it is written, as a blocking write of a pipe or stream socket does (one of at most
//! `PIPE_BUF` bytes goes in whole or not at all, the kernel's atomicity); a longer one that
//! fits only in part keeps its place and waits for room for the rest, cancellable between
//! chunks. A write cancelled (or its context destroyed) after part of it was written
//! completes with the bytes written, never with `-ECANCELED`; one cancelled before any byte
//! went completes with `-ECANCELED`.
//!
//! A FIFO refuses `RWF_NOWAIT` (no `FMODE_NOWAIT` on Linux 6.x); it is opened again
//! through `/proc/self/fd` with `O_NONBLOCK`, a second open file of the same FIFO (the
//! caller's own stays as it is). A file that can do neither (a tty, some character devices)
//! waits here for readiness, then goes to a worker for a blocking transfer: the one case
//! where a transfer already running cannot be stopped (it waits again only if another
//! reader takes the data first, or a write is larger than the room there was).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::{Arc, Mutex, OnceLock};

use super::blocking::perform_rest;
use super::complete_cancelled;
use super::pending::{Keyed, Pending};
use crate::core::{Core, Inflight};
use crate::request::{Request, RwFlags};
use crate::sync::lock;
use crate::sys::{fd, fork};

pub(crate) struct Poller {
    waiting: Mutex<Waiting>,
    /// Rung when the waiting set changes, so the poll thread rebuilds its fd array.
    wake: File,
}

#[derive(Default)]
struct Waiting {
    /// In arrival order: requests on one file ready at once go in the order they were
    /// submitted, and a write cut short keeps its place ahead of later ones.
    entries: Pending<Entry>,
    /// Whether this process has a poll thread (a forked child starts without one).
    thread_running: bool,
}

/// A request waiting for its file to become ready.
struct Entry {
    /// None while the poll thread transfers it.
    request: Option<Inflight>,
    then: Then,
    /// Cancelled while the poll thread was transferring it: it completes when that
    /// transfer returns, instead of waiting again.
    cancelled: bool,
}

/// What becomes of a request once its file is ready.
enum Then {
    /// A `POLL`: completes with the ready mask.
    Report,
    /// A read or write of a pipe, FIFO, socket or character device, moved without blocking.
    Transfer(Transfer),
    /// A read or write of a file that cannot be moved without blocking: once ready it goes
    /// to a worker, which does block.
    HandOff(HandOff),
}

/// Runs a ready request on a worker of the pool (the threads engine's queue of its context).
pub(crate) type HandOff = Arc<dyn Fn(Inflight) + Send + Sync>;

#[derive(Clone)]
struct Transfer {
    /// The context's core, by address, and the request's key: what cancel matches while
    /// the request is out on the poll thread.
    owner: usize,
    key: u64,
    /// Bytes of a write already written (a read completes with its first transfer).
    done: usize,
    /// The FIFO opened again with `O_NONBLOCK`, where the caller's file refuses
    /// `RWF_NOWAIT`.
    nonblocking: Option<Arc<File>>,
}

impl Entry {
    fn belongs_to(&self, core: &Arc<Core>) -> bool {
        match (&self.request, &self.then) {
            (Some(request), _) => request.belongs_to(core),
            (None, Then::Transfer(t)) => t.owner == Arc::as_ptr(core) as usize,
            (None, _) => false,
        }
    }

    fn key(&self) -> Option<u64> {
        match (&self.request, &self.then) {
            (Some(request), _) => Some(request.request.key()),
            (None, Then::Transfer(t)) => Some(t.key),
            (None, _) => None,
        }
    }

    /// The event of a request cancelled while waiting: the bytes of a write already
    /// written, else `-ECANCELED`.
    fn cancelled_result(&self) -> i64 {
        match &self.then {
            Then::Transfer(t) if t.done > 0 => t.done as i64,
            _ => -(libc::ECANCELED as i64),
        }
    }
}

impl Keyed for Entry {
    /// A request already cancelled while out on the poll thread is not cancelled again.
    fn cancel_key(&self) -> Option<u64> {
        if self.cancelled {
            None
        } else {
            self.key()
        }
    }
}

/// The process's poller; its thread starts with the first request that waits.
pub(crate) fn poller() -> io::Result<&'static Poller> {
    static POLLER: OnceLock<io::Result<&'static Poller>> = OnceLock::new();
    POLLER
        .get_or_init(|| {
            let poller: &'static Poller = Box::leak(Box::new(Poller {
                waiting: Mutex::new(Waiting::default()),
                wake: fd::eventfd()?,
            }));
            fork::hold_across_fork(&poller.waiting, forget_parents_waiting);
            fork::on_fork_in_child(own_wake_eventfd);
            Ok(poller)
        })
        .as_ref()
        .copied()
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
}

/// Cancels the waiting requests (polls and transfers) of `core` that `matches` selects, at
/// most `limit`; returns how many will deliver their event.
pub(crate) fn cancel_polls(core: &Arc<Core>, matches: impl Fn(u64) -> bool, limit: usize) -> usize {
    poller().map_or(0, |p| p.cancel(core, matches, limit))
}

/// Hands a POLL request to the process's poller.
pub(crate) fn start_poll(mut request: Inflight) -> Result<(), (Inflight, io::Error)> {
    if let Err(e) = request.request.hold_file() {
        return Err((request, e));
    }
    match poller() {
        Ok(poller) => poller.add(request, Then::Report),
        Err(e) => Err((request, e)),
    }
}

/// A file whose reads and writes may wait for a peer forever.
#[derive(Clone, Copy)]
pub(crate) enum PeerFile {
    Fifo,
    /// A pipe, socket or character device.
    Other,
}

/// Whether a read or write may wait for a peer forever, and on what: its file is a pipe,
/// FIFO, socket or character device (not a regular file or block device, whose I/O always
/// finishes), and the caller did not ask for `RWF_NOWAIT` (which never waits).
pub(crate) fn waits_for_peer(request: &Request) -> Option<PeerFile> {
    let r = request;
    if !(r.opcode.is_read() || r.opcode.is_write())
        || r.mode.regular
        || r.rw_flags.contains(RwFlags::NOWAIT)
    {
        return None;
    }
    let file_type = r.file.as_ref()?.metadata().ok()?.file_type();
    if file_type.is_block_device() {
        None
    } else if file_type.is_fifo() {
        Some(PeerFile::Fifo)
    } else {
        Some(PeerFile::Other)
    }
}

/// Starts a read or write of a file that [`waits_for_peer`]: moved now if it can be without
/// blocking, else left waiting in the poller, cancellable. `hand_off` runs it on a worker
/// if the file can only be moved by blocking.
pub(crate) fn start_transfer(
    core: &Arc<Core>,
    mut request: Inflight,
    file: PeerFile,
    hand_off: &HandOff,
) -> Result<(), (Inflight, io::Error)> {
    let mut transfer = Transfer {
        owner: Arc::as_ptr(core) as usize,
        key: request.request.key(),
        done: 0,
        // A FIFO refuses RWF_NOWAIT: its second open needs no try to know.
        nonblocking: match file {
            PeerFile::Fifo => reopen_nonblocking(&request.request).map(Arc::new),
            PeerFile::Other => None,
        },
    };
    let res = transfer.run(&mut request.request);
    if res == -(libc::EOPNOTSUPP as i64) {
        return match poller() {
            Ok(poller) => poller.add(request, Then::HandOff(Arc::clone(hand_off))),
            Err(e) => Err((request, e)),
        };
    }
    if let Some(result) = transfer.settle(&request.request, res) {
        // Its second open of a FIFO goes before the request counts out (see `advance`).
        drop(transfer);
        request.complete(result);
        return Ok(());
    }
    let done = transfer.done;
    let waiting = match poller() {
        Ok(poller) => poller.add(request, Then::Transfer(transfer)),
        Err(e) => Err((request, e)),
    };
    match waiting {
        // Part of the write went: it was started, and its event says how much.
        Err((request, _)) if done > 0 => {
            request.complete(done as i64);
            Ok(())
        }
        other => other,
    }
}

impl Transfer {
    /// One transfer of what is left, without blocking.
    fn run(&self, request: &mut Request) -> i64 {
        match &self.nonblocking {
            Some(file) => perform_rest(request, Some(file.as_fd()), RwFlags::empty(), self.done),
            None => perform_rest(request, None, RwFlags::NOWAIT, self.done),
        }
    }

    /// Takes in the result of `run`: the event's result if the request is finished, None
    /// if it waits for readiness again.
    fn settle(&mut self, request: &Request, res: i64) -> Option<i64> {
        let would_block = res == -(libc::EAGAIN as i64);
        if request.opcode.is_read() {
            return (!would_block).then_some(res);
        }
        if res > 0 {
            self.done += res as usize;
            return (self.done >= request.buffers.total_len()).then_some(self.done as i64);
        }
        match res {
            _ if would_block => None,
            // An error after part of the write went (EPIPE once the reader left): the bytes
            // written, as a blocking write reports.
            _ if self.done > 0 => Some(self.done as i64),
            // An error, or 0: an empty write, or one that moved nothing of a nonzero rest
            // and would never move more.
            _ => Some(res),
        }
    }
}

/// The caller's FIFO opened again, for the same direction, with `O_NONBLOCK`; None if it
/// cannot be (no `/proc`, a write end whose reader is gone).
fn reopen_nonblocking(request: &Request) -> Option<File> {
    let file = request.file.as_ref()?;
    OpenOptions::new()
        .read(request.opcode.is_read())
        .write(request.opcode.is_write())
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .ok()
}

/// The child has no poll thread, and the waiting requests belong to the parent's contexts,
/// dead in the child: they are leaked, never completed.
fn forget_parents_waiting(waiting: &mut Waiting) {
    waiting.entries.forget_all();
    waiting.thread_running = false;
}

/// The wake eventfd is shared with the parent, so the child gets its own under the same
/// number (else its poll thread would swallow the parent's wake-ups).
fn own_wake_eventfd() {
    if let Ok(poller) = poller() {
        let _ = fd::replace_with_new_eventfd(poller.wake.as_fd());
    }
}

impl Poller {
    /// Waits for the request's file to become ready; fails only if the poll thread cannot
    /// be started.
    fn add(&'static self, request: Inflight, then: Then) -> Result<(), (Inflight, io::Error)> {
        let mut waiting = lock(&self.waiting);
        if !waiting.thread_running {
            if let Err(e) = std::thread::Builder::new()
                .name("aioctx-poller".into())
                .spawn(move || self.run())
            {
                return Err((request, e));
            }
            waiting.thread_running = true;
        }
        waiting.entries.insert(Entry {
            request: Some(request),
            then,
            cancelled: false,
        });
        drop(waiting);
        fd::eventfd_signal(self.wake.as_fd(), 1);
        Ok(())
    }

    /// Cancels the waiting requests of `core` that `matches` selects (at most `limit`);
    /// returns how many will deliver their event. One waiting is completed here; one the
    /// poll thread is transferring completes when that transfer returns.
    pub(crate) fn cancel(
        &self,
        core: &Arc<Core>,
        matches: impl Fn(u64) -> bool,
        limit: usize,
    ) -> usize {
        let mut count = 0;
        let cancelled: Vec<(Inflight, i64)> = {
            let mut waiting = lock(&self.waiting);
            let chosen = waiting
                .entries
                .select(matches, |e| e.belongs_to(core), limit);
            count += chosen.len();
            let mut taken = Vec::new();
            for id in chosen {
                let Some(entry) = waiting.entries.get_mut(id) else {
                    continue;
                };
                if entry.request.is_none() {
                    entry.cancelled = true;
                } else if let Some(mut entry) = waiting.entries.remove(id) {
                    let result = entry.cancelled_result();
                    taken.extend(entry.request.take().map(|r| (r, result)));
                }
            }
            taken
        };
        if !cancelled.is_empty() {
            fd::eventfd_signal(self.wake.as_fd(), 1);
        }
        let (plain, partial): (Vec<_>, Vec<_>) = cancelled
            .into_iter()
            .partition(|(_, result)| *result == -(libc::ECANCELED as i64));
        complete_cancelled(plain.into_iter().map(|(r, _)| r).collect());
        for (request, written) in partial {
            request.complete(written);
        }
        count
    }

    fn run(&self) {
        loop {
            // Raw numbers, not clones of the files: a clone held across poll(2) would keep
            // a cancelled request's file open after destroy returned (SPEC §1). A number
            // closed meanwhile (or reused by another file) is harmless: poll has no effect
            // on a file, and `advance` acts only on an entry still there, whose request
            // still holds its file open under that number.
            let watched: Vec<(u64, RawFd, i16)> = lock(&self.waiting)
                .entries
                .iter()
                .filter_map(|(id, e)| {
                    let r = &e.request.as_ref()?.request;
                    let events = match e.then {
                        Then::Report => r.poll_mask() as i16,
                        _ if r.opcode.is_read() => libc::POLLIN,
                        _ => libc::POLLOUT,
                    };
                    r.file.as_ref().map(|f| (id, f.as_raw_fd(), events))
                })
                .collect();
            let mut pollfds: Vec<libc::pollfd> =
                std::iter::once((self.wake.as_raw_fd(), libc::POLLIN))
                    .chain(watched.iter().map(|&(_, fd, events)| (fd, events)))
                    .map(|(fd, events)| libc::pollfd {
                        fd,
                        events,
                        revents: 0,
                    })
                    .collect();
            if fd::poll(&mut pollfds).is_err() {
                continue;
            }
            fd::eventfd_drain(self.wake.as_fd());
            // Many requests on one file all see it ready, but one byte of data serves one
            // of them: after a transfer finds nothing, the others on that file wait for
            // the next round instead of each trying in vain.
            let mut exhausted: Vec<(RawFd, i16)> = Vec::new();
            for (&(id, fd, events), p) in watched.iter().zip(&pollfds[1..]) {
                let watch = (fd, events);
                if p.revents == 0 || exhausted.contains(&watch) {
                    continue;
                }
                if !self.advance(id, p.revents & events) {
                    exhausted.push(watch);
                }
            }
        }
    }

    /// Moves on a request whose file became ready (`mask`): a poll completes, a hand-off
    /// goes to its worker, a transfer runs. False if a transfer found the file not ready
    /// after all and waits again.
    fn advance(&self, id: u64, mask: i16) -> bool {
        let mut waiting = lock(&self.waiting);
        let transfer = match waiting.entries.get_mut(id) {
            Some(Entry {
                request: request @ Some(_),
                then: Then::Transfer(transfer),
                ..
            }) => request.take().map(|request| (request, transfer.clone())),
            Some(Entry { request: None, .. }) | None => return true,
            Some(_) => None,
        };
        let Some((mut request, transfer)) = transfer else {
            let Some(entry) = waiting.entries.remove(id) else {
                return true;
            };
            drop(waiting);
            match (entry.request, entry.then) {
                (Some(request), Then::HandOff(hand_off)) => hand_off(request),
                (Some(request), _) => request.complete(i64::from(mask as u16)),
                (None, _) => {}
            }
            return true;
        };
        // The transfer runs unlocked; its entry stays, so a cancel meanwhile marks it
        // instead of missing it.
        drop(waiting);
        let res = transfer.run(&mut request.request);
        // The copy's second open of a FIFO goes now: once `settle` completes the request,
        // nothing of it may hold a descriptor of the caller's file (SPEC §1), and a destroy
        // may return at that very moment.
        drop(transfer);
        self.settle(id, request, res);
        res != -(libc::EAGAIN as i64)
    }

    /// Takes in the result of a transfer of the request of entry `id`, which was out on
    /// this thread: completes it if it is finished (or was cancelled meanwhile), else puts
    /// it back to wait, under the same lock, so that no cancel can slip in between.
    fn settle(&self, id: u64, request: Inflight, res: i64) {
        let mut waiting = lock(&self.waiting);
        // Only this thread removes an entry whose request is out.
        let Some(entry) = waiting.entries.get_mut(id) else {
            drop(waiting);
            return request.complete(res);
        };
        let settled = match &mut entry.then {
            Then::Transfer(t) => t.settle(&request.request, res),
            _ => Some(res),
        };
        let result = match settled {
            None if entry.cancelled => entry.cancelled_result(),
            Some(result) => result,
            None => {
                entry.request = Some(request);
                return;
            }
        };
        waiting.entries.remove(id);
        drop(waiting);
        request.complete(result);
    }
}
