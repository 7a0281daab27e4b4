//! The kernel client: the kernel's own AIO system calls (`io_setup`, `io_submit`,
//! `io_getevents`, `io_destroy`, no libaio) through the same loop as the aioctx client, so
//! that the two differ only in what is underneath.

use std::fs::File;
use std::io;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use aioctx::ffi::abi::IoEvent;
use aioctx::SharedMem;

use super::io_loop::{run_jobs, Done, JobQueue, Op, Queue, RunTally};
use super::workload::{IoLoad, Settings};
use crate::sys::{KernelAio, KernelOp};

struct KernelQueue<'a> {
    aio: &'a KernelAio,
    ops: Vec<KernelOp>,
    events: Vec<IoEvent>,
}

impl Queue for KernelQueue<'_> {
    fn submit(&mut self, ops: &[Op]) -> io::Result<usize> {
        self.ops.clear();
        self.ops.extend(ops.iter().map(|op| KernelOp {
            slot: op.slot,
            write: op.write,
            offset: op.offset,
        }));
        self.aio.submit(&self.ops)
    }

    fn reap(
        &mut self,
        min: usize,
        max: usize,
        timeout: Duration,
        done: &mut Vec<Done>,
    ) -> io::Result<()> {
        self.events.resize(max, IoEvent::default());
        let n = self.aio.get_events(min, &mut self.events[..max], timeout)?;
        done.extend(self.events[..n].iter().map(|e| Done {
            slot: e.data as usize,
            res: e.res,
        }));
        Ok(())
    }
}

pub fn measure(
    load: &IoLoad,
    settings: &Settings,
    file: Arc<File>,
    live: &dyn Fn(u64, Duration),
) -> io::Result<RunTally> {
    let jobs = settings.numjobs as usize;
    let per_context = if settings.shared { jobs } else { 1 };
    let slots = jobs * load.iodepth as usize;
    let mem = Arc::new(SharedMem::map(slots * load.bs as usize)?);
    let contexts: Vec<KernelAio> = (0..jobs / per_context)
        .map(|_| {
            KernelAio::setup(
                load.iodepth * per_context as u32,
                Arc::clone(&file),
                Arc::clone(&mem),
                load.bs as usize,
            )
        })
        .collect::<io::Result<_>>()?;
    let in_flight: Vec<AtomicUsize> = contexts.iter().map(|_| AtomicUsize::new(0)).collect();
    let queues = (0..jobs)
        .map(|job| JobQueue {
            queue: Box::new(KernelQueue {
                aio: &contexts[job / per_context],
                ops: Vec::with_capacity(load.batch as usize),
                events: Vec::with_capacity(load.iodepth as usize),
            }) as Box<dyn Queue + Send>,
            in_flight: &in_flight[job / per_context],
        })
        .collect();
    let tally = run_jobs(
        queues,
        load,
        settings.size / load.bs,
        settings.runtime,
        live,
    )?;
    for aio in contexts {
        aio.destroy()?;
    }
    Ok(tally)
}
