//! Domain state before Xen 4.21: `XEN_SYSCTL_getdomaininfolist`, issued
//! through the stable `libxencall.so.1`.
//!
//! Xen 4.17 to 4.20 offer no stable call that says whether a domain exists
//! or which one died. The one unstable interface this crate touches is the
//! list of domain records Xen returns from the sysctl above, and it touches
//! it safely:
//!
//! * the library that issues the hypercall is the stable one
//!   (`libxencall.so.1`, `VERS_1.0`: `xencall_open`, `xencall1`,
//!   `xencall2`, `xencall_alloc_buffer`, `xencall_free_buffer`), loaded at
//!   run time, never linked;
//! * the layout is taken from a table keyed on the running hypervisor's
//!   version (`XENVER_version`, itself a stable hypercall); a version
//!   outside the table is refused with [`XenError::UnknownHypervisor`]
//!   before any record is read;
//! * the request carries that release's `XEN_SYSCTL_INTERFACE_VERSION`, and
//!   Xen refuses a mismatch with EACCES, so a wrong table entry shows as an
//!   error, never as misread records; every record is also checked (domids
//!   ascending, in range).
//!
//! Why libxencall and not libxenctrl's `xc_domain_getinfolist`: libxenctrl's
//! soname and symbol versions change with every Xen release
//! (`libxenctrl.so.4.17`, `libxenctrl_4.18.0`, ...) and its record is the
//! very same `struct xen_domctl_getdomaininfo`, so it would add a
//! per-release library search without removing any layout knowledge.
//!
//! The record (`struct xen_domctl_getdomaininfo`, x86_64, Xen 4.17 to
//! 4.22): 112 bytes; `domain` u16 at 0, `flags` u32 at 4 (bit 0 dying,
//! bit 2 shutdown, bit 7 xenstore domain, shutdown code in bits 16-23),
//! `handle` (the toolstack's 16-byte UUID) at 76.

use crate::dl::Library;
use crate::{caps, state, DomainInfo, XenError};
use std::ffi::{c_int, c_uint, c_void};
use std::io;
use std::path::Path;
use std::ptr::NonNull;

/// `__HYPERVISOR_xen_version`.
pub const HYPERVISOR_XEN_VERSION: c_uint = 17;
/// `__HYPERVISOR_sysctl`.
pub const HYPERVISOR_SYSCTL: c_uint = 35;
/// `XENVER_version`.
pub const XENVER_VERSION: u64 = 0;
/// `XEN_SYSCTL_getdomaininfolist`.
pub const XEN_SYSCTL_GETDOMAININFOLIST: u32 = 6;
/// Size of `struct xen_sysctl` (cmd, interface_version, 128-byte union).
pub const SYSCTL_SIZE: usize = 136;
/// Domids at and above this are reserved (`DOMID_FIRST_RESERVED`).
pub const DOMID_FIRST_RESERVED: u32 = 0x7FF0;

/// Records fetched per call: 512 x 112 bytes = 56 KiB of buffer.
pub const RECORDS_PER_CALL: u32 = 512;

/// Where the fields xenstored needs sit in one release's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// `XEN_SYSCTL_INTERFACE_VERSION` of the release.
    pub sysctl_version: u32,
    /// `sizeof(struct xen_domctl_getdomaininfo)`.
    pub record_size: usize,
    /// Offset of `domain` (u16).
    pub domain: usize,
    /// Offset of `flags` (u32).
    pub flags: usize,
    /// Offset of `handle` (16 bytes).
    pub handle: usize,
}

const LAYOUT_4_17: Layout = Layout {
    sysctl_version: 0x15,
    record_size: 112,
    domain: 0,
    flags: 4,
    handle: 76,
};

const LAYOUT_4_21: Layout = Layout {
    sysctl_version: 0x16,
    ..LAYOUT_4_17
};

/// Xen releases `first..=last` (as `(major, minor)`) sharing one layout.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    /// The first release.
    pub first: (u32, u32),
    /// The last release.
    pub last: (u32, u32),
    /// Their layout.
    pub layout: Layout,
}

/// The releases whose layout is known: checked against each release's
/// `xen/include/public/{sysctl,domctl}.h`.
pub const KNOWN: &[Known] = &[
    Known {
        first: (4, 17),
        last: (4, 20),
        layout: LAYOUT_4_17,
    },
    Known {
        first: (4, 21),
        last: (4, 22),
        layout: LAYOUT_4_21,
    },
];

