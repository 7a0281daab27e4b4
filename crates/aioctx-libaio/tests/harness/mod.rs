//! Drives the C ABI from arbitrary bytes, through the public `extern "C"` functions only:
//! the coverage-guided fuzz target (`fuzz/`) and the property tests (`decode_props.rs`)
//! share it. The bytes choose contexts, iocbs (every field: opcodes, flags, fds, buffers,
//! iovec arrays, eventfds), batches, get-events and cancel calls, and bad handles; memory
//! handed to the library is always memory this harness owns or a page no access may touch,
//! so every fault found is the library's. What must hold, whatever the bytes:
//! - every call returns a count in range or a negative errno the call may return (never
//!   `-EIO`, which is what a panic caught at the ABI turns into);
//! - an event names a request that was accepted, with its `data`, and only once;
//! - every accepted iocb has had its `aio_key` zeroed;
//! - bad handles are `-EINVAL`; io_destroy returns 0, then `-EINVAL`.

#![allow(dead_code)]

use std::ffi::c_void;
use std::fs::File;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use aioctx::ffi::abi::{IoEvent, Iocb, IOCB_FLAG_IOPRIO, IOCB_FLAG_RESFD};
use aioctx_libaio::{
    aioctx_io_cancel_0_4, aioctx_io_getevents_0_4, io_destroy, io_setup, io_submit,
};

/// I/O buffers: reads land here, writes come from here.
const ARENA: usize = 1 << 20;
/// iovec entries, all pointing into the arena, enough that any count up to the kernel's
/// `UIO_MAXIOV` read from any slot stays inside.
const IOVECS: usize = 2048;
const IOVECS_PER_SLOT: usize = 8;
/// iocbs per context; each is submitted at most once, so an event's `obj` names one request.
const SLOTS: usize = 64;
const KERNEL_ADDR: u64 = 0xffff_8880_0000_0000;

/// The process-wide fixture: files, descriptors of every kind, and memory.
pub struct Fixture {
    /// Descriptors an iocb may name: regular (buffered, O_DIRECT, read-only, write-only),
    /// pipe ends, a socket, an eventfd, /dev/null, a directory, and numbers open to nothing.
    fds: Vec<u32>,
    pipe_r: i32,
    pipe_w: i32,
    socket: i32,
    socket_peer: i32,
    eventfd: i32,
    arena: *mut u8,
    iovecs: *mut libc::iovec,
    /// A PROT_NONE page: any access faults.
    no_access: u64,
}

// SAFETY: the raw pointers are mappings the fixture never frees; the harness touches them
// only through the library calls and volatile reads.
unsafe impl Send for Fixture {}
// SAFETY: as above.
unsafe impl Sync for Fixture {}

fn map(len: usize, prot: i32) -> *mut u8 {
    // SAFETY: a fresh anonymous mapping; no existing memory is affected.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED);
    ptr.cast()
}

fn scratch_file(name: &str, len: u64) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("aioctx-fuzz-{}-{name}", std::process::id()));
    File::create(&path).unwrap().set_len(len).unwrap();
    path
}

