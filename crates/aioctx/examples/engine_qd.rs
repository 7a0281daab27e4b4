//! Requests per second through the Context API at a fixed queue depth, one thread:
//! `cargo run --release --example engine_qd -- ENGINE OP QD SECONDS [FILE]`, OP one of
//! noop, read (4 KiB buffered, cached), direct (4 KiB O_DIRECT random), pipe (1-byte
//! reads of a FIFO this thread writes right after each submit: the completion comes
//! asynchronously, without a device).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioctx::{AlignedBuf, Context, EngineKind, Request};

const USAGE: &str = "usage: engine_qd ENGINE noop|read|direct|pipe QD SECONDS [FILE]";

fn usage() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, USAGE)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        return Err(usage());
    }
    let engine: EngineKind = args[0].parse()?;
    let op = args[1].clone();
    let depth: usize = args[2].parse().map_err(|_| usage())?;
    let seconds: f64 = args[3].parse().map_err(|_| usage())?;
    let path = args
        .get(4)
        .cloned()
        .unwrap_or_else(|| "/tmp/aioctx-qd.dat".into());
    let file_len: u64 = 256 << 20;
    let fifo = "/tmp/aioctx-qd.fifo";
    if op == "pipe" && std::fs::metadata(fifo).is_err() {
        std::process::Command::new("mkfifo").arg(fifo).status()?;
    }
    if op != "noop"
        && op != "pipe"
        && std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) < file_len
    {
        std::fs::write(&path, vec![0x5au8; file_len as usize])?;
    }
    let file = match op.as_str() {
        "noop" => None,
        "read" => Some(Arc::new(File::open(&path)?)),
        "pipe" => Some(Arc::new(
            OpenOptions::new().read(true).write(true).open(fifo)?,
        )),
        _ => Some(Arc::new(
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)?,
        )),
    };
    let ctx = Context::builder()
        .depth(depth as u32)
        .engine(engine)
        .build()?;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |buf: AlignedBuf| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let offset = match op.as_str() {
            "read" => (seed % 64) * 4096,
            _ => (seed % (file_len / 4096)) * 4096,
        };
        match &file {
            None => Request::noop(),
            Some(f) if op == "pipe" => Request::read(Arc::clone(f), vec![0u8; 1], 0),
            Some(f) => Request::read(Arc::clone(f), buf, offset),
        }
    };
    let new_buf = || AlignedBuf::page_aligned(4096).expect("buffer");
    let submit = |request: Request| -> std::io::Result<()> {
        ctx.submit_one(request).map_err(std::io::Error::from)?;
        if let (Some(f), "pipe") = (&file, op.as_str()) {
            (&**f).write_all(b"x")?;
        }
        Ok(())
    };
    for _ in 0..depth {
        submit(next(new_buf()))?;
    }
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < Duration::from_secs_f64(seconds) {
        for c in ctx.get_events(1, depth, None)? {
            assert!(c.res >= 0, "res {}", c.res);
            done += 1;
            let buf = c
                .into_buf::<AlignedBuf>()
                .filter(|b| b.len() == 4096)
                .unwrap_or_else(new_buf);
            submit(next(buf))?;
        }
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    println!("{engine} {op} qd{depth}: {rate:.0} ops/s");
    Ok(())
}
