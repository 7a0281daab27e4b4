//! Writes the seed corpus (`seeds/`): the scenarios of the drop-in's C conformance programs
//! (tests/c: submit, getevents, cancel, resfd, badptr, setup, destroy) spelled in the
//! harness's input grammar, so the fuzzer starts from requests that reach every decoder path.
//! `cargo run --bin seeds -- DIR`.

/// Descriptor indices in the harness's table.
const RW: u8 = 0;
const DIRECT: u8 = 1;
const RDONLY: u8 = 2;
const PIPE_R: u8 = 4;
const SOCKET: u8 = 6;
const EVENTFD: u8 = 7;
const CLOSED: u8 = 10;

#[derive(Default)]
struct Seed(Vec<u8>);

impl Seed {
    fn new() -> Seed {
        Seed(vec![5]) // a context of 32 events
    }
    fn push(&mut self, bytes: &[u8]) -> &mut Seed {
        self.0.extend_from_slice(bytes);
        self
    }
    /// An iocb: opcode, fd, an arena buffer of `blocks` × 512 at 512 × `offset_blocks`, the
    /// flags selector and reserved2 selector, data.
    fn iocb(
        &mut self,
        opcode: u8,
        fd: u8,
        blocks: u8,
        offset: u8,
        flags: u8,
        data: u8,
    ) -> &mut Seed {
        self.push(&[opcode, fd]);
        if matches!(opcode, 7 | 8) {
            self.push(&[4, 3]); // the slot's iovecs, three of them
        } else {
            self.push(&[4, 0, 0, blocks]);
        }
        if opcode == 5 {
            self.push(&[0, 1, 0, 1]); // POLLIN
        }
        self.push(&[2, offset, flags, 2, 1]);
        self.push(&[data, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    }
    fn submit(&mut self, iocbs: &[[u8; 6]]) -> &mut Seed {
        self.push(&[0, iocbs.len() as u8]);
        for &[opcode, fd, blocks, offset, flags, data] in iocbs {
            self.push(&[0]);
            self.iocb(opcode, fd, blocks, offset, flags, data);
        }
        self.push(&[0, 0])
    }
    fn get_events(&mut self, min: u8, nr: u8) -> &mut Seed {
        self.push(&[4, min, 1, nr, 0, 1])
    }
    fn cancel(&mut self, slot: u8) -> &mut Seed {
        self.push(&[6, 2, slot])
    }
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "seeds".into());
    std::fs::create_dir_all(&dir).unwrap();
    let seeds: Vec<(&str, Seed)> = vec![
        ("read", {
            let mut s = Seed::new();
            s.submit(&[[0, RW, 8, 0, 4, 1]]).get_events(1, 1);
            s
        }),
        ("direct-read-write", {
            let mut s = Seed::new();
            s.submit(&[[0, DIRECT, 8, 8, 4, 1], [1, DIRECT, 8, 16, 4, 2]])
                .get_events(2, 4);
            s
        }),
        ("fsync-fdsync-noop", {
            let mut s = Seed::new();
            s.push(&[0, 3]);
            for (opcode, data) in [(2, 1), (3, 2), (6, 3)] {
                s.push(&[0, opcode, RW, 0, 0]).push(&[2, 0, 4, 2, 1]);
                s.push(&[data, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            }
            s.push(&[0, 0]).get_events(3, 3);
            s
        }),
        ("vectored", {
            let mut s = Seed::new();
            s.submit(&[[7, RW, 0, 0, 4, 1], [8, RW, 0, 32, 4, 2]])
                .get_events(2, 2);
            s
        }),
        ("poll-cancel", {
            let mut s = Seed::new();
            s.submit(&[[5, PIPE_R, 0, 0, 4, 1]])
                .cancel(0)
                .get_events(1, 1);
            s
        }),
        ("pipe-socket-read", {
            let mut s = Seed::new();
            s.submit(&[[0, PIPE_R, 1, 0, 4, 1], [0, SOCKET, 1, 0, 4, 2]])
                .get_events(0, 2);
            s
        }),
        ("resfd", {
            let mut s = Seed::new();
            s.submit(&[[0, RW, 1, 0, 0, 1]]).get_events(1, 1);
            s
        }),
        ("bad-fds", {
            let mut s = Seed::new();
            s.submit(&[[0, CLOSED, 1, 0, 4, 1]])
                .submit(&[[1, RDONLY, 1, 0, 4, 2]])
                .submit(&[[0, EVENTFD, 1, 0, 1, 3]]);
            s
        }),
        ("bad-pointers", {
            let mut s = Seed::new();
            // A NULL iocb, an unreadable array, an unmapped buffer.
            s.push(&[0, 1, 241, 0, 0]);
            s.push(&[0, 1, 0])
                .push(&[0, RW, 1, 1])
                .push(&[2, 0, 4, 2, 1]);
            s.push(&[0; 14]).push(&[251, 0]);
            s.push(&[0, 1, 0])
                .push(&[0, RW, 1, 1])
                .push(&[2, 0, 4, 2, 1]);
            s.push(&[0; 14]).push(&[0, 0]).get_events(1, 1);
            s
        }),
        ("bad-handles", {
            let mut s = Seed::new();
            s.push(&[7, 0, 1, 2, 3, 4, 5, 6, 7, 8, 7, 1, 7, 2, 7, 3]);
            s
        }),
        ("unknown-opcode-reserved2", {
            let mut s = Seed::new();
            s.submit(&[[9, RW, 1, 0, 4, 1]]);
            s.push(&[0, 1, 0])
                .push(&[0, RW, 4, 0, 0, 1])
                .push(&[2, 0, 4, 2, 0]);
            s.push(&[1, 0, 0, 0, 0, 0, 0, 0])
                .push(&[0; 14])
                .push(&[0, 0]);
            s
        }),
        ("setup-sizes", Seed(vec![2])),
    ];
    for (name, seed) in seeds {
        std::fs::write(format!("{dir}/{name}"), &seed.0).unwrap();
    }
}