/// The layout for Xen `major.minor` on this architecture, if known.
pub fn layout_for(major: u32, minor: u32) -> Option<Layout> {
    if !cfg!(target_arch = "x86_64") {
        // arm's `xen_arch_domainconfig` makes the record longer.
        return None;
    }
    KNOWN
        .iter()
        .find(|k| (major, minor) >= k.first && (major, minor) <= k.last)
        .map(|k| k.layout)
}

/// The known releases, for messages ("4.17 to 4.22").
pub fn known_range() -> String {
    match (KNOWN.first(), KNOWN.last()) {
        (Some(lo), Some(hi)) => format!(
            "{}.{} to {}.{}",
            lo.first.0, lo.first.1, hi.last.0, hi.last.1
        ),
        _ => "none".into(),
    }
}

/// `XEN_DOMINF_*` flags.
pub mod flags {
    /// Destruction started (dying or dead).
    pub const DYING: u32 = 1 << 0;
    /// Shut down.
    pub const SHUTDOWN: u32 = 1 << 2;
    /// A xenstore domain.
    pub const XS_DOMAIN: u32 = 1 << 7;
    /// Shutdown code: bits 16-23.
    pub const SHUTDOWN_SHIFT: u32 = 16;
}

/// One domain as the list reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedDomain {
    /// Its domid.
    pub domid: u32,
    /// `XEN_DOMINF_*`.
    pub flags: u32,
    /// The toolstack's UUID for it (all zeros for dom0).
    pub handle: [u8; 16],
}

impl ListedDomain {
    /// Destruction started (the list cannot tell dying from dead).
    pub fn dying(&self) -> bool {
        self.flags & flags::DYING != 0
    }

    /// Shut down.
    pub fn shutdown(&self) -> bool {
        self.flags & flags::SHUTDOWN != 0
    }

    /// The shutdown code (0 poweroff, 1 reboot, 2 suspend, 3 crash, ...).
    pub fn shutdown_reason(&self) -> u32 {
        (self.flags >> flags::SHUTDOWN_SHIFT) & 0xff
    }

    /// An identity for domid-reuse detection, from the handle (the list
    /// carries no `unique_id`): 0 when the handle is all zeros (unknown).
    pub fn identity(&self) -> u64 {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&self.handle[..8]);
        b.copy_from_slice(&self.handle[8..]);
        u64::from_le_bytes(a) ^ u64::from_le_bytes(b).rotate_left(29)
    }

    /// The same facts as libxenmanage's [`DomainInfo`] (DYING stands for
    /// dying or dead; caps: only XENSTORE is known).
    pub fn info(&self) -> DomainInfo {
        let mut st = state::EXIST;
        if self.shutdown() {
            st |= state::SHUTDOWN;
        }
        if self.dying() {
            st |= state::DYING;
        }
        DomainInfo {
            state: st,
            caps: if self.flags & flags::XS_DOMAIN != 0 {
                caps::XENSTORE
            } else {
                0
            },
            unique_id: self.identity(),
        }
    }
}

/// Why a list reply cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// More records than asked for, or than the buffer holds.
    #[error("getdomaininfolist returned {got} records for {asked}")]
    TooMany {
        /// Records claimed.
        got: u32,
        /// Records asked for.
        asked: u32,
    },
    /// A record out of order or out of range: the layout is not this
    /// hypervisor's.
    #[error("getdomaininfolist record {index} names domain {domid} (after {prev:?}, first {first}): layout mismatch")]
    BadRecord {
        /// Record index.
        index: usize,
        /// Domid read.
        domid: u32,
        /// The domid before.
        prev: Option<u32>,
        /// The first domid asked for.
        first: u32,
    },
}

/// Encodes the `struct xen_sysctl` of a getdomaininfolist request.
pub fn encode_request(layout: &Layout, first: u32, max: u32, buffer: u64) -> [u8; SYSCTL_SIZE] {
    let mut b = [0u8; SYSCTL_SIZE];
    b[0..4].copy_from_slice(&XEN_SYSCTL_GETDOMAININFOLIST.to_ne_bytes());
    b[4..8].copy_from_slice(&layout.sysctl_version.to_ne_bytes());
    b[8..10].copy_from_slice(&(first.min(0xffff) as u16).to_ne_bytes());
    b[12..16].copy_from_slice(&max.to_ne_bytes());
    b[16..24].copy_from_slice(&buffer.to_ne_bytes());
    b
}

/// `num_domains` from a completed request.
pub fn decode_count(req: &[u8; SYSCTL_SIZE]) -> u32 {
    let mut n = [0u8; 4];
    n.copy_from_slice(&req[24..28]);
    u32::from_ne_bytes(n)
}

