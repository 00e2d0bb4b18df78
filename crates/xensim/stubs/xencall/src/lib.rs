//! A stand-in for `libxencall.so.1` backed by the simulator: the
//! hypercalls xenstored makes before Xen 4.21 (`XENVER_version`,
//! `XEN_SYSCTL_getdomaininfolist`), with Xen's buffer rules (arguments only
//! in buffers from `xencall_alloc_buffer`, else EFAULT). Same functions,
//! signatures and symbol version (`VERS_1.0`) as Xen's.

use std::alloc::Layout;
use std::ffi::{c_int, c_uint, c_void};
use xensim::ffi::{fail, set_errno};
use xensim::protocol::Op;
use xensim::Client;

std::arch::global_asm!(
    ".symver xensim_xencall_open, xencall_open@@VERS_1.0",
    ".symver xensim_xencall_close, xencall_close@@VERS_1.0",
    ".symver xensim_xencall0, xencall0@@VERS_1.0",
    ".symver xensim_xencall1, xencall1@@VERS_1.0",
    ".symver xensim_xencall2, xencall2@@VERS_1.0",
    ".symver xensim_xencall3, xencall3@@VERS_1.0",
    ".symver xensim_xencall4, xencall4@@VERS_1.0",
    ".symver xensim_xencall5, xencall5@@VERS_1.0",
    ".symver xensim_xencall_alloc_buffer, xencall_alloc_buffer@@VERS_1.0",
    ".symver xensim_xencall_free_buffer, xencall_free_buffer@@VERS_1.0",
    ".symver xensim_xencall_alloc_buffer_pages, xencall_alloc_buffer_pages@@VERS_1.0",
    ".symver xensim_xencall_free_buffer_pages, xencall_free_buffer_pages@@VERS_1.0",
);

const PAGE: usize = 4096;
const HYPERVISOR_XEN_VERSION: c_uint = 17;
const HYPERVISOR_SYSCTL: c_uint = 35;
const XENVER_VERSION: u64 = 0;
const XEN_SYSCTL_GETDOMAININFOLIST: u32 = 6;
/// `struct xen_sysctl`: cmd, interface_version, then a 128-byte union.
const SYSCTL_SIZE: usize = 136;

struct Handle {
    client: Client,
    /// Hypercall buffers: start address -> size (page multiples).
    buffers: std::collections::BTreeMap<usize, usize>,
}

impl Handle {
    /// The buffer range `[addr, addr + len)` if it lies inside one of our
    /// buffers (what Xen's copy from guest memory would find mapped).
    fn region(&self, addr: u64, len: usize) -> Option<*mut u8> {
        let addr = usize::try_from(addr).ok()?;
        let (&start, &size) = self.buffers.range(..=addr).next_back()?;
        let end = addr.checked_add(len)?;
        (end <= start + size).then_some(addr as *mut u8)
    }
}

/// # Safety
/// `h` is NULL or a live handle, used by one thread at a time.
unsafe fn handle<'a>(h: *mut c_void) -> Option<&'a mut Handle> {
    // SAFETY: per the contract.
    unsafe { h.cast::<Handle>().as_mut() }
}

/// `xencall_open`.
#[no_mangle]
pub extern "C" fn xensim_xencall_open(_logger: *mut c_void, _flags: c_uint) -> *mut c_void {
    match Client::from_env() {
        Ok(client) => Box::into_raw(Box::new(Handle {
            client,
            buffers: Default::default(),
        }))
        .cast(),
        Err(e) => {
            fail(&e);
            std::ptr::null_mut()
        }
    }
}

/// `xencall_close`: frees the remaining buffers.
///
/// # Safety
/// `h` is NULL or a live handle, closed once.
#[no_mangle]
pub unsafe extern "C" fn xensim_xencall_close(h: *mut c_void) -> c_int {
    if h.is_null() {
        return 0;
    }
    // SAFETY: per the contract, `h` came from Box::into_raw in open.
    let hd = unsafe { Box::from_raw(h.cast::<Handle>()) };
    for (&p, &size) in &hd.buffers {
        if let Ok(l) = Layout::from_size_align(size, PAGE) {
            // SAFETY: allocated in alloc_pages with this layout, freed once.
            unsafe { std::alloc::dealloc(p as *mut u8, l) };
        }
    }
    0
}

