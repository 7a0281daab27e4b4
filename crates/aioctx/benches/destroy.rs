//! What destroy costs when it has to wait: 0, 1 and 128 O_DIRECT 4 KiB reads in flight, per
//! engine. Only the destroy is timed; setup and submit happen outside the clock.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioctx::engine::probe_all;
use aioctx::{AlignedBuf, Context, EngineKind, Request};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const BLOCK: usize = 4096;
const FILE_BLOCKS: u64 = 16 << 8; // 16 MiB

/// A file for O_DIRECT reads on a disk-backed file system (/var/tmp; /tmp may be tmpfs),
/// removed on drop.
struct DataFile {
    path: PathBuf,
    file: Arc<File>,
}

impl DataFile {
    fn create() -> DataFile {
        let path = PathBuf::from(format!(
            "/var/tmp/aioctx-destroy-bench-{}.dat",
            std::process::id()
        ));
        let mut writer = File::create(&path).expect("create the data file");
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..(FILE_BLOCKS as usize * BLOCK) / chunk.len() {
            writer.write_all(&chunk).expect("fill the data file");
        }
        writer.sync_all().expect("sync the data file");
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .expect("open with O_DIRECT");
        DataFile {
            path,
            file: Arc::new(file),
        }
    }
}

impl Drop for DataFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn destroy_with_reads_in_flight(c: &mut Criterion) {
    let data = DataFile::create();
    let engines: Vec<EngineKind> = probe_all()
        .into_iter()
        .filter(|p| p.available() && p.kind != EngineKind::Sim)
        .map(|p| p.kind)
        .collect();
    let mut group = c.benchmark_group("destroy");
    for kind in engines {
        for in_flight in [0u64, 1, 128] {
            let id = BenchmarkId::new(kind.name(), format!("{in_flight}_in_flight"));
            group.bench_function(id, |b| {
                b.iter_custom(|iterations| {
                    let mut total = Duration::ZERO;
                    for i in 0..iterations {
                        let ctx = Context::builder()
                            .depth(128)
                            .engine(kind)
                            .build()
                            .expect("context");
                        let mut reads: Vec<Request> = (0..in_flight)
                            .map(|r| {
                                let offset = (i * 131 + r * 977) % FILE_BLOCKS * BLOCK as u64;
                                let buf = AlignedBuf::page_aligned(BLOCK).expect("buffer");
                                Request::read(Arc::clone(&data.file), buf, offset)
                            })
                            .collect();
                        ctx.submit(&mut reads).expect("submit");
                        let start = Instant::now();
                        ctx.destroy().expect("destroy");
                        total += start.elapsed();
                    }
                    total
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, destroy_with_reads_in_flight);
criterion_main!(benches);
