//! 4 KiB random reads from 32 concurrent tasks on tokio's multi-threaded runtime: aioctx's
//! tokio face (on each engine asked for) against `tokio::fs` (each call on the blocking
//! pool), in the same run, page cache hot and O_DIRECT. Prints IOPS and the ratio.
//!
//! `cargo bench -p aioctx --features tokio --bench tokio_fs [-- SECONDS]`; under
//! `cargo test` it runs each case for a moment, as a smoke test.

use std::fs::{File, OpenOptions};
use std::io::{SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioctx::tokio::AsyncContext;
use aioctx::{AlignedBuf, Context, EngineKind};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const TASKS: u64 = 32;
const BLOCK: u64 = 4096;
const FILE_BLOCKS: u64 = 16384; // 64 MiB

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed % FILE_BLOCKS) * BLOCK
}

fn open(path: &Path, direct: bool) -> File {
    let flags = if direct { libc::O_DIRECT } else { 0 };
    OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .expect("open")
}

async fn aioctx_iops(engine: EngineKind, path: &Path, direct: bool, run: Duration) -> f64 {
    let ctx = Context::builder()
        .depth(2 * TASKS as u32)
        .engine(engine)
        .build()
        .expect("context");
    let ctx = AsyncContext::new(ctx).expect("async context");
    let file = Arc::new(open(path, direct));
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (ctx, file) = (ctx.clone(), Arc::clone(&file));
            tokio::spawn(async move {
                let (mut seed, mut done) = (0x9e37_79b9 + t, 0u64);
                let mut buf = AlignedBuf::page_aligned(BLOCK as usize).expect("buffer");
                while start.elapsed() < run {
                    let (n, back) = ctx.read_at(&file, buf, next(&mut seed)).await;
                    assert_eq!(n.expect("read"), BLOCK as usize);
                    buf = back;
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        done += task.await.expect("task");
    }
    let iops = done as f64 / start.elapsed().as_secs_f64();
    ctx.close().await.expect("close");
    iops
}

/// What `tokio::fs` does for each call, in one hop: `spawn_blocking` of a `pread`, here into
/// an aligned buffer so that O_DIRECT works (`tokio::fs::File` reads into an unaligned
/// buffer of its own, which O_DIRECT refuses with `EINVAL`).
async fn spawn_blocking_iops(path: &Path, direct: bool, run: Duration) -> f64 {
    use std::os::unix::fs::FileExt;
    let file = Arc::new(open(path, direct));
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let file = Arc::clone(&file);
            tokio::spawn(async move {
                let (mut seed, mut done) = (0x9e37_79b9 + t, 0u64);
                let mut buf = AlignedBuf::page_aligned(BLOCK as usize).expect("buffer");
                while start.elapsed() < run {
                    let (file, at) = (Arc::clone(&file), next(&mut seed));
                    buf = tokio::task::spawn_blocking(move || {
                        file.read_exact_at(&mut buf, at).expect("read");
                        buf
                    })
                    .await
                    .expect("blocking read");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        done += task.await.expect("task");
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// `tokio::fs::File`: a seek and a read per request, each on the blocking pool.
async fn tokio_fs_iops(path: &Path, direct: bool, run: Duration) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let mut file = tokio::fs::File::from_std(open(path, direct));
            tokio::spawn(async move {
                let (mut seed, mut done) = (0x9e37_79b9 + t, 0u64);
                let mut buf = vec![0u8; BLOCK as usize];
                while start.elapsed() < run {
                    file.seek(SeekFrom::Start(next(&mut seed)))
                        .await
                        .expect("seek");
                    file.read_exact(&mut buf).await.expect("read");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        done += task.await.expect("task");
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn data_file() -> PathBuf {
    let path = std::env::temp_dir().join(format!("aioctx-tokio-fs-{}", std::process::id()));
    let mut file = File::create(&path).expect("create");
    let block: Vec<u8> = (0..1 << 20).map(|i| i as u8).collect();
    for _ in 0..FILE_BLOCKS * BLOCK / (1 << 20) {
        file.write_all(&block).expect("write");
    }
    file.sync_all().expect("sync");
    path
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let seconds = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<f64>().ok())
        .unwrap_or(if benching { 3.0 } else { 0.05 });
    let run = Duration::from_secs_f64(seconds);
    let path = data_file();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Page cache hot: read the whole file once.
    std::fs::read(&path).expect("warm");
    for direct in [false, true] {
        let cache = if direct { "O_DIRECT" } else { "page cache" };
        if !direct {
            let fs = runtime.block_on(tokio_fs_iops(&path, direct, run));
            println!("{cache:10} tokio::fs::File {fs:>10.0} IOPS (seek + read)");
        }
        let base = runtime.block_on(spawn_blocking_iops(&path, direct, run));
        println!("{cache:10} spawn_blocking  {base:>10.0} IOPS (tokio::fs's one hop per call)");
        for engine in [EngineKind::Uring, EngineKind::Kaio, EngineKind::Threads] {
            let iops = runtime.block_on(aioctx_iops(engine, &path, direct, run));
            println!(
                "{cache:10} aioctx {engine:9} {iops:>10.0} IOPS  {:.2}x spawn_blocking",
                iops / base
            );
        }
    }
    let _ = std::fs::remove_file(&path);
}