/// # Safety
/// `h` is a live handle or NULL.
unsafe fn alloc_pages(h: *mut c_void, pages: usize) -> *mut c_void {
    // SAFETY: per the contract.
    let Some(hd) = (unsafe { handle(h) }) else {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    };
    let Some(l) = pages
        .checked_mul(PAGE)
        .filter(|&s| s > 0)
        .and_then(|s| Layout::from_size_align(s, PAGE).ok())
    else {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    };
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { std::alloc::alloc_zeroed(l) };
    if p.is_null() {
        set_errno(libc::ENOMEM);
        return std::ptr::null_mut();
    }
    hd.buffers.insert(p as usize, l.size());
    p.cast()
}

/// # Safety
/// `h` is a live handle or NULL; `p` NULL or one of its buffers.
unsafe fn free_pages(h: *mut c_void, p: *mut c_void) {
    // SAFETY: per the contract.
    let Some(hd) = (unsafe { handle(h) }) else {
        return;
    };
    if let Some(size) = hd.buffers.remove(&(p as usize)) {
        if let Ok(l) = Layout::from_size_align(size, PAGE) {
            // SAFETY: allocated in alloc_pages with this layout; removed
            // from the table, so freed once.
            unsafe { std::alloc::dealloc(p.cast(), l) };
        }
    }
}

/// `xencall_alloc_buffer`: zeroed, page-aligned memory.
///
/// # Safety
/// `h` is a live handle or NULL.
#[no_mangle]
pub unsafe extern "C" fn xensim_xencall_alloc_buffer(h: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: per the contract.
    unsafe { alloc_pages(h, size.div_ceil(PAGE).max(1)) }
}

/// `xencall_free_buffer`.
///
/// # Safety
/// `h` is a live handle or NULL; `p` NULL or a buffer of `h`.
#[no_mangle]
pub unsafe extern "C" fn xensim_xencall_free_buffer(h: *mut c_void, p: *mut c_void) {
    // SAFETY: per the contract.
    unsafe { free_pages(h, p) }
}

/// `xencall_alloc_buffer_pages`.
///
/// # Safety
/// `h` is a live handle or NULL.
#[no_mangle]
pub unsafe extern "C" fn xensim_xencall_alloc_buffer_pages(
    h: *mut c_void,
    nr_pages: usize,
) -> *mut c_void {
    // SAFETY: per the contract.
    unsafe { alloc_pages(h, nr_pages) }
}

/// `xencall_free_buffer_pages`.
///
/// # Safety
/// `h` is a live handle or NULL; `p` NULL or a buffer of `h`.
#[no_mangle]
pub unsafe extern "C" fn xensim_xencall_free_buffer_pages(
    h: *mut c_void,
    p: *mut c_void,
    _nr_pages: usize,
) {
    // SAFETY: per the contract.
    unsafe { free_pages(h, p) }
}

fn read_u32(p: *const u8, off: usize) -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: callers pass a region checked by `Handle::region` for at
    // least `off + 4` bytes.
    unsafe { std::ptr::copy_nonoverlapping(p.add(off), b.as_mut_ptr(), 4) };
    u32::from_ne_bytes(b)
}

