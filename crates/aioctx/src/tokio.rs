//! The async face, for tokio (feature `tokio`): owned-buffer futures in the manner of
//! tokio-uring (`read_at(buf, pos) -> (io::Result<usize>, B)`), but `Send`, usable from the
//! multi-threaded runtime and from many tasks sharing one context.
//!
//! Every request of an [`AsyncContext`] names the context's own eventfd
//! (`IOCB_FLAG_RESFD`), registered with tokio (`AsyncFd`). One reaper task per context
//! waits for it, takes the events and hands each to the future waiting for it; a future
//! also takes what is ready right after its submit, so a read the page cache serves
//! completes without a wake-up. No busy loop, no thread per request.
//!
//! Dropping a future before it completes cancels its request; the buffer stays owned by
//! the context until the engine lets go of it, and is dropped when its event arrives.
//! `mem::forget` of a future leaks its buffer, never frees it in flight.
//!
//! ```
//! use std::sync::Arc;
//! use aioctx::tokio::AsyncContext;
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> std::io::Result<()> {
//! let ctx = AsyncContext::new(aioctx::Context::builder().depth(32).build()?)?;
//! let file = Arc::new(std::fs::File::open("/etc/hostname")?);
//! let (n, buf) = ctx.read_at(&file, Vec::with_capacity(4096), 0).await;
//! assert_eq!(n?, buf.len());
//! ctx.close().await?;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::Interest;
use ::tokio::sync::Notify;

use crate::buf::{IoBuf, IoBufMut};
use crate::context::{errno, Completion, Context, RequestId, SubmitError};
use crate::request::Request;
use crate::sync::lock;
use crate::sys::fd;

/// A context with an async face; clones share it. Dropping the last clone (and the last
/// future) destroys the context, blocking as `Context`'s `Drop` does; [`close`] is the
/// async way.
///
/// [`close`]: AsyncContext::close
#[derive(Clone)]
pub struct AsyncContext {
    shared: Arc<Shared>,
}

/// Where a request's completion waits for its future.
enum Slot {
    /// In flight; the future's waker once it has polled.
    Waiting(Option<Waker>),
    /// Its completion, for the future to take.
    Done(Completion),
    /// Its future was dropped: the completion is dropped when it arrives.
    Abandoned,
}

struct Shared {
    ctx: Context,
    /// The eventfd every request of this context signals.
    eventfd: Arc<File>,
    /// The slots of the requests whose futures have not yet taken their completion.
    slots: Mutex<HashMap<RequestId, Slot>>,
    /// Serialises reaping, so that one reaper hands out each batch of events.
    reaping: Mutex<()>,
    /// Set by `close`: submits fail `EINVAL` from then on.
    closing: AtomicBool,
    /// Threads inside `submit`: a request the engine accepted has no slot until its
    /// submitter leaves, so `close` waits for none to be inside before it destroys.
    submitting: AtomicUsize,
    /// Notified after each dispatch, and when a submitter leaves during close, for `close`.
    dispatched: Notify,
}

impl AsyncContext {
    /// Gives `ctx` an async face. Must be called within a tokio runtime (with I/O
    /// enabled), which runs the context's reaper task.
    pub fn new(ctx: Context) -> io::Result<AsyncContext> {
        let runtime = ::tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let eventfd = Arc::new(fd::eventfd()?);
        // SAFETY: the `Arc<File>` owns its descriptor and keeps it open, naming the same
        // eventfd, for as long as the registration (which holds the `Arc`) lives.
        let registered =
            unsafe { AsyncFd::register_with_interest(Arc::clone(&eventfd), Interest::READABLE) };
        let ready = Arc::new(registered.map_err(io::Error::from)?);
        let shared = Arc::new(Shared {
            ctx,
            eventfd,
            slots: Mutex::new(HashMap::new()),
            reaping: Mutex::new(()),
            closing: AtomicBool::new(false),
            submitting: AtomicUsize::new(0),
            dispatched: Notify::new(),
        });
        runtime.spawn(reaper(ready, Arc::downgrade(&shared)));
        Ok(AsyncContext { shared })
    }

    /// The context beneath, for its blocking face and its counters.
    pub fn context(&self) -> &Context {
        &self.shared.ctx
    }

    /// Reads up to `buf.bytes_total()` bytes of `file` at `pos` into `buf`.
    pub async fn read_at<B: IoBufMut>(
        &self,
        file: &Arc<File>,
        buf: B,
        pos: u64,
    ) -> (io::Result<usize>, B) {
        let (result, bufs) = self
            .transfer(Request::read(Arc::clone(file), buf, pos))
            .await;
        (result, first(bufs))
    }

    /// Writes the initialized bytes of `buf` to `file` at `pos`.
    pub async fn write_at<B: IoBuf>(
        &self,
        file: &Arc<File>,
        buf: B,
        pos: u64,
    ) -> (io::Result<usize>, B) {
        let (result, bufs) = self
            .transfer(Request::write(Arc::clone(file), buf, pos))
            .await;
        (result, first(bufs))
    }

    /// Reads into each buffer in turn, starting at `pos`.
    pub async fn readv_at<B: IoBufMut>(
        &self,
        file: &Arc<File>,
        bufs: Vec<B>,
        pos: u64,
    ) -> (io::Result<usize>, Vec<B>) {
        self.transfer(Request::readv(Arc::clone(file), bufs, pos))
            .await
    }

    /// Writes each buffer in turn, starting at `pos`.
    pub async fn writev_at<B: IoBuf>(
        &self,
        file: &Arc<File>,
        bufs: Vec<B>,
        pos: u64,
    ) -> (io::Result<usize>, Vec<B>) {
        self.transfer(Request::writev(Arc::clone(file), bufs, pos))
            .await
    }

    /// Flushes `file`'s data and metadata.
    pub async fn fsync(&self, file: &Arc<File>) -> io::Result<()> {
        self.run(Request::fsync(Arc::clone(file)))
            .await
            .result()
            .map(drop)
    }

    /// Flushes `file`'s data.
    pub async fn fdatasync(&self, file: &Arc<File>) -> io::Result<()> {
        self.run(Request::fdsync(Arc::clone(file)))
            .await
            .result()
            .map(drop)
    }

    /// Waits until `file` is ready for `events` (`POLLIN`, ...); the ready mask.
    pub async fn poll(&self, file: &Arc<File>, events: u16) -> io::Result<u16> {
        let mask = self
            .run(Request::poll(Arc::clone(file), events))
            .await
            .result()?;
        Ok(u16::try_from(mask).unwrap_or(u16::MAX))
    }

    /// Stops taking requests, cancels those in flight that can be cancelled, waits until
    /// every request's event has arrived (each future gets its result and its buffer),
    /// then destroys the context. Futures still pending resolve; later calls fail `EINVAL`.
    pub async fn close(&self) -> io::Result<()> {
        let shared = &self.shared;
        shared.closing.store(true, Ordering::SeqCst);
        for id in shared.in_flight() {
            // EINVAL: it finished first, or its engine cannot stop it; it completes anyway.
            let _ = shared.ctx.cancel(id);
        }
        loop {
            let dispatched = shared.dispatched.notified();
            ::tokio::pin!(dispatched);
            dispatched.as_mut().enable();
            shared.reap();
            if shared.submitting.load(Ordering::SeqCst) == 0 && shared.in_flight().is_empty() {
                break;
            }
            // Every event still to come signals the eventfd, and the reaper notifies after
            // handing it out (this waiter was enabled before the check).
            dispatched.await;
        }
        shared.ctx.destroy()
    }

    /// Submits a read or write and waits for it: the result and the buffers back.
    async fn transfer<B: IoBuf>(&self, request: Request) -> (io::Result<usize>, Vec<B>) {
        match self.submit(request) {
            Ok(waiting) => {
                let done = waiting.await;
                let result = done.result();
                (result, done.into_bufs().unwrap_or_default())
            }
            Err(SubmitError { error, request }) => {
                (Err(error), request.into_bufs().unwrap_or_default())
            }
        }
    }

    /// Submits a request without buffers and waits for its completion.
    async fn run(&self, request: Request) -> Completion {
        match self.submit(request) {
            Ok(waiting) => waiting.await,
            Err(SubmitError { error, .. }) => Completion::failed(error),
        }
    }

    fn submit(&self, request: Request) -> Result<Waiting<'_>, SubmitError> {
        let shared = &*self.shared;
        let request = request.eventfd(Arc::clone(&shared.eventfd));
        let _inside = Submitting::enter(shared);
        if shared.closing.load(Ordering::SeqCst) {
            return Err(SubmitError {
                error: errno(libc::EINVAL),
                request,
            });
        }
        let id = shared.ctx.submit_one(request)?;
        lock(&shared.slots).entry(id).or_insert(Slot::Waiting(None));
        // A close that began after the check above may have listed the slots before this
        // one was in, and so not cancelled it: this does (close stores `closing` before it
        // lists, this inserts before it loads, so one of the two sees the other). A second
        // cancel of one request is EINVAL, ignored as close ignores it.
        if shared.closing.load(Ordering::SeqCst) {
            let _ = shared.ctx.cancel(id);
        }
        // A close that began after the check above may have listed the slots before this
        // one was in: then it did not cancel it, and this does (close stores `closing`
        // before it lists, this inserts before it loads, so one of the two sees the other).
        // A second cancel of one request is EINVAL, ignored as close ignores it.
        if shared.closing.load(Ordering::SeqCst) {
            let _ = shared.ctx.cancel(id);
        }
        // What the engine completed inside submit is taken now: no wake-up for it.
        shared.try_reap();
        Ok(Waiting {
            shared,
            id,
            done: false,
        })
    }
}

