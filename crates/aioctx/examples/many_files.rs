//! A server-style load on aioctx's tokio face: many small files read at once, one task
//! each, all sharing one context. Makes `FILES` files of 64 KiB under the temp dir
//! (default 256), reads each whole, checks it, and says how long it took.
//!
//! `cargo run --release -p aioctx --features tokio --example many_files -- [FILES]`

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Instant;

use aioctx::tokio::AsyncContext;
use aioctx::Context;

const FILE_LEN: usize = 64 << 10;

fn contents(file: usize) -> Vec<u8> {
    (0..FILE_LEN).map(|i| (i * 31 + file) as u8).collect()
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let files: usize = std::env::args()
        .nth(1)
        .map_or(Ok(256), |n| n.parse())
        .map_err(io::Error::other)?;
    let dir = std::env::temp_dir().join(format!("aioctx-many-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for file in 0..files {
        File::create(dir.join(file.to_string()))?.write_all(&contents(file))?;
    }
    let ctx = AsyncContext::new(Context::builder().depth(files as u32).build()?)?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for file in 0..files {
        let (ctx, path) = (ctx.clone(), dir.join(file.to_string()));
        tasks.spawn(async move {
            let handle = Arc::new(File::open(path)?);
            let (n, buf) = ctx.read_at(&handle, Vec::with_capacity(FILE_LEN), 0).await;
            match n? == FILE_LEN && buf == contents(file) {
                true => io::Result::Ok(()),
                false => Err(io::Error::other(format!("file {file} read wrong"))),
            }
        });
    }
    while let Some(read) = tasks.join_next().await {
        read.map_err(io::Error::other)??;
    }
    let took = start.elapsed();
    ctx.close().await?;
    std::fs::remove_dir_all(&dir)?;
    println!(
        "{files} files of {} KiB read in {took:?} on {}",
        FILE_LEN >> 10,
        ctx.context().engine()
    );
    Ok(())
}
