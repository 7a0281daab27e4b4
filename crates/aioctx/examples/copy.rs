//! Copies a file asynchronously through aioctx's tokio face: `copy SRC DST`.
//!
//! Eight 1 MiB chunks are in flight at once, each read into its own buffer and written
//! from it; short reads and writes continue where they stopped.
//!
//! `cargo run --release -p aioctx --features tokio --example copy -- SRC DST`

use std::fs::{File, OpenOptions};
use std::io;
use std::sync::Arc;

use aioctx::tokio::AsyncContext;
use aioctx::Context;

const CHUNK: u64 = 1 << 20;
const IN_FLIGHT: u64 = 8;

/// Copies bytes `at..at + len` of `src` to `dst`.
async fn copy_chunk(
    ctx: &AsyncContext,
    src: &Arc<File>,
    dst: &Arc<File>,
    at: u64,
    len: u64,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(len as usize);
    while (buf.len() as u64) < len {
        let done = buf.len() as u64;
        let (n, back) = ctx.read_at(src, buf, at + done).await;
        buf = back;
        if n? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "source shrank",
            ));
        }
    }
    let (n, buf) = ctx.write_at(dst, buf, at).await;
    let mut sent = n?;
    // A short write (rare on a regular file) sends the rest from a copy of it.
    while sent < buf.len() {
        let rest = buf[sent..].to_vec();
        let (n, _) = ctx.write_at(dst, rest, at + sent as u64).await;
        match n? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "destination took nothing",
                ))
            }
            n => sent += n,
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, dst] = &args[..] else {
        eprintln!("usage: copy SRC DST");
        std::process::exit(2);
    };
    let src = Arc::new(File::open(src)?);
    let len = src.metadata()?.len();
    let dst = Arc::new(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(dst)?,
    );
    let ctx = AsyncContext::new(Context::builder().depth(2 * IN_FLIGHT as u32).build()?)?;
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..IN_FLIGHT {
        let (ctx, src, dst) = (ctx.clone(), Arc::clone(&src), Arc::clone(&dst));
        tasks.spawn(async move {
            let mut at = lane * CHUNK;
            while at < len {
                copy_chunk(&ctx, &src, &dst, at, CHUNK.min(len - at)).await?;
                at += IN_FLIGHT * CHUNK;
            }
            io::Result::Ok(())
        });
    }
    while let Some(lane) = tasks.join_next().await {
        lane.map_err(io::Error::other)??;
    }
    ctx.fsync(&dst).await?;
    ctx.close().await?;
    println!("copied {len} bytes on {}", ctx.context().engine());
    Ok(())
}
