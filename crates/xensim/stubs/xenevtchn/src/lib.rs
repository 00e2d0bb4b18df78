//! A stand-in for `libxenevtchn.so.1` backed by the simulator
//! (`XENSIM_SOCKET`, as domain `XENSIM_DOMID`). Same functions, signatures
//! and symbol version as Xen's. As with `/dev/xen/evtchn`, the handle's
//! descriptor becomes readable when a port is pending, `pending` returns
//! it (masked), and `unmask` re-enables it.
//!
//! The handle's descriptor (`xenevtchn_fd`) is the handle, as an open
//! `/dev/xen/evtchn` file is: the simulator keeps the handle and its
//! bindings while that socket is open in any process, so a descriptor
//! kept across `exec` (`XENEVTCHN_NO_CLOEXEC`, or close-on-exec cleared)
//! is taken again with `xenevtchn_fdopen`, ports, bindings and queued
//! events included. The socket's abstract name tells the handle.

use std::ffi::{c_int, c_uint, c_void};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use xensim::ffi::{fail, int_result, set_errno};
use xensim::protocol::Op;
use xensim::Client;

std::arch::global_asm!(
    ".symver xensim_xenevtchn_open, xenevtchn_open@@VERS_1.0",
    ".symver xensim_xenevtchn_close, xenevtchn_close@@VERS_1.0",
    ".symver xensim_xenevtchn_fd, xenevtchn_fd@@VERS_1.0",
    ".symver xensim_xenevtchn_bind_unbound_port, xenevtchn_bind_unbound_port@@VERS_1.0",
    ".symver xensim_xenevtchn_bind_interdomain, xenevtchn_bind_interdomain@@VERS_1.0",
    ".symver xensim_xenevtchn_bind_virq, xenevtchn_bind_virq@@VERS_1.0",
    ".symver xensim_xenevtchn_notify, xenevtchn_notify@@VERS_1.0",
    ".symver xensim_xenevtchn_unbind, xenevtchn_unbind@@VERS_1.0",
    ".symver xensim_xenevtchn_unmask, xenevtchn_unmask@@VERS_1.0",
    ".symver xensim_xenevtchn_pending, xenevtchn_pending@@VERS_1.0",
    ".symver xensim_xenevtchn_fdopen, xenevtchn_fdopen@@VERS_1.2",
    ".symver xensim_impl_bind_death_channel, xensim_bind_death_channel@@XENSIM_1.0",
);

/// `XENEVTCHN_NO_CLOEXEC`.
const NO_CLOEXEC: c_uint = 1;

struct Handle {
    client: Client,
    events: UnixStream,
}

/// # Safety
/// `h` is NULL or a live handle from `xenevtchn_open`, used by one thread
/// at a time (the library's contract).
unsafe fn handle<'a>(h: *mut c_void) -> Option<&'a mut Handle> {
    // SAFETY: per the contract.
    unsafe { h.cast::<Handle>().as_mut() }
}

fn call(h: *mut c_void, op: Op, args: &[u64]) -> c_int {
    // SAFETY: callers pass the handle given to them by the C caller.
    match unsafe { handle(h) } {
        Some(h) => int_result(h.client.call_ok(op, args)),
        None => {
            set_errno(libc::EINVAL);
            -1
        }
    }
}

/// `xenevtchn_open`.
#[no_mangle]
pub extern "C" fn xensim_xenevtchn_open(_logger: *mut c_void, flags: c_uint) -> *mut c_void {
    if flags & !NO_CLOEXEC != 0 {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    }
    let opened = Client::from_env().and_then(|mut client| {
        let events = client.open_evtchn()?;
        if flags & NO_CLOEXEC != 0 {
            let fl = rustix::io::fcntl_getfd(&events)?;
            rustix::io::fcntl_setfd(&events, fl - rustix::io::FdFlags::CLOEXEC)?;
        }
        Ok(Handle { client, events })
    });
    match opened {
        Ok(h) => Box::into_raw(Box::new(h)).cast(),
        Err(e) => {
            fail(&e);
            std::ptr::null_mut()
        }
    }
}

