//! Helpers for the stand-in libraries' C ABI.

use std::ffi::c_int;
use std::io;

/// Sets the calling thread's `errno`.
pub fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns a valid pointer to this thread's
    // errno for the thread's lifetime.
    unsafe { *libc::__errno_location() = e };
}

/// Fails a C call: sets `errno` from `e` (EIO if it has none) and returns
/// `-1`.
pub fn fail(e: &io::Error) -> c_int {
    set_errno(e.raw_os_error().unwrap_or(libc::EIO));
    -1
}

/// Runs a simulator call returning a non-negative value, mapping errors to
/// `-1` + `errno` as C callers expect.
pub fn int_result(r: io::Result<i64>) -> c_int {
    match r {
        Ok(v) => {
            c_int::try_from(v).unwrap_or_else(|_| fail(&io::Error::from_raw_os_error(libc::ERANGE)))
        }
        Err(e) => fail(&e),
    }
}
