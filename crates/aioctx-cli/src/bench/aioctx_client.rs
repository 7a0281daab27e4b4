//! The aioctx client: the Rust API on one engine, through the shared loop (owned, aligned
//! buffers handed back by each completion).

use std::fs::File;
use std::io;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use aioctx::{AlignedBuf, Context, EngineKind, Request};

use super::io_loop::{run_jobs, Done, JobQueue, Op, Queue, RunTally};
use super::workload::{IoLoad, Settings};

struct AioctxQueue<'a> {
    ctx: &'a Context,
    file: Arc<File>,
    /// Buffers not in flight; each completion hands one back.
    spare: Vec<AlignedBuf>,
    batch: Vec<Request>,
}

impl Queue for AioctxQueue<'_> {
    fn submit(&mut self, ops: &[Op]) -> io::Result<usize> {
        for op in ops {
            let buf = self
                .spare
                .pop()
                .ok_or_else(|| io::Error::other("more requests than buffers"))?;
            let file = Arc::clone(&self.file);
            let request = if op.write {
                Request::write(file, buf, op.offset)
            } else {
                Request::read(file, buf, op.offset)
            };
            self.batch.push(request.data(op.slot as u64));
        }
        let result = self.ctx.submit(&mut self.batch).map(|ids| ids.len());
        // What was not accepted gives its buffer back.
        for request in self.batch.drain(..) {
            self.spare.extend(request.into_buf::<AlignedBuf>());
        }
        result
    }

    fn reap(
        &mut self,
        min: usize,
        max: usize,
        timeout: Duration,
        done: &mut Vec<Done>,
    ) -> io::Result<()> {
        for completion in self.ctx.get_events(min, max, Some(timeout))? {
            done.push(Done {
                slot: completion.data as usize,
                res: completion.res,
            });
            self.spare.extend(completion.into_buf::<AlignedBuf>());
        }
        Ok(())
    }
}

/// What an aioctx run counted, with its contexts' own counters (submitted, completed).
pub struct AioctxRun {
    pub tally: RunTally,
    pub context_submitted: u64,
    pub context_completed: u64,
}

pub fn measure(
    kind: EngineKind,
    load: &IoLoad,
    settings: &Settings,
    file: Arc<File>,
    live: &dyn Fn(u64, Duration),
) -> io::Result<AioctxRun> {
    let jobs = settings.numjobs as usize;
    let per_context = if settings.shared { jobs } else { 1 };
    let contexts: Vec<Context> = (0..jobs / per_context)
        .map(|_| {
            Context::builder()
                .depth(load.iodepth * per_context as u32)
                .engine(kind)
                .build()
        })
        .collect::<io::Result<_>>()?;
    let in_flight: Vec<AtomicUsize> = contexts.iter().map(|_| AtomicUsize::new(0)).collect();
    let mut queues = Vec::with_capacity(jobs);
    for job in 0..jobs {
        let spare = (0..load.iodepth)
            .map(|_| AlignedBuf::page_aligned(load.bs as usize))
            .collect::<io::Result<Vec<AlignedBuf>>>()?;
        queues.push(JobQueue {
            queue: Box::new(AioctxQueue {
                ctx: &contexts[job / per_context],
                file: Arc::clone(&file),
                spare,
                batch: Vec::with_capacity(load.batch as usize),
            }),
            in_flight: &in_flight[job / per_context],
        });
    }
    let tally = run_jobs(
        queues,
        load,
        settings.size / load.bs,
        settings.runtime,
        live,
    )?;
    let (mut context_submitted, mut context_completed) = (0, 0);
    for ctx in &contexts {
        let stats = ctx.stats();
        context_submitted += stats.submitted;
        context_completed += stats.completed;
    }
    for ctx in contexts {
        ctx.destroy()?;
    }
    Ok(AioctxRun {
        tally,
        context_submitted,
        context_completed,
    })
}
