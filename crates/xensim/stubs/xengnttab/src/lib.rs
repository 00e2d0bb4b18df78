//! A stand-in for `libxengnttab.so.1` backed by the simulator. Mapping a
//! domain's grant entry 1 asks the simulator, which checks the grant and
//! takes a reference on the domain (a mapped dead domain stays a zombie, as
//! on Xen), then maps the domain's page file shared. Same functions,
//! signatures and symbol version as Xen's (the subset xenstored uses).

use std::collections::HashMap;
use std::ffi::{c_int, c_uint, c_void};
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use xensim::ffi::{fail, set_errno};
use xensim::protocol::Op;
use xensim::Client;

std::arch::global_asm!(
    ".symver xensim_xengnttab_open, xengnttab_open@@VERS_1.0",
    ".symver xensim_xengnttab_close, xengnttab_close@@VERS_1.0",
    ".symver xensim_xengnttab_set_max_grants, xengnttab_set_max_grants@@VERS_1.0",
    ".symver xensim_xengnttab_map_grant_ref, xengnttab_map_grant_ref@@VERS_1.0",
    ".symver xensim_xengnttab_unmap, xengnttab_unmap@@VERS_1.0",
);

const PAGE: usize = 4096;

struct Handle {
    client: Client,
    /// Mapped address -> domid.
    maps: HashMap<usize, u32>,
}

/// # Safety
/// `h` is NULL or a live handle, used by one thread at a time.
unsafe fn handle<'a>(h: *mut c_void) -> Option<&'a mut Handle> {
    // SAFETY: per the contract.
    unsafe { h.cast::<Handle>().as_mut() }
}

/// `xengnttab_open`.
#[no_mangle]
pub extern "C" fn xensim_xengnttab_open(_logger: *mut c_void, _flags: c_uint) -> *mut c_void {
    match Client::from_env() {
        Ok(client) => Box::into_raw(Box::new(Handle {
            client,
            maps: HashMap::new(),
        }))
        .cast(),
        Err(e) => {
            fail(&e);
            std::ptr::null_mut()
        }
    }
}

/// `xengnttab_close`: also drops the remaining mappings.
///
/// # Safety
/// `h` is NULL or a live handle, closed once.
#[no_mangle]
pub unsafe extern "C" fn xensim_xengnttab_close(h: *mut c_void) -> c_int {
    if h.is_null() {
        return 0;
    }
    // SAFETY: per the contract, from Box::into_raw in open.
    let mut h = unsafe { Box::from_raw(h.cast::<Handle>()) };
    for (addr, domid) in std::mem::take(&mut h.maps) {
        // SAFETY: `addr` is a live mapping of PAGE bytes made by map.
        unsafe { libc::munmap(addr as *mut c_void, PAGE) };
        let _ = h.client.call(Op::GrantUnmap, &[u64::from(domid)]);
    }
    0
}

/// `xengnttab_set_max_grants`: nothing to limit here.
#[no_mangle]
pub extern "C" fn xensim_xengnttab_set_max_grants(_h: *mut c_void, _n: u32) -> c_int {
    0
}

/// `xengnttab_map_grant_ref`.
///
/// # Safety
/// `h` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn xensim_xengnttab_map_grant_ref(
    h: *mut c_void,
    domid: u32,
    gref: u32,
    prot: c_int,
) -> *mut c_void {
    // SAFETY: per the contract.
    let Some(h) = (unsafe { handle(h) }) else {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    };
    let path = match h
        .client
        .call(Op::GrantMap, &[u64::from(domid), u64::from(gref)])
    {
        Ok(r) if r.status >= 0 => r.text,
        Ok(r) => {
            set_errno(i32::try_from(-r.status).unwrap_or(libc::EINVAL));
            return std::ptr::null_mut();
        }
        Err(e) => {
            fail(&e);
            return std::ptr::null_mut();
        }
    };
    let undo = |h: &mut Handle| {
        let _ = h.client.call(Op::GrantUnmap, &[u64::from(domid)]);
    };
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) => {
            undo(h);
            fail(&e);
            return std::ptr::null_mut();
        }
    };
    // SAFETY: one page of an open file, shared, with the caller's
    // protection; the mapping outlives the descriptor as mmap allows.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            prot,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        let e = std::io::Error::last_os_error();
        undo(h);
        fail(&e);
        return std::ptr::null_mut();
    }
    h.maps.insert(p as usize, domid);
    p
}

/// `xengnttab_unmap`.
///
/// # Safety
/// `h` is a live handle; `addr` and `count` are those of one mapping.
#[no_mangle]
pub unsafe extern "C" fn xensim_xengnttab_unmap(
    h: *mut c_void,
    addr: *mut c_void,
    count: u32,
) -> c_int {
    // SAFETY: per the contract.
    let Some(h) = (unsafe { handle(h) }) else {
        set_errno(libc::EINVAL);
        return -1;
    };
    if count != 1 {
        set_errno(libc::EINVAL);
        return -1;
    }
    let Some(domid) = h.maps.remove(&(addr as usize)) else {
        set_errno(libc::EINVAL);
        return -1;
    };
    // SAFETY: `addr` is a live mapping of PAGE bytes made by map.
    unsafe { libc::munmap(addr, PAGE) };
    match h.client.call(Op::GrantUnmap, &[u64::from(domid)]) {
        Ok(_) => 0,
        Err(e) => fail(&e),
    }
}
