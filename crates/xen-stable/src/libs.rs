//! The production backend: Xen's stable libraries, loaded at run time.
//!
//! | library | functions (all `VERS_1.0`) | since |
//! |---|---|---|
//! | `libxenevtchn.so.1` | open, close, fd, bind_interdomain, bind_virq, notify, pending, unmask, unbind; `fdopen` (`VERS_1.2`, optional: live update) | Xen 4.7 (`fdopen`: 4.15) |
//! | `libxengnttab.so.1` | open, close, set_max_grants, map_grant_ref, unmap | Xen 4.7 |
//! | `libxenmanage.so.1` | open, close, get_domain_info, poll_changed_domain | Xen 4.21 |
//!
//! Each backend keeps its [`Library`] after its function pointers and
//! closes its handle before the library is unloaded.

use crate::dl::Library;
use crate::page::MappedPage;
use crate::{
    DomainInfo, DomainStates, EventChannels, GrantMapper, Port, XenError, GNTTAB_RESERVED_XENSTORE,
};
use std::ffi::{c_int, c_uint, c_void};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::rc::Rc;

const V1: &str = "VERS_1.0";

/// Where to load the libraries from.
#[derive(Debug, Clone, Default)]
pub struct XenLibs {
    dir: Option<PathBuf>,
}

/// A call returned -1 (or NULL): the error with errno.
pub(crate) fn call_err(call: &'static str) -> XenError {
    XenError::Call {
        call,
        source: io::Error::last_os_error(),
    }
}