/// Reads `count` records from `buf`, checking that domids ascend from
/// `first` and stay below the reserved range.
pub fn parse_records(
    layout: &Layout,
    buf: &[u8],
    count: u32,
    first: u32,
    asked: u32,
) -> Result<Vec<ListedDomain>, ListError> {
    if layout.record_size == 0
        || count > asked
        || (count as usize).saturating_mul(layout.record_size) > buf.len()
    {
        return Err(ListError::TooMany { got: count, asked });
    }
    let mut out = Vec::with_capacity(count as usize);
    let mut prev: Option<u32> = None;
    for (index, rec) in buf
        .chunks_exact(layout.record_size)
        .take(count as usize)
        .enumerate()
    {
        let field = |off: usize, len: usize| rec.get(off..off.saturating_add(len));
        let bad = || ListError::BadRecord {
            index,
            domid: u32::MAX,
            prev,
            first,
        };
        let d: [u8; 2] = field(layout.domain, 2)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        let f: [u8; 4] = field(layout.flags, 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        let handle: [u8; 16] = field(layout.handle, 16)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        let domid = u32::from(u16::from_ne_bytes(d));
        if domid < first || domid >= DOMID_FIRST_RESERVED || prev.is_some_and(|p| domid <= p) {
            return Err(ListError::BadRecord {
                index,
                domid,
                prev,
                first,
            });
        }
        prev = Some(domid);
        out.push(ListedDomain {
            domid,
            flags: u32::from_ne_bytes(f),
            handle,
        });
    }
    Ok(out)
}

type CallOpen = unsafe extern "C" fn(*mut c_void, c_uint) -> *mut c_void;
type CallClose = unsafe extern "C" fn(*mut c_void) -> c_int;
type Call1 = unsafe extern "C" fn(*mut c_void, c_uint, u64) -> c_int;
type Call2 = unsafe extern "C" fn(*mut c_void, c_uint, u64, u64) -> c_int;
type CallAlloc = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type CallFree = unsafe extern "C" fn(*mut c_void, *mut c_void);

/// The list of domains through libxencall: opened once, its two hypercall
/// buffers allocated once.
pub struct DomainList {
    h: NonNull<c_void>,
    close: CallClose,
    call1: Call1,
    free: CallFree,
    request: NonNull<u8>,
    records: NonNull<u8>,
    layout: Layout,
    version: (u32, u32),
    calls: u64,
    bytes: u64,
    _lib: Library,
}

impl DomainList {
    /// Loads `libxencall.so.1` (from `dir`, or the system), asks the
    /// hypervisor's version, picks the layout from the table, and proves it
    /// with one request. Errors: the library or a symbol is missing,
    /// [`XenError::UnknownHypervisor`], or the probe failed (EACCES: the
    /// sysctl interface version is not this hypervisor's).
    pub fn open(dir: Option<&Path>) -> Result<DomainList, XenError> {
        let lib = Library::open("libxencall.so.1", "4.7", dir)?;
        // SAFETY (each `func`): the types match xencall.h's prototypes for
        // these VERS_1.0 symbols.
        let open: CallOpen = unsafe { crate::libs::func(&lib, "xencall_open") }?;
        let close: CallClose = unsafe { crate::libs::func(&lib, "xencall_close") }?;
        let call1: Call1 = unsafe { crate::libs::func(&lib, "xencall1") }?;
        let call2: Call2 = unsafe { crate::libs::func(&lib, "xencall2") }?;
        let alloc: CallAlloc = unsafe { crate::libs::func(&lib, "xencall_alloc_buffer") }?;
        let free: CallFree = unsafe { crate::libs::func(&lib, "xencall_free_buffer") }?;
        // SAFETY: NULL logger (stderr), flags 0.
        let h = unsafe { open(std::ptr::null_mut(), 0) };
        let h = NonNull::new(h).ok_or_else(|| crate::libs::call_err("xencall_open"))?;
        // SAFETY: live handle; XENVER_version takes no buffer (NULL).
        let v = unsafe { call2(h.as_ptr(), HYPERVISOR_XEN_VERSION, XENVER_VERSION, 0) };
        let fail = |e: XenError| {
            // SAFETY: the handle is live and closed once, here.
            unsafe { close(h.as_ptr()) };
            e
        };
        if v < 0 {
            return Err(fail(crate::libs::call_err("xen_version")));
        }
        let version = ((v as u32) >> 16, (v as u32) & 0xffff);
        let Some(layout) = layout_for(version.0, version.1) else {
            return Err(fail(XenError::UnknownHypervisor {
                major: version.0,
                minor: version.1,
                known: known_range(),
            }));
        };
        // SAFETY: live handle; sizes are non-zero.
        let request = unsafe { alloc(h.as_ptr(), SYSCTL_SIZE) };
        // SAFETY: as above.
        let records = unsafe { alloc(h.as_ptr(), RECORDS_PER_CALL as usize * layout.record_size) };
        let (Some(request), Some(records)) = (
            NonNull::new(request.cast::<u8>()),
            NonNull::new(records.cast::<u8>()),
        ) else {
            let e = crate::libs::call_err("xencall_alloc_buffer");
            for p in [request, records] {
                if !p.is_null() {
                    // SAFETY: a buffer of this live handle, freed once.
                    unsafe { free(h.as_ptr(), p) };
                }
            }
            return Err(fail(e));
        };
        let mut list = DomainList {
            h,
            close,
            call1,
            free,
            request,
            records,
            layout,
            version,
            calls: 0,
            bytes: 0,
            _lib: lib,
        };
        // Proves the interface version (EACCES otherwise) and the layout
        // (dom0, or whoever comes first, parses).
        list.list(0, 1)?;
        Ok(list)
    }

    /// The hypervisor's version.
    pub fn version(&self) -> (u32, u32) {
        self.version
    }

    /// The layout in use.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Hypercalls made and record bytes received so far.
    pub fn cost(&self) -> (u64, u64) {
        (self.calls, self.bytes)
    }

    /// Up to `max` (at most [`RECORDS_PER_CALL`]) domains with domid >=
    /// `first`, in domid order: one hypercall.
    pub fn list(&mut self, first: u32, max: u32) -> Result<Vec<ListedDomain>, XenError> {
        let max = max.min(RECORDS_PER_CALL);
        if first >= DOMID_FIRST_RESERVED || max == 0 {
            return Ok(Vec::new());
        }
        let req = encode_request(&self.layout, first, max, self.records.as_ptr() as u64);
        // SAFETY: `request` is a live buffer of SYSCTL_SIZE bytes that only
        // this object uses; no hypercall is in flight.
        unsafe {
            std::ptr::copy_nonoverlapping(req.as_ptr(), self.request.as_ptr(), SYSCTL_SIZE);
        }
        self.calls += 1;
        // SAFETY: live handle; the argument is our hypercall buffer.
        let r = unsafe {
            (self.call1)(
                self.h.as_ptr(),
                HYPERVISOR_SYSCTL,
                self.request.as_ptr() as u64,
            )
        };
        if r < 0 {
            return Err(XenError::Call {
                call: "XEN_SYSCTL_getdomaininfolist",
                source: io::Error::last_os_error(),
            });
        }
        let mut done = [0u8; SYSCTL_SIZE];
        // SAFETY: as above; the hypercall has returned.
        unsafe {
            std::ptr::copy_nonoverlapping(self.request.as_ptr(), done.as_mut_ptr(), SYSCTL_SIZE);
        }
        let count = decode_count(&done);
        let len = RECORDS_PER_CALL as usize * self.layout.record_size;
        // SAFETY: `records` is a live buffer of `len` bytes; the hypercall
        // that wrote it has returned and nothing else writes it.
        let buf = unsafe { std::slice::from_raw_parts(self.records.as_ptr(), len) };
        let out =
            parse_records(&self.layout, buf, count, first, max).map_err(|e| XenError::Call {
                call: "XEN_SYSCTL_getdomaininfolist",
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            })?;
        self.bytes += (out.len() * self.layout.record_size) as u64;
        Ok(out)
    }

    /// One domain, if it exists (dying or dead ones included).
    pub fn get(&mut self, domid: u32) -> Result<Option<ListedDomain>, XenError> {
        Ok(self.list(domid, 1)?.into_iter().find(|d| d.domid == domid))
    }

    /// Every domain with domid >= `first` and <= `last`, in domid order
    /// (as many calls as it takes, stopping after `last`).
    pub fn range(&mut self, first: u32, last: u32) -> Result<Vec<ListedDomain>, XenError> {
        let mut out = Vec::new();
        let mut from = first;
        loop {
            let chunk = self.list(from, RECORDS_PER_CALL)?;
            let full = chunk.len() == RECORDS_PER_CALL as usize;
            let Some(end) = chunk.last().map(|d| d.domid) else {
                break;
            };
            out.extend(chunk.into_iter().filter(|d| d.domid <= last));
            if !full || end >= last {
                break;
            }
            from = end + 1;
        }
        Ok(out)
    }
}

impl Drop for DomainList {
    fn drop(&mut self) {
        // SAFETY: our two buffers and the handle, each released once,
        // before the library is unloaded.
        unsafe {
            (self.free)(self.h.as_ptr(), self.request.as_ptr().cast());
            (self.free)(self.h.as_ptr(), self.records.as_ptr().cast());
            (self.close)(self.h.as_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(domid: u16, flags: u32, handle: [u8; 16]) -> [u8; 112] {
        let mut b = [0u8; 112];
        b[0..2].copy_from_slice(&domid.to_ne_bytes());
        b[4..8].copy_from_slice(&flags.to_ne_bytes());
        b[76..92].copy_from_slice(&handle);
        b
    }

    #[test]
    fn table_covers_4_17_to_4_22_only() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        assert_eq!(layout_for(4, 17).map(|l| l.sysctl_version), Some(0x15));
        assert_eq!(layout_for(4, 20).map(|l| l.sysctl_version), Some(0x15));
        assert_eq!(layout_for(4, 21).map(|l| l.sysctl_version), Some(0x16));
        assert_eq!(layout_for(4, 22).map(|l| l.sysctl_version), Some(0x16));
        assert_eq!(layout_for(4, 16), None);
        assert_eq!(layout_for(4, 23), None);
        assert_eq!(layout_for(5, 0), None);
        assert_eq!(known_range(), "4.17 to 4.22");
    }

    #[test]
    fn request_and_records() {
        let l = LAYOUT_4_17;
        let req = encode_request(&l, 3, 512, 0x1234_5678_9abc);
        assert_eq!(&req[0..4], &6u32.to_ne_bytes());
        assert_eq!(&req[4..8], &0x15u32.to_ne_bytes());
        assert_eq!(&req[8..10], &3u16.to_ne_bytes());
        assert_eq!(&req[16..24], &0x1234_5678_9abcu64.to_ne_bytes());
        let mut buf = Vec::new();
        buf.extend_from_slice(&record(3, 1 << 5, [7; 16]));
        buf.extend_from_slice(&record(9, flags::SHUTDOWN | (3 << 16), [8; 16]));
        buf.extend_from_slice(&record(12, flags::DYING, [9; 16]));
        let v = parse_records(&l, &buf, 3, 3, 512).unwrap();
        assert_eq!(v.iter().map(|d| d.domid).collect::<Vec<_>>(), [3, 9, 12]);
        assert!(!v[0].dying() && !v[0].shutdown());
        assert!(v[1].shutdown() && v[1].shutdown_reason() == 3);
        assert!(v[2].dying());
        assert_eq!(v[1].info().state, state::EXIST | state::SHUTDOWN);
        assert_eq!(v[2].info().state, state::EXIST | state::DYING);
        assert_ne!(v[0].identity(), v[1].identity());
        let dom0 = ListedDomain {
            domid: 0,
            flags: 0,
            handle: [0; 16],
        };
        assert_eq!(dom0.identity(), 0);
    }

    #[test]
    fn misread_records_are_refused() {
        // A layout whose fields lie outside the record is an error, not a
        // panic.
        let broken = Layout {
            handle: 100,
            ..LAYOUT_4_17
        };
        assert!(parse_records(&broken, &record(1, 0, [0; 16]), 1, 0, 512).is_err());
        let l = LAYOUT_4_17;
        let mut buf = Vec::new();
        buf.extend_from_slice(&record(5, 0, [1; 16]));
        buf.extend_from_slice(&record(4, 0, [1; 16]));
        // Out of order.
        assert!(matches!(
            parse_records(&l, &buf, 2, 0, 512),
            Err(ListError::BadRecord { index: 1, .. })
        ));
        // Below the first asked for.
        assert!(parse_records(&l, &buf[..112], 1, 6, 512).is_err());
        // More than asked for, or than the buffer holds.
        assert!(parse_records(&l, &buf, 2, 0, 1).is_err());
        assert!(parse_records(&l, &buf, 3, 0, 512).is_err());
        // Reserved domids.
        let bad = record(0x7FF2, 0, [0; 16]);
        assert!(parse_records(&l, &bad, 1, 0, 512).is_err());
    }

    #[test]
    fn arbitrary_replies_never_panic() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2000 {
            let len = (next() % 2000) as usize;
            let buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let count = (next() % 40) as u32;
            let first = (next() % 0x8000) as u32;
            let layout = Layout {
                record_size: (next() % 130) as usize,
                domain: (next() % 130) as usize,
                flags: (next() % 130) as usize,
                handle: (next() % 130) as usize,
                ..LAYOUT_4_17
            };
            for l in [LAYOUT_4_17, layout] {
                if let Ok(v) = parse_records(&l, &buf, count, first, 512) {
                    assert!(v.len() <= count as usize);
                    assert!(v.windows(2).all(|w| w[0].domid < w[1].domid));
                }
            }
        }
    }
}
