//! The only door to Xen.
//!
//! rxenstored talks to the hypervisor through three traits owned here:
//!
//! * [`EventChannels`]: bind, notify, unmask, unbind, and the pending-port
//!   queue behind one pollable file descriptor;
//! * [`GrantMapper`]: map a domain's xenstore ring page (grant entry 1,
//!   `GNTTAB_RESERVED_XENSTORE`);
//! * [`DomainStates`]: a domain's state, capabilities and `unique_id`, and
//!   the changed-domain feed (`xenmanage_poll_changed_domain`);
//! * [`domlist::DomainList`]: before Xen 4.21, the list of domains
//!   (`XEN_SYSCTL_getdomaininfolist` through the stable libxencall), with
//!   the record layout chosen from a table by hypervisor version: the one
//!   unstable interface the daemon uses.
//!
//! The production backend ([`libs`]) loads Xen's *stable* libraries
//! `libxenevtchn.so.1`, `libxengnttab.so.1` and `libxenmanage.so.1` with
//! `dlopen` at run time and resolves the versioned symbols of their map
//! files (`VERS_1.0`; `xenevtchn_fdopen` at `VERS_1.2`, optional: live
//! update), so building needs no Xen header or library, and a
//! machine without Xen runs the daemon in socket-only or simulated mode.
//! A directory can be given to load the libraries from instead of the
//! system paths; that is how the simulator's stand-ins are used, through
//! the very same code.
//!
//! [`page::MappedPage`] gives the ring protocol of `xenstore_proto::ring`
//! access to a mapped page; [`dom0`] reads the local domain's own ring
//! from xenfs (`/proc/xen/xsd_kva`, `/proc/xen/xsd_port`).
//!
//! This crate (with `xensim`) is where `unsafe` is allowed: FFI and shared
//! memory. Every block says why it holds.

pub mod dl;
pub mod dom0;
pub mod domlist;
pub mod inherit;
pub mod libs;
pub mod page;

pub use page::MappedPage;

use std::io;
use std::os::fd::BorrowedFd;

/// An event channel port.
pub type Port = u32;

/// The virtual IRQ raised when some domain changes state.
pub const VIRQ_DOM_EXC: u32 = 3;

/// Grant reference of the xenstore ring page in every domain.
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;

/// Domain state flags (`XENMANAGE_GETDOMSTATE_STATE_*`).
pub mod state {
    /// The domain exists.
    pub const EXIST: u32 = 0x1;
    /// Its shutdown has completed.
    pub const SHUTDOWN: u32 = 0x2;
    /// Its destruction has started.
    pub const DYING: u32 = 0x4;
    /// Its destruction has finished (a zombie while references remain).
    pub const DEAD: u32 = 0x8;
}

/// Domain capability flags (`XENMANAGE_GETDOMSTATE_CAP_*`).
pub mod caps {
    /// The control domain.
    pub const CONTROL: u32 = 0x1;
    /// The hardware domain.
    pub const HARDWARE: u32 = 0x2;
    /// A xenstore domain.
    pub const XENSTORE: u32 = 0x4;
}

/// What the hypervisor says about a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DomainInfo {
    /// [`state`] flags; 0 for a domain that no longer exists.
    pub state: u32,
    /// [`caps`] flags.
    pub caps: u32,
    /// Never repeated during one boot of Xen; compare for equality only.
    pub unique_id: u64,
}

impl DomainInfo {
    /// The domain exists.
    pub fn exists(&self) -> bool {
        self.state & state::EXIST != 0
    }
}

/// Why a Xen interface could not be used.
#[derive(Debug, thiserror::Error)]
pub enum XenError {
    /// A library is not installed (or not in the directory given).
    #[error("cannot load {lib}: {detail} ({lib} is part of Xen {since} and later)")]
    Missing {
        /// The library's file name.
        lib: &'static str,
        /// The first Xen release that ships it.
        since: &'static str,
        /// The loader's message.
        detail: String,
    },
    /// A library lacks a function of the stable interface.
    #[error("{lib} has no {symbol}@{version}")]
    Symbol {
        /// The library.
        lib: &'static str,
        /// The function.
        symbol: &'static str,
        /// Its symbol version.
        version: &'static str,
    },
    /// The hypervisor's version is not in the table of known domain-record
    /// layouts ([`domlist`]).
    #[error(
        "Xen {major}.{minor} is not in the table of known XEN_SYSCTL_getdomaininfolist \
         layouts ({known})"
    )]
    UnknownHypervisor {
        /// Major version.
        major: u32,
        /// Minor version.
        minor: u32,
        /// The versions known.
        known: String,
    },
    /// A call failed.
    #[error("{call}: {source}")]
    Call {
        /// The function called.
        call: &'static str,
        /// errno.
        source: io::Error,
    },
}

impl XenError {
    /// The errno of a failed call, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            XenError::Call { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Event channels of the local domain, behind one pollable descriptor.
pub trait EventChannels {
    /// Readable when a port is pending.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Binds a new local port to `remote_port` of domain `domid`.
    fn bind_interdomain(&mut self, domid: u32, remote_port: Port) -> Result<Port, XenError>;
    /// Binds a virtual IRQ (only [`VIRQ_DOM_EXC`] is used).
    fn bind_virq(&mut self, virq: u32) -> Result<Port, XenError>;
    /// Signals the peer of `port`.
    fn notify(&mut self, port: Port) -> Result<(), XenError>;
    /// The next pending port (masked until [`EventChannels::unmask`]);
    /// call only when [`EventChannels::fd`] is readable.
    fn pending(&mut self) -> Result<Port, XenError>;
    /// Re-enables delivery on `port`.
    fn unmask(&mut self, port: Port) -> Result<(), XenError>;
    /// Closes `port`.
    fn unbind(&mut self, port: Port) -> Result<(), XenError>;
}

/// Maps domains' xenstore ring pages.
pub trait GrantMapper {
    /// Maps grant entry 1 of `domid`, read-write.
    fn map_ring(&mut self, domid: u32) -> Result<MappedPage, XenError>;
}

/// What the legacy per-domain query reports (the flags xenstored used
/// from `xc_domain_getinfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegacyInfo {
    /// Dying or dead.
    pub dying: bool,
    /// Shut down.
    pub shutdown: bool,
    /// The shutdown reason.
    pub shutdown_reason: u32,
}

/// Domain state: the only stable interface is libxenmanage (Xen 4.21+).
pub trait DomainStates {
    /// One domain's state, caps and unique id.
    fn get_domain_info(&mut self, domid: u32) -> Result<DomainInfo, XenError>;
    /// The next domain whose state changed since it was last reported, or
    /// `None` when there is none (ENOENT).
    fn poll_changed_domain(&mut self) -> Result<Option<(u32, DomainInfo)>, XenError>;
}
