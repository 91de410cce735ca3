//! Compile-pass and compile-fail tests of the macros: every misuse is an error spanned on the
//! user's tokens that says what to write instead.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
