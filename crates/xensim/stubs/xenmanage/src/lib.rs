//! A stand-in for `libxenmanage.so.1` that asks the simulator
//! (`XENSIM_SOCKET`, as domain `XENSIM_DOMID`) instead of the hypervisor.
//! Same functions, signatures and symbol version (`VERS_1.0`) as Xen's.

use std::ffi::{c_int, c_uint, c_void};

// Bind the public names to the stable interface's symbol version; the
// implementations carry internal names (rustc's own export list would
// otherwise put the public names in the base version).
std::arch::global_asm!(
    ".symver xensim_xenmanage_open, xenmanage_open@@VERS_1.0",
    ".symver xensim_xenmanage_close, xenmanage_close@@VERS_1.0",
    ".symver xensim_xenmanage_get_domain_info, xenmanage_get_domain_info@@VERS_1.0",
    ".symver xensim_xenmanage_poll_changed_domain, xenmanage_poll_changed_domain@@VERS_1.0",
    ".symver xensim_impl_getinfo_single, xensim_getinfo_single@@XENSIM_1.0",
    ".symver xensim_impl_dying_bitmap, xensim_dying_bitmap@@XENSIM_1.0",
    ".symver xensim_impl_map_dying_bitmap, xensim_map_dying_bitmap@@XENSIM_1.0",
);
use xensim::protocol::Op;
use xensim::Client;

use xensim::ffi::set_errno;

/// `xenmanage_open`: a handle, or NULL with errno.
#[no_mangle]
pub extern "C" fn xensim_xenmanage_open(_logger: *mut c_void, flags: c_uint) -> *mut c_void {
    if flags != 0 {
        set_errno(22);
        return std::ptr::null_mut();
    }
    match Client::from_env() {
        Ok(c) => Box::into_raw(Box::new(c)).cast(),
        Err(e) => {
            set_errno(e.raw_os_error().unwrap_or(2));
            std::ptr::null_mut()
        }
    }
}

/// `xenmanage_close`.
///
/// # Safety
/// `h` is NULL or a handle from `xenmanage_open`, closed once.
#[no_mangle]
pub unsafe extern "C" fn xensim_xenmanage_close(h: *mut c_void) -> c_int {
    if !h.is_null() {
        // SAFETY: per the contract, `h` came from Box::into_raw above.
        drop(unsafe { Box::from_raw(h.cast::<Client>()) });
    }
    0
}

/// Stores the reply's values in the out-pointers that are not NULL.
///
/// # Safety
/// Each pointer is NULL or valid for a write.
unsafe fn store(v: [u64; 3], state: *mut c_uint, caps: *mut c_uint, uid: *mut u64) {
    // SAFETY: per the contract.
    unsafe {
        if !state.is_null() {
            *state = v[0] as c_uint;
        }
        if !caps.is_null() {
            *caps = v[1] as c_uint;
        }
        if !uid.is_null() {
            *uid = v[2];
        }
    }
}

/// One simulator call: the reply when it succeeded; otherwise errno is
/// set (from the reply, or EIO for a broken connection) and `None`.
fn ok_reply(c: &mut Client, op: Op, args: &[u64]) -> Option<xensim::protocol::Reply> {
    match c.call(op, args) {
        Ok(r) if r.status >= 0 => Some(r),
        Ok(r) => {
            set_errno(i32::try_from(-r.status).unwrap_or(22));
            None
        }
        Err(e) => {
            set_errno(e.raw_os_error().unwrap_or(5));
            None
        }
    }
}

/// # Safety
/// `h` is a live handle or NULL.
unsafe fn client<'a>(h: *mut c_void) -> Option<&'a mut Client> {
    // SAFETY: per the contract; the C API gives one thread at a time the
    // handle.
    unsafe { h.cast::<Client>().as_mut() }
}

/// `xenmanage_get_domain_info`.
///
/// # Safety
/// `h` is a live handle; out-pointers are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn xensim_xenmanage_get_domain_info(
    h: *mut c_void,
    domid: c_uint,
    state: *mut c_uint,
    caps: *mut c_uint,
    uid: *mut u64,
) -> c_int {
    // SAFETY: per the contract.
    let Some(c) = (unsafe { client(h) }) else {
        set_errno(22);
        return -1;
    };
    if domid >= 0x7FF0 {
        set_errno(22);
        return -1;
    }
    let Some(r) = ok_reply(c, Op::DomainInfo, &[u64::from(domid)]) else {
        return -1;
    };
    // SAFETY: per the contract.
    unsafe { store(r.vals, state, caps, uid) };
    0
}

