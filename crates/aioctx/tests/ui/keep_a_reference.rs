// A reference into the buffer cannot outlive the move into the request.
use std::sync::Arc;

fn main() {
    let file = Arc::new(std::fs::File::open("/dev/zero").unwrap());
    let mut buf = vec![0u8; 16];
    let first = &mut buf[0];
    let _read = aioctx::Request::read(file, buf, 0);
    *first = 1;
}