impl Fixture {
    pub fn get() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(Fixture::new)
    }

    fn new() -> Fixture {
        let path = scratch_file("data", 1 << 20);
        let open = |read: bool, write: bool, flags: i32| {
            let file = std::fs::OpenOptions::new()
                .read(read)
                .write(write)
                .custom_flags(flags)
                .open(&path)
                .unwrap();
            file.into_raw_fd() as u32
        };
        let mut fds = vec![
            open(true, true, 0),
            open(true, true, libc::O_DIRECT),
            open(true, false, 0),
            open(false, true, 0),
        ];
        let _ = std::fs::remove_file(&path);
        let mut pipe = [0; 2];
        // SAFETY: pipe2 fills the two-element array.
        assert_eq!(unsafe { libc::pipe2(pipe.as_mut_ptr(), 0) }, 0);
        let mut pair = [0; 2];
        // SAFETY: socketpair fills the two-element array.
        let ret =
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) };
        assert_eq!(ret, 0);
        let eventfd = aioctx::ffi::eventfd().unwrap().into_raw_fd();
        let null = File::open("/dev/null").unwrap().into_raw_fd();
        let dir = File::open(std::env::temp_dir()).unwrap().into_raw_fd();
        // A number that names nothing: opened, then closed.
        let closed = File::open("/dev/null").unwrap().into_raw_fd();
        // SAFETY: closes the descriptor just opened, owned by nobody else.
        unsafe { libc::close(closed) };
        fds.extend([pipe[0], pipe[1], pair[0], eventfd, null, dir, closed].map(|fd| fd as u32));
        fds.extend([u32::MAX, 0x7fff_ffff]);
        let arena = map(ARENA, libc::PROT_READ | libc::PROT_WRITE);
        let iovecs = map(IOVECS * 16, libc::PROT_READ | libc::PROT_WRITE).cast::<libc::iovec>();
        for i in 0..IOVECS {
            let len = 1 + (i * 97) % 4096;
            let offset = (i * 4096) % (ARENA - 8192);
            // SAFETY: i < IOVECS entries of the mapping; the entry points into the arena.
            unsafe {
                iovecs.add(i).write(libc::iovec {
                    iov_base: arena.add(offset).cast(),
                    iov_len: len,
                })
            };
        }
        Fixture {
            fds,
            pipe_r: pipe[0],
            pipe_w: pipe[1],
            socket: pair[0],
            socket_peer: pair[1],
            eventfd,
            arena,
            iovecs,
            no_access: map(4096, libc::PROT_NONE) as u64,
        }
    }

    /// Readies every pipe, socket and eventfd request in flight: fills what aio reads,
    /// drains what aio writes. Never blocks (poll first, or MSG_DONTWAIT).
    fn feed_and_drain(&self) {
        let mut buf = [0x42u8; 4096];
        for (fd, events) in [
            (self.pipe_w, libc::POLLOUT),
            (self.pipe_r, libc::POLLIN),
            (self.eventfd, libc::POLLIN | libc::POLLOUT),
        ] {
            let mut pfd = libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            // SAFETY: one pollfd; zero timeout.
            if unsafe { libc::poll(&mut pfd, 1, 0) } != 1 {
                continue;
            }
            // SAFETY: reads/writes of the local buffer on descriptors the fixture owns;
            // poll said each will not block.
            unsafe {
                if fd == self.eventfd {
                    if pfd.revents & libc::POLLIN != 0 {
                        libc::read(fd, buf.as_mut_ptr().cast(), 8);
                    }
                    let one = 1u64;
                    if pfd.revents & libc::POLLOUT != 0 {
                        libc::write(fd, (&one as *const u64).cast(), 8);
                    }
                } else if pfd.revents & libc::POLLOUT != 0 {
                    libc::write(fd, buf.as_ptr().cast(), buf.len());
                } else if pfd.revents & libc::POLLIN != 0 {
                    libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                }
            }
        }
        // SAFETY: as above, MSG_DONTWAIT never blocks.
        unsafe {
            libc::send(
                self.socket,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            );
            libc::send(
                self.socket_peer,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            );
            libc::recv(
                self.socket_peer,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            );
        }
    }
}

/// The input, read from the front; past the end it reads zeros.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

type Handle = *mut c_void;

/// One context's requests, by iocb slot.
struct Requests {
    iocbs: Box<[Iocb; SLOTS]>,
    used: usize,
    /// Per slot: accepted and no event yet.
    in_flight: [bool; SLOTS],
    events: [u32; SLOTS],
    data: [u64; SLOTS],
}

fn slot_of(requests: &Requests, obj: u64) -> Option<usize> {
    let base = requests.iocbs.as_ptr() as u64;
    let size = std::mem::size_of::<Iocb>() as u64;
    (obj >= base && obj < base + SLOTS as u64 * size && (obj - base).is_multiple_of(size))
        .then(|| ((obj - base) / size) as usize)
}

