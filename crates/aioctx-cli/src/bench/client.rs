//! Who runs a workload: aioctx through its Rust API, the kernel's own AIO through the same
//! loop, or fio with one of its engines (over the system libaio or the drop-in).

use std::fmt;

use aioctx::EngineKind;

use super::workload::Workload;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// The Rust API on one engine, through the bench's own loop.
    Aioctx(EngineKind),
    /// The kernel's AIO system calls through the same loop: the baseline of the aioctx rows.
    Kernel,
    Fio(FioEngine),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FioEngine {
    /// fio's libaio engine on the system libaio: the baseline of the fio rows.
    Libaio,
    /// fio's libaio engine on the drop-in `libaio.so.1`, on one aioctx engine.
    Dropin(EngineKind),
    IoUring,
    Psync,
    Posixaio,
}

impl Client {
    /// The clients of one bench, in the order they run (and are shown) within a workload.
    pub fn lineup(engines: &[EngineKind], fio: bool) -> Vec<Client> {
        let mut clients = vec![Client::Kernel];
        clients.extend(engines.iter().map(|&e| Client::Aioctx(e)));
        if fio {
            clients.push(Client::Fio(FioEngine::Libaio));
            clients.extend(engines.iter().map(|&e| Client::Fio(FioEngine::Dropin(e))));
            clients.extend(
                [FioEngine::IoUring, FioEngine::Psync, FioEngine::Posixaio].map(Client::Fio),
            );
        }
        clients
    }

    /// The `client` field of the results.
    pub fn name(self) -> &'static str {
        match self {
            Client::Aioctx(_) => "aioctx",
            Client::Kernel => "kernel",
            Client::Fio(FioEngine::Libaio) => "fio-libaio",
            Client::Fio(FioEngine::Dropin(_)) => "fio-libaio-dropin",
            Client::Fio(FioEngine::IoUring) => "fio-io_uring",
            Client::Fio(FioEngine::Psync) => "fio-psync",
            Client::Fio(FioEngine::Posixaio) => "fio-posixaio",
        }
    }

    /// The `engine` field: the aioctx engine, or what serves the client.
    pub fn engine(self) -> &'static str {
        match self {
            Client::Aioctx(kind) | Client::Fio(FioEngine::Dropin(kind)) => kind.name(),
            Client::Kernel | Client::Fio(FioEngine::Libaio) => "kernel-aio",
            Client::Fio(FioEngine::IoUring) => "io_uring",
            Client::Fio(FioEngine::Psync) => "psync",
            Client::Fio(FioEngine::Posixaio) => "glibc-aio",
        }
    }

    /// How a person calls this client: the chart's legend.
    pub fn label(self) -> String {
        match self {
            Client::Aioctx(kind) => format!("aioctx {kind}"),
            Client::Kernel => "kernel AIO syscalls".into(),
            Client::Fio(FioEngine::Libaio) => "fio libaio (system)".into(),
            Client::Fio(FioEngine::Dropin(kind)) => format!("fio libaio on drop-in {kind}"),
            Client::Fio(FioEngine::IoUring) => "fio io_uring".into(),
            Client::Fio(FioEngine::Psync) => "fio psync".into(),
            Client::Fio(FioEngine::Posixaio) => "fio posixaio".into(),
        }
    }

    /// The row this client's ratio is taken against: the kernel through the same client.
    pub fn baseline(self) -> Client {
        match self {
            Client::Aioctx(_) | Client::Kernel => Client::Kernel,
            Client::Fio(_) => Client::Fio(FioEngine::Libaio),
        }
    }

    /// fio has no destroy to time: destroy workloads are the bench's own clients'.
    pub fn runs(self, workload: &Workload) -> bool {
        !(workload.is_destroy() && matches!(self, Client::Fio(_)))
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name(), self.engine())
    }
}
