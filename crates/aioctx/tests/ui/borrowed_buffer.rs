// A buffer borrowed from the stack could be freed while the engine writes it: refused.
use std::sync::Arc;

fn main() {
    let file = Arc::new(std::fs::File::open("/dev/zero").unwrap());
    let mut local = [0u8; 16];
    let _read = aioctx::Request::read(file, &mut local[..], 0);
}