fn build_iocb(fx: &Fixture, input: &mut Bytes, slot: usize) -> Iocb {
    let choice = input.u8();
    let opcode = match choice % 16 {
        0..=8 => u16::from(choice % 9),
        9 => 4,
        10 => input.u16(),
        _ => [0, 1, 7, 8][usize::from(choice) % 4],
    };
    // Raw numbers start at 1024: below that they may name the harness's own peers (a read
    // of one would wait for a writer that is the harness itself) or the fuzzer's pipes.
    let fd = match input.u8() {
        250..=255 => input.u32().max(1024),
        c => fx.fds[usize::from(c) % fx.fds.len()],
    };
    let vectored = matches!(opcode, 7 | 8);
    let (buf, nbytes) = match input.u8() % 8 {
        0 => (0, u64::from(input.u16())),
        1 => (fx.no_access, u64::from(input.u16() % 8192)),
        2 => (KERNEL_ADDR, u64::from(input.u16())),
        3 => (input.u64(), input.u64()),
        _ if vectored => {
            let start = (slot * IOVECS_PER_SLOT) as u64;
            let base = fx.iovecs as u64 + start * 16;
            let count = match input.u8() {
                c @ 0..=200 => u64::from(c % 9),
                201..=220 => 1024,
                221..=240 => 1025,
                _ => input.u64(),
            };
            (base, count)
        }
        _ => {
            let offset = usize::from(input.u16()) * 8 % (ARENA / 2);
            let len = match input.u8() {
                c @ 0..=127 => usize::from(c) * 512,
                c => usize::from(c) * 37,
            };
            (
                fx.arena as u64 + offset as u64,
                len.min(ARENA - offset) as u64,
            )
        }
    };
    let buf = if opcode == 5 && input.u8().is_multiple_of(2) {
        u64::from(input.u16())
            | if input.u8().is_multiple_of(8) {
                1 << 16
            } else {
                0
            }
    } else {
        buf
    };
    let offset = match input.u8() % 8 {
        0 => input.u64() as i64,
        1 => -(i64::from(input.u8())),
        _ => i64::from(input.u8()) * 512,
    };
    let (flags, resfd) = match input.u8() % 8 {
        0 => (IOCB_FLAG_RESFD, fx.eventfd as u32),
        1 => (
            IOCB_FLAG_RESFD,
            fx.fds[usize::from(input.u8()) % fx.fds.len()],
        ),
        2 => (IOCB_FLAG_IOPRIO, 0),
        3 => (input.u32(), input.u32()),
        _ => (0, 0),
    };
    let rw_flags = match input.u8() % 8 {
        0 => input.u32() as i32,
        1 => [
            libc::RWF_HIPRI,
            libc::RWF_DSYNC,
            libc::RWF_SYNC,
            libc::RWF_NOWAIT,
            libc::RWF_APPEND,
        ][usize::from(input.u8()) % 5],
        _ => 0,
    };
    let reserved2 = if input.u8().is_multiple_of(16) {
        input.u64()
    } else {
        0
    };
    Iocb {
        aio_data: input.u64(),
        aio_key: input.u32(),
        aio_rw_flags: rw_flags,
        aio_lio_opcode: opcode,
        aio_reqprio: input.u16() as i16,
        aio_fildes: fd,
        aio_buf: buf,
        aio_nbytes: nbytes,
        aio_offset: offset,
        aio_reserved2: reserved2,
        aio_flags: flags,
        aio_resfd: resfd,
    }
}

fn errno_allowed(ret: i32, allowed: &[i32]) -> bool {
    ret < 0 && allowed.contains(&-ret)
}

fn submit(fx: &Fixture, ctx: Handle, requests: &mut Requests, input: &mut Bytes) {
    let count = usize::from(input.u8() % 9);
    let mut pointers: Vec<*mut c_void> = Vec::with_capacity(count);
    let first = requests.used;
    for _ in 0..count {
        let pointer = match input.u8() {
            0..=240 if requests.used < SLOTS => {
                let slot = requests.used;
                requests.used += 1;
                requests.iocbs[slot] = build_iocb(fx, input, slot);
                std::ptr::addr_of_mut!(requests.iocbs[slot]).cast()
            }
            241..=245 => std::ptr::null_mut(),
            246..=250 => fx.no_access as *mut c_void,
            _ => KERNEL_ADDR as *mut c_void,
        };
        pointers.push(pointer);
    }
    let array = match input.u8() {
        0..=250 => pointers.as_mut_ptr(),
        251..=253 => std::ptr::null_mut(),
        _ => fx.no_access as *mut *mut c_void,
    };
    let nr = match input.u8() {
        0..=250 => count as i64,
        251 => -1,
        _ => i64::from(input.u8() % 4),
    }
    .min(count as i64);
    let ret = io_submit(ctx, nr as libc::c_long, array);
    if ret < 0 {
        assert!(
            errno_allowed(
                ret,
                &[
                    libc::EFAULT,
                    libc::EINVAL,
                    libc::EAGAIN,
                    libc::EBADF,
                    libc::EOPNOTSUPP
                ]
            ),
            "io_submit returned {ret}"
        );
        return;
    }
    let accepted = ret as usize;
    assert!(
        accepted <= nr.max(0) as usize,
        "io_submit accepted {accepted} of {nr}"
    );
    for pointer in &pointers[..accepted] {
        let slot = slot_of(requests, *pointer as u64)
            .unwrap_or_else(|| panic!("io_submit accepted an unreadable iocb {pointer:?}"));
        assert!(slot >= first);
        assert_eq!(
            requests.iocbs[slot].aio_key, 0,
            "aio_key of an accepted iocb"
        );
        requests.in_flight[slot] = true;
        requests.data[slot] = requests.iocbs[slot].aio_data;
    }
}