/// `xenevtchn_fdopen` (`VERS_1.2`): a handle over `fd`, an event-channel
/// descriptor inherited across exec; the handle owns it from now on.
/// `flags` must be 0 (EINVAL); a descriptor that is not an event channel
/// of this simulator is refused (EBADF; Xen's library does not look).
#[no_mangle]
pub extern "C" fn xensim_xenevtchn_fdopen(
    _logger: *mut c_void,
    fd: c_int,
    flags: c_uint,
) -> *mut c_void {
    if flags != 0 {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    }
    if fd < 0 {
        set_errno(libc::EBADF);
        return std::ptr::null_mut();
    }
    // SAFETY: `fd` is only looked at while the caller keeps it open (the
    // call's contract); ownership is taken below only once it is known
    // to be one of our event connections.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let Ok(dup) = borrowed.try_clone_to_owned() else {
        set_errno(libc::EBADF);
        return std::ptr::null_mut();
    };
    let probe = UnixStream::from(dup);
    let client = match Client::reopen_evtchn(&probe) {
        Ok(c) => c,
        Err(e) => {
            fail(&e);
            return std::ptr::null_mut();
        }
    };
    drop(probe);
    // SAFETY: the caller hands `fd` over to the handle (as Xen's
    // xenevtchn_fdopen takes it: xenevtchn_close closes it); it is open
    // and a Unix socket (checked above).
    let events = unsafe { <UnixStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    Box::into_raw(Box::new(Handle { client, events })).cast()
}

/// `xenevtchn_close`: the simulator unbinds the handle's ports.
///
/// # Safety
/// `h` is NULL or a live handle, closed once.
#[no_mangle]
pub unsafe extern "C" fn xensim_xenevtchn_close(h: *mut c_void) -> c_int {
    if !h.is_null() {
        // SAFETY: per the contract, from Box::into_raw in open.
        drop(unsafe { Box::from_raw(h.cast::<Handle>()) });
    }
    0
}

/// `xenevtchn_fd`: readable when a port is pending.
///
/// # Safety
/// `h` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn xensim_xenevtchn_fd(h: *mut c_void) -> c_int {
    // SAFETY: per the contract.
    match unsafe { handle(h) } {
        Some(h) => h.events.as_raw_fd(),
        None => {
            set_errno(libc::EINVAL);
            -1
        }
    }
}

/// `xenevtchn_bind_unbound_port`.
#[no_mangle]
pub extern "C" fn xensim_xenevtchn_bind_unbound_port(h: *mut c_void, domid: u32) -> c_int {
    call(h, Op::AllocUnbound, &[u64::from(domid)])
}

/// `xenevtchn_bind_interdomain`.
#[no_mangle]
pub extern "C" fn xensim_xenevtchn_bind_interdomain(
    h: *mut c_void,
    domid: u32,
    port: u32,
) -> c_int {
    call(h, Op::BindInterdomain, &[u64::from(domid), u64::from(port)])
}

/// `xenevtchn_bind_virq`.
#[no_mangle]
pub extern "C" fn xensim_xenevtchn_bind_virq(h: *mut c_void, virq: c_uint) -> c_int {
    call(h, Op::BindVirq, &[u64::from(virq)])
}

/// `xenevtchn_notify`.
#[no_mangle]
pub extern "C" fn xensim_xenevtchn_notify(h: *mut c_void, port: u32) -> c_int {
    call(h, Op::Notify, &[u64::from(port)])
}

/// `xenevtchn_unbind`.
#[no_mangle]
pub extern "C" fn xensim_xenevtchn_unbind(h: *mut c_void, port: u32) -> c_int {
    call(h, Op::Unbind, &[u64::from(port)])
}

/// `xenevtchn_unmask`.
#[no_mangle]
pub extern "C" fn xensim_xenevtchn_unmask(h: *mut c_void, port: u32) -> c_int {
    call(h, Op::Unmask, &[u64::from(port)])
}

/// `xenevtchn_pending`: blocks until a port is pending (poll the fd
/// first), returns it masked.
///
/// # Safety
/// `h` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn xensim_xenevtchn_pending(h: *mut c_void) -> c_int {
    // SAFETY: per the contract.
    let Some(h) = (unsafe { handle(h) }) else {
        set_errno(libc::EINVAL);
        return -1;
    };
    let mut b = [0u8; 4];
    match h.events.read_exact(&mut b) {
        Ok(()) => c_int::try_from(u32::from_ne_bytes(b)).unwrap_or(-1),
        Err(e) => fail(&e),
    }
}

/// Simulator only (`XENSIM_1.0`): the per-domain death channel design. A
/// new port of this handle that fires when `domid` shuts down, dies or
/// goes; or -1 with errno.
#[no_mangle]
pub extern "C" fn xensim_impl_bind_death_channel(h: *mut c_void, domid: u32) -> c_int {
    call(h, Op::BindDeathChannel, &[u64::from(domid)])
}
