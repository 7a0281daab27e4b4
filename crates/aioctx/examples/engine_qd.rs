//! Requests per second through the Context API at a fixed queue depth, one thread:
//! `cargo run --release --example engine_qd -- ENGINE OP QD SECONDS [FILE]`, OP one of
//! noop, read (4 KiB buffered, cached), direct (4 KiB O_DIRECT random).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioctx::{AlignedBuf, Buf, Context, EngineKind, Request};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let engine: EngineKind = args[0].parse()?;
    let op = args[1].clone();
    let depth: usize = args[2].parse().expect("QD");
    let seconds: f64 = args[3].parse().expect("SECONDS");
    let path = args.get(4).cloned().unwrap_or_else(|| "/tmp/aioctx-qd.dat".into());
    let file_len: u64 = 256 << 20;
    if op != "noop" && std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) < file_len {
        std::fs::write(&path, vec![0x5au8; file_len as usize])?;
    }
    let file = match op.as_str() {
        "noop" => None,
        "read" => Some(Arc::new(File::open(&path)?)),
        _ => Some(Arc::new(
            OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path)?,
        )),
    };
    let ctx = Context::with_engine(depth as u32, engine)?;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |buf: Buf| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let offset = match op.as_str() {
            "read" => (seed % 64) * 4096,
            _ => (seed % (file_len / 4096)) * 4096,
        };
        match &file {
            None => Request::noop(),
            Some(f) => Request::read(Arc::clone(f), buf, offset),
        }
    };
    let new_buf = || -> Buf { AlignedBuf::page_aligned(4096).expect("buffer").into() };
    for _ in 0..depth {
        ctx.submit_one(next(new_buf())).map_err(std::io::Error::from)?;
    }
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < Duration::from_secs_f64(seconds) {
        for c in ctx.get_events(1, depth, None)? {
            assert!(c.res >= 0, "res {}", c.res);
            done += 1;
            let buf = c.into_buf().unwrap_or_else(new_buf);
            ctx.submit_one(next(buf)).map_err(std::io::Error::from)?;
        }
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    println!("{engine} {op} qd{depth}: {rate:.0} ops/s");
    Ok(())
}