/// A thread inside `submit`, counted for `close`.
struct Submitting<'a>(&'a Shared);

impl<'a> Submitting<'a> {
    fn enter(shared: &'a Shared) -> Submitting<'a> {
        shared.submitting.fetch_add(1, Ordering::SeqCst);
        Submitting(shared)
    }
}

impl Drop for Submitting<'_> {
    fn drop(&mut self) {
        self.0.submitting.fetch_sub(1, Ordering::SeqCst);
        if self.0.closing.load(Ordering::SeqCst) {
            self.0.dispatched.notify_waiters();
        }
    }
}

/// The first buffer of a transfer's; a request built from one buffer gives back one.
fn first<B>(bufs: Vec<B>) -> B {
    match bufs.into_iter().next() {
        Some(buf) => buf,
        // A request built from one `B` hands back exactly that `B`.
        None => unreachable!("a transfer's buffer did not come back"),
    }
}

impl Shared {
    /// The requests whose events have not arrived yet.
    fn in_flight(&self) -> Vec<RequestId> {
        let slots = lock(&self.slots);
        let pending = slots
            .iter()
            .filter(|(_, slot)| !matches!(slot, Slot::Done(_)));
        pending.map(|(id, _)| *id).collect()
    }

    /// Reaps what is ready unless another thread is reaping already (it takes it).
    fn try_reap(&self) {
        if let Ok(_reaping) = self.reaping.try_lock() {
            self.take_events();
        }
    }

