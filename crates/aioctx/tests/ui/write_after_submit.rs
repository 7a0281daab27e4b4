// A read's buffer moved into the request: writing to it afterwards does not compile.
use std::sync::Arc;

fn main() {
    let file = Arc::new(std::fs::File::open("/dev/zero").unwrap());
    let ctx = aioctx::Context::builder().depth(8).build().unwrap();
    let mut buf = vec![0u8; 16];
    ctx.submit_one(aioctx::Request::read(file, buf, 0)).unwrap();
    buf[0] = 1;
}