/// `xenmanage_poll_changed_domain`: 0 and one domain, or -1 with ENOENT
/// when nothing changed.
///
/// # Safety
/// `h` is a live handle; `domid` is writable; the others NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn xensim_xenmanage_poll_changed_domain(
    h: *mut c_void,
    domid: *mut c_uint,
    state: *mut c_uint,
    caps: *mut c_uint,
    uid: *mut u64,
) -> c_int {
    // SAFETY: per the contract.
    let Some(c) = (unsafe { client(h) }) else {
        set_errno(22);
        return -1;
    };
    if domid.is_null() {
        set_errno(22);
        return -1;
    }
    let Some(r) = ok_reply(c, Op::PollChangedDomain, &[]) else {
        return -1;
    };
    // SAFETY: per the contract.
    unsafe {
        *domid = r.status as c_uint;
        store(r.vals, state, caps, uid);
    }
    0
}

/// Simulator only, not part of Xen's interface (version `XENSIM_1.0`): the
/// legacy per-domain query oxenstored scans with (`xc_domain_getinfo`),
/// offered so the daemon's legacy strategy can be measured against the
/// changed-domain feed. 0 and the flags, or -1 with errno (ESRCH: no such
/// domain).
///
/// # Safety
/// `h` is a live handle; the out-pointers are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn xensim_impl_getinfo_single(
    h: *mut c_void,
    domid: c_uint,
    dying: *mut c_uint,
    shutdown: *mut c_uint,
    reason: *mut c_uint,
) -> c_int {
    // SAFETY: per the contract.
    let Some(c) = (unsafe { client(h) }) else {
        set_errno(22);
        return -1;
    };
    match c.call(Op::GetinfoSingle, &[u64::from(domid)]) {
        Ok(r) if r.status >= 0 => {
            // SAFETY: per the contract; reuses the three-slot store.
            unsafe {
                if !dying.is_null() {
                    *dying = r.vals[0] as c_uint;
                }
                if !shutdown.is_null() {
                    *shutdown = r.vals[1] as c_uint;
                }
                if !reason.is_null() {
                    *reason = r.vals[2] as c_uint;
                }
            }
            0
        }
        Ok(r) => {
            set_errno((-r.status) as c_int);
            -1
        }
        Err(e) => {
            set_errno(e.raw_os_error().unwrap_or(5));
            -1
        }
    }
}

/// Simulator only (`XENSIM_1.0`): the proposed one-call design. Fills
/// `bits` (512 words, 4 KiB) with a bit per shutdown|dying domain.
///
/// # Safety
/// `h` is a live handle; `bits` is writable for 512 `u64`.
#[no_mangle]
pub unsafe extern "C" fn xensim_impl_dying_bitmap(h: *mut c_void, bits: *mut u64) -> c_int {
    // SAFETY: per the contract.
    let Some(c) = (unsafe { client(h) }) else {
        set_errno(22);
        return -1;
    };
    if bits.is_null() {
        set_errno(22);
        return -1;
    }
    let path = match c.call(Op::DyingBitmap, &[]) {
        Ok(r) if r.status >= 0 => r.text,
        Ok(r) => {
            set_errno((-r.status) as c_int);
            return -1;
        }
        Err(e) => {
            set_errno(e.raw_os_error().unwrap_or(5));
            return -1;
        }
    };
    match std::fs::read(&path) {
        Ok(b) if b.len() >= 4096 => {
            for i in 0..512 {
                let mut w = [0u8; 8];
                w.copy_from_slice(&b[i * 8..i * 8 + 8]);
                // SAFETY: `bits` is writable for 512 words (contract).
                unsafe { *bits.add(i) = u64::from_ne_bytes(w) };
            }
            0
        }
        Ok(_) => {
            set_errno(5);
            -1
        }
        Err(e) => {
            set_errno(e.raw_os_error().unwrap_or(5));
            -1
        }
    }
}

/// Simulator only (`XENSIM_1.0`): the mapped-page design. Returns a
/// read-only mapping of 512 words the simulator keeps up to date, or NULL.
///
/// # Safety
/// `h` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn xensim_impl_map_dying_bitmap(h: *mut c_void) -> *const u64 {
    // SAFETY: per the contract.
    let Some(c) = (unsafe { client(h) }) else {
        set_errno(22);
        return std::ptr::null();
    };
    let path = match c.call(Op::MapDyingBitmap, &[]) {
        Ok(r) if r.status >= 0 => r.text,
        _ => {
            set_errno(5);
            return std::ptr::null();
        }
    };
    let Ok(f) = std::fs::File::open(&path) else {
        set_errno(2);
        return std::ptr::null();
    };
    use std::os::fd::AsRawFd;
    // SAFETY: one page of an open file, shared, read-only; it lives until
    // the process ends (the daemon keeps it for its lifetime).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return std::ptr::null();
    }
    p.cast()
}
