// A shared 'static slice may be sent by a write, never filled by a read.
use std::sync::Arc;

static BYTES: &[u8] = b"read only";

fn main() {
    let file = Arc::new(std::fs::File::open("/dev/zero").unwrap());
    let _read = aioctx::Request::read(file, BYTES, 0);
}