fn get_events(fx: &Fixture, ctx: Handle, requests: &mut Requests, input: &mut Bytes) {
    let min = i64::from(input.u8() % 4) - i64::from(input.u8().is_multiple_of(16));
    let nr = i64::from(input.u8() % 17);
    let mut timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let timeout_ptr: *mut c_void = match input.u8() % 8 {
        0 => {
            timeout.tv_nsec = 1_000_000;
            std::ptr::addr_of_mut!(timeout).cast()
        }
        1 => fx.no_access as *mut c_void,
        2 => {
            timeout.tv_nsec = -1;
            std::ptr::addr_of_mut!(timeout).cast()
        }
        _ => std::ptr::addr_of_mut!(timeout).cast(),
    };
    let mut events = [IoEvent::default(); 16];
    let events_ptr: *mut c_void = match input.u8() % 8 {
        0 => fx.no_access as *mut c_void,
        _ => events.as_mut_ptr().cast(),
    };
    // Never more than the array holds: the ABI trusts the caller's nr.
    let nr = if events_ptr == events.as_mut_ptr().cast() {
        nr.min(16)
    } else {
        nr
    };
    let ret = aioctx_io_getevents_0_4(ctx, min, nr, events_ptr, timeout_ptr);
    if ret < 0 {
        assert!(
            errno_allowed(ret, &[libc::EFAULT, libc::EINVAL, libc::EINTR]),
            "io_getevents returned {ret}"
        );
        return;
    }
    assert!(i64::from(ret) <= nr, "io_getevents returned {ret} of {nr}");
    assert!(events_ptr == events.as_mut_ptr().cast() || ret == 0);
    for event in &events[..ret as usize] {
        let slot = slot_of(requests, event.obj)
            .unwrap_or_else(|| panic!("event for an unknown iocb: {event:?}"));
        assert!(
            requests.in_flight[slot],
            "event for slot {slot} not in flight: {event:?}"
        );
        assert_eq!(event.data, requests.data[slot], "event data");
        requests.in_flight[slot] = false;
        requests.events[slot] += 1;
    }
}

fn cancel(fx: &Fixture, ctx: Handle, requests: &mut Requests, input: &mut Bytes) {
    let choice = input.u8();
    let iocb: *mut c_void = match choice % 8 {
        0 => std::ptr::null_mut(),
        1 => fx.no_access as *mut c_void,
        _ => {
            let slot = usize::from(input.u8()) % SLOTS;
            std::ptr::addr_of_mut!(requests.iocbs[slot]).cast()
        }
    };
    let mut result = IoEvent::default();
    let ret = aioctx_io_cancel_0_4(ctx, iocb, std::ptr::addr_of_mut!(result).cast());
    assert!(
        errno_allowed(ret, &[libc::EINPROGRESS, libc::EINVAL, libc::EFAULT]),
        "io_cancel returned {ret}"
    );
    if ret == -libc::EINPROGRESS {
        let slot = slot_of(requests, iocb as u64).expect("cancel of a known iocb");
        assert!(
            requests.in_flight[slot] || requests.events[slot] == 0,
            "io_cancel accepted a request whose event was delivered"
        );
    }
}

/// Calls on handles that are not contexts: `-EINVAL` (or `-EFAULT` where a pointer is
/// checked first), never a dereference.
fn bad_handle(fx: &Fixture, live: Handle, input: &mut Bytes) {
    let handle = match input.u8() % 4 {
        0 => input.u64(),
        1 => live as u64 + 8,
        2 => fx.arena as u64,
        _ => KERNEL_ADDR,
    } as Handle;
    if handle == live {
        return;
    }
    let mut iocb = Iocb::default();
    let mut pointer: *mut c_void = std::ptr::addr_of_mut!(iocb).cast();
    assert_eq!(io_submit(handle, 1, &mut pointer), -libc::EINVAL);
    let mut zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut events = [IoEvent::default(); 1];
    let ret = aioctx_io_getevents_0_4(
        handle,
        0,
        1,
        events.as_mut_ptr().cast(),
        std::ptr::addr_of_mut!(zero).cast(),
    );
    assert_eq!(ret, -libc::EINVAL);
    assert_eq!(
        aioctx_io_cancel_0_4(handle, pointer, std::ptr::null_mut()),
        -libc::EINVAL
    );
    assert_eq!(io_destroy(handle), -libc::EINVAL);
}

