//! The greyspf binary: sets the process up, hands argv to the library and turns the outcome
//! into an exit code.
//!
//! It starts without the standard library's runtime set-up (`no_main`), which finds the
//! main thread's stack by reading /proc/self/maps for a stack-overflow message on stderr
//! (the smtpd socket under spawn(8), silenced anyway): some 80,000 instructions and 15
//! system calls before a spawned instance's first reply (callgrind, strace). What greyspf
//! needs of that set-up, `app::setup_process` does. A stack overflow still ends the
//! process (SIGSEGV), without the message.

// Only for the program itself: the unit-test build of this file needs the test
// harness's own main.
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    greyspf::app::setup_process();
    // argv comes from the standard library, which glibc hands it to at start-up. A panic
    // that escapes (the hook has logged it) exits 101, as under the standard set-up,
    // rather than unwinding into C.
    let code = std::panic::catch_unwind(|| greyspf::app::main(std::env::args_os()));
    std::process::exit(code.unwrap_or(101))
}