/// Resolves `name@VERS_1.0` as a function pointer of type `F`.
///
/// # Safety
/// `F` must be the `extern "C"` function type the library declares for
/// `name`.
pub(crate) unsafe fn func<F: Copy>(lib: &Library, name: &'static str) -> Result<F, XenError> {
    let p = lib.symbol(name, V1)?;
    debug_assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: `p` is the non-NULL address of the function `name`, and the
    // caller guarantees `F` is its type; function pointers and data
    // pointers have the same size on the platforms Xen supports.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

impl XenLibs {
    /// Libraries from `dir`, or from the system's search path.
    pub fn new(dir: Option<&Path>) -> XenLibs {
        XenLibs {
            dir: dir.map(Path::to_path_buf),
        }
    }

    /// Opens the event channel device through libxenevtchn.
    pub fn evtchn(&self) -> Result<Evtchn, XenError> {
        Evtchn::open(self.dir.as_deref(), None)
    }

    /// Takes the event-channel descriptor `fd` that the binary before
    /// this one left open across `exec` (live update), with every port
    /// bound through it: libxenevtchn's `xenevtchn_fdopen` (`VERS_1.2`,
    /// Xen 4.15+). The handle owns `fd` from now on.
    pub fn evtchn_inherited(&self, fd: OwnedFd) -> Result<Evtchn, XenError> {
        Evtchn::open(self.dir.as_deref(), Some(fd))
    }

    /// Opens the grant device through libxengnttab.
    pub fn gnttab(&self) -> Result<Gnttab, XenError> {
        Gnttab::open(self.dir.as_deref())
    }

    /// Opens libxenmanage (Xen 4.21+).
    pub fn manage(&self) -> Result<Manage, XenError> {
        Manage::open(self.dir.as_deref())
    }

    /// Opens the pre-4.21 domain list through libxencall (see
    /// [`crate::domlist`]).
    pub fn domain_list(&self) -> Result<crate::domlist::DomainList, XenError> {
        crate::domlist::DomainList::open(self.dir.as_deref())
    }
}

// ----- libxenevtchn -------------------------------------------------------

type EvOpen = unsafe extern "C" fn(*mut c_void, c_uint) -> *mut c_void;
type EvHandleFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type EvPortFn = unsafe extern "C" fn(*mut c_void, u32) -> c_int;
type EvBindInter = unsafe extern "C" fn(*mut c_void, u32, u32) -> c_int;
type EvBindVirq = unsafe extern "C" fn(*mut c_void, c_uint) -> c_int;
type EvFdOpen = unsafe extern "C" fn(*mut c_void, c_int, c_uint) -> *mut c_void;

/// The symbol version of `xenevtchn_fdopen`.
const V1_2: &str = "VERS_1.2";

/// An open libxenevtchn handle.
pub struct Evtchn {
    h: NonNull<c_void>,
    fd: RawFd,
    close: EvHandleFn,
    bind_interdomain: EvBindInter,
    bind_virq: EvBindVirq,
    notify: EvPortFn,
    pending: EvHandleFn,
    unmask: EvPortFn,
    unbind: EvPortFn,
    /// `xenevtchn_fdopen`, when the library has it (Xen 4.15+).
    fdopen: Option<EvFdOpen>,
    sim_death: Option<SimDeathChannel>,
    _lib: Library,
}

impl Evtchn {
    /// True if a handle's descriptor can be taken again after `exec`
    /// (`xenevtchn_fdopen`, `VERS_1.2`): what a live update with guests
    /// needs from the library.
    pub fn can_be_inherited(&self) -> bool {
        self.fdopen.is_some()
    }

    /// Keeps the handle's descriptor open across the next `exec` (`true`)
    /// or closes it there again (`false`): the event channels bound
    /// through it survive with it.
    pub fn keep_across_exec(&self, keep: bool) -> io::Result<()> {
        if keep {
            crate::inherit::keep_across_exec(self.fd)
        } else {
            crate::inherit::close_on_exec(self.fd)
        }
    }

    /// True if the simulator's death channels are available.
    pub fn has_death_channels(&self) -> bool {
        self.sim_death.is_some()
    }

    /// A port that fires when `domid` shuts down, dies or goes (simulator
    /// only: the per-domain death channel design).
    pub fn bind_death_channel(&mut self, domid: u32) -> Result<Port, XenError> {
        let f = self.sim_death.ok_or(XenError::Symbol {
            lib: "libxenevtchn.so.1",
            symbol: "xensim_bind_death_channel",
            version: "XENSIM_1.0",
        })?;
        // SAFETY: live handle; plain integer argument.
        let r = unsafe { f(self.h.as_ptr(), domid) };
        Self::port_result(r, "xensim_bind_death_channel")
    }

    /// Opens a new handle, or (`inherited`) takes an inherited descriptor.
    fn open(dir: Option<&Path>, inherited: Option<OwnedFd>) -> Result<Evtchn, XenError> {
        let lib = Library::open("libxenevtchn.so.1", "4.7", dir)?;
        // SAFETY (each `func`): the types match the prototypes of
        // xenevtchn.h for these VERS_1.0 symbols.
        let open: EvOpen = unsafe { func(&lib, "xenevtchn_open") }?;
        let fd_fn: EvHandleFn = unsafe { func(&lib, "xenevtchn_fd") }?;
        let close: EvHandleFn = unsafe { func(&lib, "xenevtchn_close") }?;
        let bind_interdomain = unsafe { func(&lib, "xenevtchn_bind_interdomain") }?;
        let bind_virq = unsafe { func(&lib, "xenevtchn_bind_virq") }?;
        let notify = unsafe { func(&lib, "xenevtchn_notify") }?;
        let pending = unsafe { func(&lib, "xenevtchn_pending") }?;
        let unmask = unsafe { func(&lib, "xenevtchn_unmask") }?;
        let unbind = unsafe { func(&lib, "xenevtchn_unbind") }?;
        // SAFETY: the simulator stand-in's type for this XENSIM_1.0 symbol.
        let sim_death = unsafe { sim_func::<SimDeathChannel>(&lib, "xensim_bind_death_channel") };
        let fdopen = lib.symbol("xenevtchn_fdopen", V1_2).ok().map(|p| {
            // SAFETY: the type matches xenevtchn.h's prototype of this
            // VERS_1.2 symbol; see `func`.
            unsafe { std::mem::transmute_copy::<*mut c_void, EvFdOpen>(&p) }
        });
        let h = match inherited {
            None => {
                // SAFETY: NULL logger means "log to stderr"; flags 0 are
                // valid.
                let h = unsafe { open(std::ptr::null_mut(), 0) };
                NonNull::new(h).ok_or_else(|| call_err("xenevtchn_open"))?
            }
            Some(fd) => {
                let f = fdopen.ok_or(XenError::Symbol {
                    lib: "libxenevtchn.so.1",
                    symbol: "xenevtchn_fdopen",
                    version: V1_2,
                })?;
                // SAFETY: NULL logger, flags 0 (the only valid ones); `fd`
                // is open and ours, and handed to the new handle on
                // success (released from `fd` below).
                let h = unsafe { f(std::ptr::null_mut(), fd.as_raw_fd(), 0) };
                let h = NonNull::new(h).ok_or_else(|| call_err("xenevtchn_fdopen"))?;
                // The handle owns the descriptor now (closed with it).
                let _ = fd.into_raw_fd();
                h
            }
        };
        // SAFETY: `h` is the live handle just opened.
        let fd = unsafe { fd_fn(h.as_ptr()) };
        if fd < 0 {
            let e = call_err("xenevtchn_fd");
            // SAFETY: closing the handle we opened, once.
            unsafe { close(h.as_ptr()) };
            return Err(e);
        }
        Ok(Evtchn {
            h,
            fd,
            close,
            bind_interdomain,
            bind_virq,
            notify,
            pending,
            unmask,
            unbind,
            fdopen,
            sim_death,
            _lib: lib,
        })
    }

    fn port_result(r: c_int, call: &'static str) -> Result<Port, XenError> {
        u32::try_from(r).map_err(|_| call_err(call))
    }
}

impl EventChannels for Evtchn {
    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor belongs to the open handle and stays open
        // until the handle is closed in Drop, after every borrow ends.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }

    fn bind_interdomain(&mut self, domid: u32, remote_port: Port) -> Result<Port, XenError> {
        // SAFETY: live handle; plain integer arguments.
        let r = unsafe { (self.bind_interdomain)(self.h.as_ptr(), domid, remote_port) };
        Self::port_result(r, "xenevtchn_bind_interdomain")
    }

    fn bind_virq(&mut self, virq: u32) -> Result<Port, XenError> {
        // SAFETY: live handle; plain integer argument.
        let r = unsafe { (self.bind_virq)(self.h.as_ptr(), virq) };
        Self::port_result(r, "xenevtchn_bind_virq")
    }

    fn notify(&mut self, port: Port) -> Result<(), XenError> {
        // SAFETY: live handle; plain integer argument.
        let r = unsafe { (self.notify)(self.h.as_ptr(), port) };
        if r < 0 {
            return Err(call_err("xenevtchn_notify"));
        }
        Ok(())
    }

    fn pending(&mut self) -> Result<Port, XenError> {
        // SAFETY: live handle. The caller polls the fd first, so this does
        // not block.
        let r = unsafe { (self.pending)(self.h.as_ptr()) };
        Self::port_result(r, "xenevtchn_pending")
    }

    fn unmask(&mut self, port: Port) -> Result<(), XenError> {
        // SAFETY: live handle; plain integer argument.
        let r = unsafe { (self.unmask)(self.h.as_ptr(), port) };
        if r < 0 {
            return Err(call_err("xenevtchn_unmask"));
        }
        Ok(())
    }

    fn unbind(&mut self, port: Port) -> Result<(), XenError> {
        // SAFETY: live handle; plain integer argument.
        let r = unsafe { (self.unbind)(self.h.as_ptr(), port) };
        if r < 0 {
            return Err(call_err("xenevtchn_unbind"));
        }
        Ok(())
    }
}

impl Drop for Evtchn {
    fn drop(&mut self) {
        // SAFETY: the handle is closed once, before the library (a later
        // field) is unloaded.
        unsafe {
            (self.close)(self.h.as_ptr());
        }
    }
}

// ----- libxengnttab -------------------------------------------------------

type GtOpen = unsafe extern "C" fn(*mut c_void, c_uint) -> *mut c_void;
type GtClose = unsafe extern "C" fn(*mut c_void) -> c_int;
type GtSetMax = unsafe extern "C" fn(*mut c_void, u32) -> c_int;
type GtMap = unsafe extern "C" fn(*mut c_void, u32, u32, c_int) -> *mut c_void;
type GtUnmap = unsafe extern "C" fn(*mut c_void, *mut c_void, u32) -> c_int;

struct GnttabInner {
    h: NonNull<c_void>,
    close: GtClose,
    map: GtMap,
    unmap: GtUnmap,
    _lib: Library,
}

impl Drop for GnttabInner {
    fn drop(&mut self) {
        // SAFETY: closed once, after every page (which holds an Rc to us)
        // is unmapped, and before the library is unloaded.
        unsafe {
            (self.close)(self.h.as_ptr());
        }
    }
}

/// An open libxengnttab handle. Mapped pages keep it alive.
pub struct Gnttab(Rc<GnttabInner>);

/// One grant per possible domain, as C xenstored asks.
const MAX_GRANTS: u32 = 0x7FF0;

impl Gnttab {
    fn open(dir: Option<&Path>) -> Result<Gnttab, XenError> {
        let lib = Library::open("libxengnttab.so.1", "4.7", dir)?;
        // SAFETY (each `func`): types match xengnttab.h for these VERS_1.0
        // symbols.
        let open: GtOpen = unsafe { func(&lib, "xengnttab_open") }?;
        let close: GtClose = unsafe { func(&lib, "xengnttab_close") }?;
        let set_max: GtSetMax = unsafe { func(&lib, "xengnttab_set_max_grants") }?;
        let map: GtMap = unsafe { func(&lib, "xengnttab_map_grant_ref") }?;
        let unmap: GtUnmap = unsafe { func(&lib, "xengnttab_unmap") }?;
        // SAFETY: NULL logger, flags 0.
        let h = unsafe { open(std::ptr::null_mut(), 0) };
        let h = NonNull::new(h).ok_or_else(|| call_err("xengnttab_open"))?;
        // SAFETY: live handle. Failure (ENOTTY on mainline kernels) is
        // harmless and ignored, as in C xenstored.
        unsafe { set_max(h.as_ptr(), MAX_GRANTS) };
        Ok(Gnttab(Rc::new(GnttabInner {
            h,
            close,
            map,
            unmap,
            _lib: lib,
        })))
    }
}

impl GrantMapper for Gnttab {
    fn map_ring(&mut self, domid: u32) -> Result<MappedPage, XenError> {
        let inner = self.0.clone();
        // SAFETY: live handle; maps one page of grant entry 1 of `domid`.
        let p = unsafe {
            (inner.map)(
                inner.h.as_ptr(),
                domid,
                GNTTAB_RESERVED_XENSTORE,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| call_err("xengnttab_map_grant_ref"))?;
        let unmap = Box::new(move |p: NonNull<u8>| {
            // SAFETY: the exact address and count of this mapping, unmapped
            // once, with the handle kept alive by `inner`.
            unsafe {
                (inner.unmap)(inner.h.as_ptr(), p.as_ptr().cast(), 1);
            }
        });
        // SAFETY: a successful map returns a page-aligned mapping of one
        // page, valid until xengnttab_unmap; the guest writes it too.
        Ok(unsafe { MappedPage::from_raw(ptr, Some(unmap)) })
    }
}

// ----- libxenmanage -------------------------------------------------------

type MgOpen = unsafe extern "C" fn(*mut c_void, c_uint) -> *mut c_void;
type MgClose = unsafe extern "C" fn(*mut c_void) -> c_int;
type MgInfo =
    unsafe extern "C" fn(*mut c_void, c_uint, *mut c_uint, *mut c_uint, *mut u64) -> c_int;
type MgPoll =
    unsafe extern "C" fn(*mut c_void, *mut c_uint, *mut c_uint, *mut c_uint, *mut u64) -> c_int;
type SimGetinfo =
    unsafe extern "C" fn(*mut c_void, c_uint, *mut c_uint, *mut c_uint, *mut c_uint) -> c_int;
type SimBitmap = unsafe extern "C" fn(*mut c_void, *mut u64) -> c_int;
type SimMapBitmap = unsafe extern "C" fn(*mut c_void) -> *const u64;
type SimDeathChannel = unsafe extern "C" fn(*mut c_void, u32) -> c_int;

/// An open libxenmanage handle.
pub struct Manage {
    h: NonNull<c_void>,
    close: MgClose,
    info: MgInfo,
    poll: MgPoll,
    /// The simulator's legacy per-domain query, when the library is the
    /// simulator's stand-in (never on real Xen).
    sim_getinfo: Option<SimGetinfo>,
    sim_bitmap: Option<SimBitmap>,
    sim_map_bitmap: Option<SimMapBitmap>,
    _lib: Library,
}

/// Resolves an optional simulator-only function (`XENSIM_1.0`).
///
/// # Safety
/// `F` must be the function's type in the simulator's stand-in.
unsafe fn sim_func<F: Copy>(lib: &Library, name: &'static str) -> Option<F> {
    let p = lib.symbol(name, "XENSIM_1.0").ok()?;
    // SAFETY: per the contract; see `func`.
    Some(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

/// A read-only view of the simulator's shutdown|dying bitmap page (the
/// mapped-page design): read without any call.
pub struct BitmapView(NonNull<u64>);

impl BitmapView {
    /// The current bits (512 words).
    pub fn read(&self) -> [u64; 512] {
        let mut out = [0u64; 512];
        for (i, o) in out.iter_mut().enumerate() {
            // SAFETY: the mapping holds 512 aligned words for the life of
            // the process (the stand-in never unmaps it); the simulator
            // writes it concurrently, hence atomic loads.
            *o = unsafe {
                &*self
                    .0
                    .as_ptr()
                    .add(i)
                    .cast::<std::sync::atomic::AtomicU64>()
            }
            .load(std::sync::atomic::Ordering::Relaxed);
        }
        out
    }
}

impl Manage {
    fn open(dir: Option<&Path>) -> Result<Manage, XenError> {
        let lib = Library::open("libxenmanage.so.1", "4.21", dir)?;
        // SAFETY (each `func`): types match xenmanage.h (the released,
        // five-argument signatures) for these VERS_1.0 symbols.
        let open: MgOpen = unsafe { func(&lib, "xenmanage_open") }?;
        let close: MgClose = unsafe { func(&lib, "xenmanage_close") }?;
        let info: MgInfo = unsafe { func(&lib, "xenmanage_get_domain_info") }?;
        let poll: MgPoll = unsafe { func(&lib, "xenmanage_poll_changed_domain") }?;
        // SAFETY: the type matches the simulator stand-in's export; the
        // symbol exists only there (version XENSIM_1.0).
        let sim_getinfo = unsafe { sim_func::<SimGetinfo>(&lib, "xensim_getinfo_single") };
        // SAFETY: as above.
        let sim_bitmap = unsafe { sim_func::<SimBitmap>(&lib, "xensim_dying_bitmap") };
        // SAFETY: as above.
        let sim_map_bitmap = unsafe { sim_func::<SimMapBitmap>(&lib, "xensim_map_dying_bitmap") };
        // SAFETY: NULL logger, flags 0.
        let h = unsafe { open(std::ptr::null_mut(), 0) };
        let h = NonNull::new(h).ok_or_else(|| call_err("xenmanage_open"))?;
        Ok(Manage {
            h,
            close,
            info,
            poll,
            sim_getinfo,
            sim_bitmap,
            sim_map_bitmap,
            _lib: lib,
        })
    }

    /// True if the simulator's bitmap calls are available.
    pub fn has_bitmap(&self) -> bool {
        self.sim_bitmap.is_some() && self.sim_map_bitmap.is_some()
    }

    /// The one-call shutdown|dying bitmap (simulator only).
    pub fn dying_bitmap(&mut self) -> Result<[u64; 512], XenError> {
        let f = self.sim_bitmap.ok_or(XenError::Symbol {
            lib: "libxenmanage.so.1",
            symbol: "xensim_dying_bitmap",
            version: "XENSIM_1.0",
        })?;
        let mut bits = [0u64; 512];
        // SAFETY: live handle; `bits` holds 512 words.
        let r = unsafe { f(self.h.as_ptr(), bits.as_mut_ptr()) };
        if r != 0 {
            return Err(call_err("xensim_dying_bitmap"));
        }
        Ok(bits)
    }

    /// Maps the bitmap page the simulator keeps up to date (simulator only).
    pub fn map_dying_bitmap(&mut self) -> Result<BitmapView, XenError> {
        let f = self.sim_map_bitmap.ok_or(XenError::Symbol {
            lib: "libxenmanage.so.1",
            symbol: "xensim_map_dying_bitmap",
            version: "XENSIM_1.0",
        })?;
        // SAFETY: live handle.
        let p = unsafe { f(self.h.as_ptr()) };
        NonNull::new(p.cast_mut())
            .map(BitmapView)
            .ok_or_else(|| call_err("xensim_map_dying_bitmap"))
    }

    /// True if the legacy per-domain query is available (the simulator's
    /// stand-in only: it is not a stable Xen interface).
    pub fn has_legacy_query(&self) -> bool {
        self.sim_getinfo.is_some()
    }

    /// The legacy per-domain query (simulator only; for measuring the scan
    /// design against the changed-domain feed).
    pub fn legacy_getinfo(&mut self, domid: u32) -> Result<crate::LegacyInfo, XenError> {
        let Some(f) = self.sim_getinfo else {
            return Err(XenError::Symbol {
                lib: "libxenmanage.so.1",
                symbol: "xensim_getinfo_single",
                version: "XENSIM_1.0",
            });
        };
        let (mut dying, mut shutdown, mut reason): (c_uint, c_uint, c_uint) = (0, 0, 0);
        // SAFETY: live handle; out-pointers point to locals.
        let r = unsafe {
            f(
                self.h.as_ptr(),
                domid,
                &mut dying,
                &mut shutdown,
                &mut reason,
            )
        };
        if r != 0 {
            return Err(call_err("xensim_getinfo_single"));
        }
        Ok(crate::LegacyInfo {
            dying: dying != 0,
            shutdown: shutdown != 0,
            shutdown_reason: reason,
        })
    }
}

impl DomainStates for Manage {
    fn get_domain_info(&mut self, domid: u32) -> Result<DomainInfo, XenError> {
        let (mut state, mut caps, mut uid): (c_uint, c_uint, u64) = (0, 0, 0);
        // SAFETY: live handle; the three out-pointers point to locals.
        let r = unsafe { (self.info)(self.h.as_ptr(), domid, &mut state, &mut caps, &mut uid) };
        if r != 0 {
            return Err(call_err("xenmanage_get_domain_info"));
        }
        Ok(DomainInfo {
            state,
            caps,
            unique_id: uid,
        })
    }

    fn poll_changed_domain(&mut self) -> Result<Option<(u32, DomainInfo)>, XenError> {
        let (mut domid, mut state, mut caps, mut uid): (c_uint, c_uint, c_uint, u64) = (0, 0, 0, 0);
        // SAFETY: live handle; the four out-pointers point to locals.
        let r =
            unsafe { (self.poll)(self.h.as_ptr(), &mut domid, &mut state, &mut caps, &mut uid) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(None);
            }
            return Err(XenError::Call {
                call: "xenmanage_poll_changed_domain",
                source: e,
            });
        }
        Ok(Some((
            domid,
            DomainInfo {
                state,
                caps,
                unique_id: uid,
            },
        )))
    }
}

impl Drop for Manage {
    fn drop(&mut self) {
        // SAFETY: closed once, before the library is unloaded.
        unsafe {
            (self.close)(self.h.as_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_libraries_give_one_clear_error_each() {
        let libs = XenLibs::new(Some(Path::new("/nonexistent-xen-lib-dir")));
        let e = libs.evtchn().err().expect("no evtchn").to_string();
        assert!(
            e.contains("libxenevtchn.so.1") && e.contains("Xen 4.7"),
            "{e}"
        );
        let e = libs.gnttab().err().expect("no gnttab").to_string();
        assert!(e.contains("libxengnttab.so.1"), "{e}");
        let e = libs.manage().err().expect("no manage").to_string();
        assert!(
            e.contains("libxenmanage.so.1") && e.contains("Xen 4.21"),
            "{e}"
        );
    }
}