    /// Reaps what is ready, waiting for a concurrent reaper to finish first.
    fn reap(&self) {
        let _reaping = lock(&self.reaping);
        self.take_events();
    }

    /// Hands every event in the ring to its slot. Caller holds `reaping`.
    fn take_events(&self) {
        let capacity = self.ctx.capacity() as usize;
        let Ok(events) = self.ctx.get_events(0, capacity, Some(Duration::ZERO)) else {
            return;
        };
        if events.is_empty() {
            return;
        }
        let mut abandoned = Vec::new();
        let mut wake = Vec::new();
        {
            let mut slots = lock(&self.slots);
            for event in events {
                let id = event.id();
                match slots.insert(id, Slot::Done(event)) {
                    Some(Slot::Waiting(waker)) => wake.extend(waker),
                    Some(Slot::Abandoned) => {
                        if let Some(Slot::Done(event)) = slots.remove(&id) {
                            abandoned.push(event);
                        }
                    }
                    Some(Slot::Done(_)) | None => {}
                }
            }
        }
        // The engine let go of these buffers: they are dropped now, outside the lock.
        drop(abandoned);
        wake.into_iter().for_each(Waker::wake);
        self.dispatched.notify_waiters();
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Wakes the reaper, which finds the context gone and ends.
        fd::eventfd_signal(self.eventfd.as_fd(), 1);
    }
}

/// The context's reaper task: waits for the eventfd, then hands out the events.
async fn reaper(ready: Arc<AsyncFd<Arc<File>>>, shared: Weak<Shared>) {
    loop {
        let Ok(mut guard) = ready.readable().await else {
            return;
        };
        // Drained before the reap: an event posted after this signals again.
        fd::eventfd_drain(ready.get_ref().as_fd());
        guard.clear_ready();
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.reap();
    }
}

/// A submitted request's future: its completion, once its event arrived.
struct Waiting<'a> {
    shared: &'a Shared,
    id: RequestId,
    done: bool,
}

impl Future for Waiting<'_> {
    type Output = Completion;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Completion> {
        let mut slots = lock(&self.shared.slots);
        match slots.remove(&self.id) {
            Some(Slot::Done(completion)) => {
                drop(slots);
                self.done = true;
                Poll::Ready(completion)
            }
            _ => {
                slots.insert(self.id, Slot::Waiting(Some(cx.waker().clone())));
                Poll::Pending
            }
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let finished = {
            let mut slots = lock(&self.shared.slots);
            match slots.insert(self.id, Slot::Abandoned) {
                Some(Slot::Done(completion)) => {
                    slots.remove(&self.id);
                    Some(completion)
                }
                _ => None,
            }
        };
        if finished.is_none() {
            // EINVAL: it finished meanwhile, or cannot be stopped; its event comes anyway.
            let _ = self.shared.ctx.cancel(self.id);
        }
    }
}