/// `XEN_SYSCTL_getdomaininfolist` on the `struct xen_sysctl` at `arg`.
fn sysctl(hd: &mut Handle, arg: u64) -> Result<c_int, c_int> {
    let op = hd.region(arg, SYSCTL_SIZE).ok_or(libc::EFAULT)?;
    let (cmd, version) = (read_u32(op, 0), read_u32(op, 4));
    if cmd != XEN_SYSCTL_GETDOMAININFOLIST {
        return Err(libc::ENOSYS);
    }
    let first = u64::from(read_u32(op, 8) & 0xffff);
    let max = u64::from(read_u32(op, 12));
    let buffer = u64::from(read_u32(op, 16)) | (u64::from(read_u32(op, 20)) << 32);
    let r = hd
        .client
        .call(Op::DomainList, &[u64::from(version), first, max])
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    if r.status < 0 {
        return Err(i32::try_from(-r.status).unwrap_or(libc::EINVAL));
    }
    let records = std::fs::read(&r.text).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    let n = u32::try_from(r.status).map_err(|_| libc::EINVAL)?;
    if !records.is_empty() {
        let dst = hd.region(buffer, records.len()).ok_or(libc::EFAULT)?;
        // SAFETY: `dst` is inside one of our buffers for records.len()
        // bytes (checked by `region`); the source is a separate Vec.
        unsafe { std::ptr::copy_nonoverlapping(records.as_ptr(), dst, records.len()) };
    }
    // num_domains (OUT), at offset 24.
    // SAFETY: inside the checked 136-byte region of `op`.
    unsafe { std::ptr::copy_nonoverlapping(n.to_ne_bytes().as_ptr(), op.add(24), 4) };
    Ok(0)
}

/// # Safety
/// `h` is a live handle or NULL.
unsafe fn hypercall(h: *mut c_void, op: c_uint, args: [u64; 5]) -> c_int {
    // SAFETY: per the contract.
    let Some(hd) = (unsafe { handle(h) }) else {
        set_errno(libc::EINVAL);
        return -1;
    };
    let r = match op {
        HYPERVISOR_XEN_VERSION if args[0] == XENVER_VERSION => hd
            .client
            .call_ok(Op::XenVersion, &[])
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
            .and_then(|v| c_int::try_from(v).map_err(|_| libc::ERANGE)),
        HYPERVISOR_SYSCTL => sysctl(hd, args[0]),
        _ => Err(libc::ENOSYS),
    };
    match r {
        Ok(v) => v,
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

/// `xencall0`.
///
/// # Safety
/// `h` is a live handle or NULL.
#[no_mangle]
pub unsafe extern "C" fn xensim_xencall0(h: *mut c_void, op: c_uint) -> c_int {
    // SAFETY: per the contract.
    unsafe { hypercall(h, op, [0; 5]) }
}

/// `xencall1`.
///
/// # Safety
/// `h` is a live handle or NULL.
#[no_mangle]
pub unsafe extern "C" fn xensim_xencall1(h: *mut c_void, op: c_uint, a1: u64) -> c_int {
    // SAFETY: per the contract.
    unsafe { hypercall(h, op, [a1, 0, 0, 0, 0]) }
}

/// `xencall2`.
///
/// # Safety
/// `h` is a live handle or NULL.
#[no_mangle]
pub unsafe extern "C" fn xensim_xencall2(h: *mut c_void, op: c_uint, a1: u64, a2: u64) -> c_int {
    // SAFETY: per the contract.
    unsafe { hypercall(h, op, [a1, a2, 0, 0, 0]) }
}

/// `xencall3`.
///
/// # Safety
/// `h` is a live handle or NULL.
#[no_mangle]
pub unsafe extern "C" fn xensim_xencall3(
    h: *mut c_void,
    op: c_uint,
    a1: u64,
    a2: u64,
    a3: u64,
) -> c_int {
    // SAFETY: per the contract.
    unsafe { hypercall(h, op, [a1, a2, a3, 0, 0]) }
}

/// `xencall4`.
///
/// # Safety
/// `h` is a live handle or NULL.
#[no_mangle]
pub unsafe extern "C" fn xensim_xencall4(
    h: *mut c_void,
    op: c_uint,
    a1: u64,
    a2: u64,
    a3: u64,
    a4: u64,
) -> c_int {
    // SAFETY: per the contract.
    unsafe { hypercall(h, op, [a1, a2, a3, a4, 0]) }
}

/// `xencall5`.
///
/// # Safety
/// `h` is a live handle or NULL.
#[no_mangle]
pub unsafe extern "C" fn xensim_xencall5(
    h: *mut c_void,
    op: c_uint,
    a1: u64,
    a2: u64,
    a3: u64,
    a4: u64,
    a5: u64,
) -> c_int {
    // SAFETY: per the contract.
    unsafe { hypercall(h, op, [a1, a2, a3, a4, a5]) }
}