/// Runs the calls the bytes describe on one fresh context, then destroys it.
pub fn exercise(data: &[u8]) {
    let fx = Fixture::get();
    let mut input = Bytes(data);
    let nr_events = match input.u8() % 8 {
        0 => 1,
        1 => 4,
        2 => 0,
        3 => -1,
        4 => 0x1000_0000 / 32 + 1,
        _ => 32,
    };
    let mut ctx: Handle = std::ptr::null_mut();
    let ret = io_setup(nr_events, &mut ctx);
    if ret != 0 {
        assert!(
            errno_allowed(ret, &[libc::EINVAL, libc::EAGAIN]),
            "io_setup returned {ret}"
        );
        assert!(
            nr_events <= 0 || nr_events > 0x1000_0000 / 32,
            "io_setup({nr_events}): {ret}"
        );
        return;
    }
    let mut requests = Requests {
        iocbs: Box::new([Iocb::default(); SLOTS]),
        used: 0,
        in_flight: [false; SLOTS],
        events: [0; SLOTS],
        data: [0; SLOTS],
    };
    let mut calls = 0;
    while !input.is_empty() && calls < 64 {
        calls += 1;
        match input.u8() % 8 {
            0..=3 => submit(fx, ctx, &mut requests, &mut input),
            4 | 5 => get_events(fx, ctx, &mut requests, &mut input),
            6 => cancel(fx, ctx, &mut requests, &mut input),
            _ => bad_handle(fx, ctx, &mut input),
        }
    }
    destroy(fx, ctx);
    assert!(
        requests.events.iter().all(|&n| n <= 1),
        "an event came twice"
    );
}

/// Destroys `ctx` while pipes, sockets and the eventfd are kept ready (a transfer a worker
/// has begun finishes), then checks the handle is gone.
fn destroy(fx: &Fixture, ctx: Handle) {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                fx.feed_and_drain();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        });
        let ret = io_destroy(ctx);
        done.store(true, Ordering::Release);
        assert_eq!(ret, 0, "io_destroy");
    });
    assert_eq!(io_destroy(ctx), -libc::EINVAL, "second io_destroy");
    let mut iocb = Iocb::default();
    let mut pointer: *mut c_void = std::ptr::addr_of_mut!(iocb).cast();
    assert_eq!(io_submit(ctx, 1, &mut pointer), -libc::EINVAL);
}

/// A fresh context of `nr` events (the property tests build single iocbs on it).
pub fn context(nr: i32) -> Handle {
    let mut ctx: Handle = std::ptr::null_mut();
    assert_eq!(io_setup(nr, &mut ctx), 0);
    ctx
}

/// Destroys a context from `context`, checking it goes exactly once.
pub fn destroy_context(ctx: Handle) {
    destroy(Fixture::get(), ctx);
}

/// Submits one iocb; io_submit's return.
pub fn submit_one(ctx: Handle, iocb: &mut Iocb) -> i32 {
    let mut pointer: *mut c_void = (iocb as *mut Iocb).cast();
    io_submit(ctx, 1, &mut pointer)
}

/// Waits up to 5 s for `n` events.
pub fn reap(ctx: Handle, n: usize) -> Vec<IoEvent> {
    let mut events = vec![IoEvent::default(); n];
    let mut got = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while got < n && std::time::Instant::now() < deadline {
        let mut limit = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        let ret = aioctx_io_getevents_0_4(
            ctx,
            1,
            (n - got) as libc::c_long,
            events[got..].as_mut_ptr().cast(),
            std::ptr::addr_of_mut!(limit).cast(),
        );
        assert!(ret >= 0, "io_getevents returned {ret}");
        got += ret as usize;
    }
    events.truncate(got);
    events
}

impl Fixture {
    /// A regular file open for reading and writing, 1 MiB long.
    pub fn regular_fd(&self) -> u32 {
        self.fds[0]
    }

    /// A number no descriptor is ever open under (far above any RLIMIT_NOFILE here).
    pub fn closed_fd(&self) -> u32 {
        0x7fff_ffff
    }

    /// The address of `offset` in the I/O arena (`len` bytes there are the harness's).
    pub fn arena_at(&self, offset: usize, len: usize) -> u64 {
        assert!(offset + len <= ARENA);
        self.arena as u64 + offset as u64
    }
}

/// Held by each caller of the harness in a multithreaded test binary: a destroyed
/// context's handle (its ring's address) may be handed out again by the next io_setup, so
/// the checks on dead handles hold only while no other thread makes contexts.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}
