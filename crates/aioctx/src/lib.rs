//! aioctx: Linux AIO contexts (`io_setup`, `io_submit`, `io_getevents`, `io_cancel`,
//! `io_destroy`) in user space, on real I/O engines, with one promise above all: **when
//! destroy returns, nothing of that context will ever touch the caller's memory again**,
//! on every engine, also when several threads destroy at once.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use aioctx::{Context, Request};
//!
//! let ctx = Context::builder().depth(64).build()?;
//! let file = Arc::new(std::fs::File::open("/etc/hostname")?);
//! let mut batch = vec![
//!     Request::read(file.clone(), vec![0u8; 512], 0).data(1),
//!     Request::read(file, vec![0u8; 512], 512).data(2),
//! ];
//! let accepted = ctx.submit(&mut batch)?.len();
//! for done in ctx.get_events(accepted, accepted, Some(Duration::from_secs(5)))? {
//!     println!("request {} read {:?} bytes", done.data, done.result());
//!     let _buffer: Option<Vec<u8>> = done.into_buf();
//! }
//! ctx.destroy()?; // returns once nothing of ctx is in flight
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! What it does not do: it is not a general async runtime, and buffered I/O is only as
//! asynchronous as its engine makes it (the thread pool runs blocking syscalls on workers).

// Input never reaches a panic: failures are errors (SPEC §3).
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod buf;
mod context;
mod core;
mod doorbell;
pub mod engine;
mod eventfds;
#[doc(hidden)]
pub mod ffi;
mod in_call;
mod lifecycle;
mod request;
mod ring;
mod sync;
mod sys;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use buf::{AlignedBuf, IoBuf, IoBufMut};
pub use context::{Builder, Completion, Context, RequestId, Stats, SubmitError};
pub use engine::sim::{CrashAt, Latency, SimConfig, SimMachine};
pub use engine::{EngineKind, Probe, Unavailable};
pub use lifecycle::State;
pub use request::{Opcode, Request, RwFlags};
pub use sys::mem::SharedMem;

/// The README's Rust example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExample;

#[cfg(all(test, aioctx_loom))]
mod loom_tests;
