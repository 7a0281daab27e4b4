//! The cost of aioctx itself: a NOOP submitted and reaped, per engine, one at a time and
//! 32 per submit.

use std::time::Duration;

use aioctx::engine::probe_all;
use aioctx::{Context, EngineKind, Request};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn engines() -> Vec<EngineKind> {
    probe_all()
        .into_iter()
        .filter(|p| p.available() && p.kind != EngineKind::Sim)
        .map(|p| p.kind)
        .collect()
}

fn noop_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("noop_submit_reap");
    for kind in engines() {
        for batch in [1usize, 32] {
            let ctx = Context::builder()
                .depth(batch as u32)
                .engine(kind)
                .build()
                .expect("context");
            let mut requests = Vec::with_capacity(batch);
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_function(
                BenchmarkId::new(kind.name(), format!("batch{batch}")),
                |b| {
                    b.iter(|| {
                        requests.extend((0..batch).map(|i| Request::noop().data(i as u64)));
                        let accepted = ctx.submit(&mut requests).expect("submit").len();
                        assert_eq!(accepted, batch);
                        let done = ctx
                            .get_events(batch, batch, Some(Duration::from_secs(10)))
                            .expect("get_events");
                        assert_eq!(done.len(), batch);
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, noop_round_trip);
criterion_main!(benches);
