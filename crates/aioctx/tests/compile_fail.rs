//! Safe code cannot touch a buffer while a request owns it: each program in `tests/ui`
//! tries, and must fail to compile with the error recorded beside it.

#[test]
fn a_buffer_a_request_owns_cannot_be_touched() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
