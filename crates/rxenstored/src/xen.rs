//! Guests: ring connections over event channels, through `xen-stable`.
//!
//! * One event-channel handle for everything: its descriptor is a single
//!   source of the event loop, whatever the number of domains. A pending
//!   port names the ring to serve (a map lookup, never a scan of all
//!   rings), or `VIRQ_DOM_EXC`.
//! * On `VIRQ_DOM_EXC` the domain-state backend chosen at start-up
//!   ([`crate::domain_state`]: libxenmanage's feed on Xen 4.21+, the domain
//!   list before) says what changed among the domains served and those the
//!   store names: a shut-down domain fires `@releaseDomain/<domid>` once
//!   (generic `@releaseDomain` once per batch), a dead or vanished domain
//!   (or one whose identity changed: domid reused) is torn down.
//! * A guest that does not read: its requests stop being read past
//!   [`RING_OUT_HIGH`] of queued output, and watch events for it are
//!   dropped past [`RING_OUT_LIMIT`].
//! * Live update: the event-channel handle is kept across `exec` and taken
//!   again ([`Xen::open_inherited`]); rings are mapped again with their
//!   ports as they were ([`Xen::restore_ring`]); `VIRQ_DOM_EXC` and the
//!   backend's own ports are unbound before the `exec` and bound again
//!   after ([`Xen::before_exec`]); every domain is looked at once
//!   ([`Xen::check_all`]).
//! * A ring is read with the barrier discipline of `xenstore_proto::ring`;
//!   indices out of range or a header announcing more than 4096 bytes mark
//!   the connection broken: the error field says why (when the ERROR feature
//!   was advertised), its watches and transactions go, and it is never read
//!   again, while the domain stays introduced until it dies or is released.

use crate::conn::RingLink;
pub use crate::domain_state::{Change, Strategy};
use crate::domain_state::{ChooseError, DomainState, Served};
use std::collections::HashMap;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use xen_stable::libs::{Evtchn, Gnttab, XenLibs};
use xen_stable::{EventChannels, GrantMapper, MappedPage, XenError};
use xenstore_proto::ring::{self, RingPage};
use xenstore_proto::XsError;
use xenstore_store::ConnId;

/// Bytes queued for a guest above which its requests are not read.
pub const RING_OUT_HIGH: usize = 256 * 1024;
/// Bytes queued for a guest beyond which watch events for it are dropped
/// (replies are not: they are bounded by [`RING_OUT_HIGH`], which stops
/// the guest's requests from being read).
pub const RING_OUT_LIMIT: usize = 1024 * 1024;
/// Request bytes read but not yet handled above which the ring is not read.
pub const RING_IN_HIGH: usize = 16 * 1024;

/// Where the Xen interfaces come from.
#[derive(Debug, Clone, Default)]
pub struct XenConfig {
    /// Load the stable libraries from here instead of the system paths.
    pub lib_dir: Option<PathBuf>,
    /// The local domain's ring page (`/proc/xen/xsd_kva`).
    pub xsd_kva: PathBuf,
    /// The local domain's xenstore port (`/proc/xen/xsd_port`).
    pub xsd_port: PathBuf,
    /// The local domain's remote port given on the command line (C's
    /// `--event`): used instead of `xsd_port`'s.
    pub event: Option<u32>,
    /// How deaths are found on `VIRQ_DOM_EXC` (`None`: the best this host
    /// offers).
    pub strategy: Option<Strategy>,
}

/// The Xen side of the daemon.
pub struct Xen {
    /// Where domain state comes from.
    state: Box<dyn DomainState>,
    evtchn: Evtchn,
    gnttab: Gnttab,
    virq: Option<u32>,
    /// The connection of each bound ring port.
    by_port: HashMap<u32, ConnId>,
    /// The connection of each domain with a ring (bound or parked).
    by_domid: HashMap<u32, ConnId>,
    /// The domains with a ring, and the identity recorded at introduction.
    served: Served,
}

/// The guest's xenstore port: the one its ring page names, if any, else
/// the one INTRODUCE gave.
fn guest_port(page: &MappedPage, introduced: u32) -> u32 {
    match page.load_u32(ring::EVTCHN_PORT) {
        0 => introduced,
        p => p,
    }
}

/// Zeroes the indices and the error field; a guest waiting in the
/// reconnection handshake (dom0less guests start so) is told it is
/// connected. Returns true if the guest must be signalled.
fn reset_page(page: &MappedPage) -> bool {
    ring::reset_indices(page);
    page.store_u32(ring::ERROR, ring::ERROR_NONE);
    if page.load_u32(ring::CONNECTION) == ring::RECONNECT {
        page.store_u32(ring::CONNECTION, ring::CONNECTED);
        return true;
    }
    false
}

/// Why the Xen side could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No event channel or grant interface: no Xen here (socket only).
    #[error("{0}")]
    NoXen(XenError),
    /// The domain-state backend asked for cannot be used.
    #[error("{0}")]
    DomainState(#[from] ChooseError),
}

/// Maps a failure of the hypervisor interface to a protocol error (codes
/// outside the table become EINVAL, as in C).
pub fn xs_error(e: &XenError) -> XsError {
    match e.errno() {
        Some(2) => XsError::Enoent,
        Some(13) => XsError::Eacces,
        Some(12) => XsError::Enomem,
        _ => XsError::Einval,
    }
}

impl Xen {
    /// Opens the event channel and grant interfaces (required), then the
    /// domain-state backend: the one `cfg.strategy` names, or, without
    /// one, the best this host offers (see [`crate::domain_state::choose`]);
    /// binds `VIRQ_DOM_EXC` when the backend learns of changes there.
    pub fn open(cfg: &XenConfig) -> Result<Xen, OpenError> {
        Xen::open_with(cfg, None)
    }

    /// [`Xen::open`] after a live update: the event-channel handle is the
    /// descriptor `evtchn_fd` the binary before left open, with the ring
    /// ports still bound through it (`xenevtchn_fdopen`); the domain-state
    /// backend binds its own ports again (the binary before unbound them).
    pub fn open_inherited(cfg: &XenConfig, evtchn_fd: OwnedFd) -> Result<Xen, OpenError> {
        Xen::open_with(cfg, Some(evtchn_fd))
    }

    fn open_with(cfg: &XenConfig, inherited: Option<OwnedFd>) -> Result<Xen, OpenError> {
        let libs = XenLibs::new(cfg.lib_dir.as_deref());
        let was_inherited = inherited.is_some();
        let evtchn = match inherited {
            None => libs.evtchn(),
            Some(fd) => libs.evtchn_inherited(fd),
        }
        .map_err(OpenError::NoXen)?;
        let mut evtchn = evtchn;
        if was_inherited {
            // Closed at the next exec unless a live update keeps it.
            evtchn.keep_across_exec(false).map_err(|source| {
                OpenError::NoXen(XenError::Call {
                    call: "fcntl(F_SETFD)",
                    source,
                })
            })?;
        }
        let gnttab = libs.gnttab().map_err(OpenError::NoXen)?;
        let state = crate::domain_state::choose(cfg.strategy, &libs, &evtchn)?;
        let virq = if state.needs_virq() {
            match evtchn.bind_virq(xen_stable::VIRQ_DOM_EXC) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::error!(
                        "cannot bind VIRQ_DOM_EXC ({e}): domain deaths will not be noticed \
                         (is another xenstored running?)"
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok(Xen {
            state,
            evtchn,
            gnttab,
            virq,
            by_port: HashMap::new(),
            by_domid: HashMap::new(),
            served: Served::new(),
        })
    }

    /// The domain-state backend's `--domain-state` name.
    pub fn domain_state(&self) -> &'static str {
        self.state.name()
    }

    /// The event-channel descriptor to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.evtchn.fd()
    }

    /// True if a port is pending now (non-blocking check).
    pub fn has_pending(&self) -> bool {
        let fd = self.evtchn.fd();
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
    }

    /// The next pending port (masked until [`Xen::unmask`]).
    pub fn pending(&mut self) -> Result<u32, XenError> {
        self.evtchn.pending()
    }

    /// Re-enables a port.
    pub fn unmask(&mut self, port: u32) {
        if let Err(e) = self.evtchn.unmask(port) {
            tracing::warn!("unmask {port}: {e}");
        }
    }

    /// True if `port` is the `VIRQ_DOM_EXC` port.
    pub fn is_virq(&self, port: u32) -> bool {
        self.virq == Some(port)
    }

    /// The connection of a bound ring port.
    pub fn conn_of_port(&self, port: u32) -> Option<ConnId> {
        self.by_port.get(&port).copied()
    }

    /// The connection of a domain's ring (bound or parked).
    pub fn conn_of_domain(&self, domid: u32) -> Option<ConnId> {
        self.by_domid.get(&domid).copied()
    }

    /// Signals the guest of `port`.
    pub fn notify(&mut self, port: u32) {
        if let Err(e) = self.evtchn.notify(port) {
            tracing::debug!("notify {port}: {e}");
        }
    }

    /// The domains that exist now (the feed lists every domain once after
    /// `VIRQ_DOM_EXC` is bound; the list lists them all). Used once at
    /// start-up.
    pub fn existing_domains(&mut self) -> Vec<(u32, xen_stable::DomainInfo)> {
        if self.state.needs_virq() && self.virq.is_none() {
            return Vec::new();
        }
        self.state.existing()
    }

    /// At start-up: a ring for `domid` if its ring page names its event
    /// channel (dom0less and Hyperlaunch guests are built so, with no
    /// INTRODUCE to come). `Ok(None)` if the page names no port.
    pub fn adopt(
        &mut self,
        domid: u32,
        features: u32,
        conn: ConnId,
    ) -> Result<Option<RingLink>, XsError> {
        let page = self.gnttab.map_ring(domid).map_err(|e| xs_error(&e))?;
        if page.load_u32(ring::EVTCHN_PORT) == 0 {
            return Ok(None);
        }
        drop(page);
        self.attach(domid, 0, features, conn).map(Some)
    }

    /// A new ring for `domid`: maps its page, binds its event channel (the
    /// guest's `remote_port`, unless the page names another), advertises
    /// `features` and records the domain as served by `conn`.
    pub fn attach(
        &mut self,
        domid: u32,
        remote_port: u32,
        features: u32,
        conn: ConnId,
    ) -> Result<RingLink, XsError> {
        let page = self.gnttab.map_ring(domid).map_err(|e| {
            tracing::warn!("INTRODUCE {domid}: {e}");
            xs_error(&e)
        })?;
        let remote = guest_port(&page, remote_port);
        let port = self.evtchn.bind_interdomain(domid, remote).map_err(|e| {
            tracing::warn!("INTRODUCE {domid}: {e}");
            xs_error(&e)
        })?;
        let kick = self.serve_ring(domid, port, &page, features, conn);
        let identity = self.state.identity(domid);
        self.served.insert(domid, identity);
        if kick {
            self.notify(port);
        }
        self.state.track(&mut self.evtchn, domid);
        Ok(RingLink::new(domid, port, page, features))
    }

    /// A ring page freshly bound to `port`: the features advertised, the
    /// indices reset, the port and domain mapped to `conn`. Returns true
    /// if the guest must be signalled (see [`reset_page`]).
    fn serve_ring(
        &mut self,
        domid: u32,
        port: u32,
        page: &MappedPage,
        features: u32,
        conn: ConnId,
    ) -> bool {
        page.store_u32(ring::SERVER_FEATURES, features);
        let kick = reset_page(page);
        self.by_port.insert(port, conn);
        self.by_domid.insert(domid, conn);
        kick
    }

    /// Re-INTRODUCE of a domain that has a ring: only the event channel is
    /// bound again (and the indices reset). If binding fails the ring is
    /// parked (`port` is `None`): still mapped, served again by the next
    /// INTRODUCE that binds (or gone at RELEASE or death).
    pub fn rebind(
        &mut self,
        link: &mut RingLink,
        remote_port: u32,
        conn: ConnId,
    ) -> Result<u32, XsError> {
        let domid = link.domid;
        if let Some(old) = link.port.take() {
            let _ = self.evtchn.unbind(old);
            self.by_port.remove(&old);
        }
        let remote = guest_port(&link.page, remote_port);
        let port = match self.evtchn.bind_interdomain(domid, remote) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("INTRODUCE {domid}: binding port {remote}: {e}");
                return Err(xs_error(&e));
            }
        };
        link.port = Some(port);
        link.broken = false;
        self.by_port.insert(port, conn);
        if reset_page(&link.page) {
            self.notify(port);
        }
        Ok(port)
    }

    /// What a pending port that belongs to the domain-state backend says
    /// (`None`: not one of its ports).
    pub fn backend_port(&mut self, port: u32) -> Option<Vec<Change>> {
        self.state.on_port(port, &self.served)
    }

    /// Serves the local domain's own ring (xenfs `xsd_kva`/`xsd_port`):
    /// not grant-mapped but mapped from the file, its port bound to our own
    /// domain.
    pub fn attach_local(
        &mut self,
        cfg: &XenConfig,
        domid: u32,
        features: u32,
        conn: ConnId,
    ) -> Result<RingLink, String> {
        let page = xen_stable::dom0::map_kva(&cfg.xsd_kva)
            .map_err(|e| format!("{}: {e}", cfg.xsd_kva.display()))?;
        let remote = match cfg.event {
            Some(p) => p,
            None => xen_stable::dom0::read_port(&cfg.xsd_port)
                .map_err(|e| format!("{}: {e}", cfg.xsd_port.display()))?,
        };
        let port = self
            .evtchn
            .bind_interdomain(domid, remote)
            .map_err(|e| format!("binding the local ring's port {remote}: {e}"))?;
        let _ = self.serve_ring(domid, port, &page, features, conn);
        self.notify(port);
        Ok(RingLink::new(domid, port, page, features))
    }

    /// Forgets a domain's ring: unbinds its port (the page is unmapped
    /// when the caller drops the link).
    pub fn detach(&mut self, domid: u32, port: Option<u32>) {
        if self.served.remove(&domid).is_some() {
            self.state.untrack(&mut self.evtchn, domid);
        }
        self.by_domid.remove(&domid);
        if let Some(port) = port {
            self.by_port.remove(&port);
            if let Err(e) = self.evtchn.unbind(port) {
                tracing::debug!("unbind {port}: {e}");
            }
        }
    }

    /// `VIRQ_DOM_EXC`: what changed among the domains with a ring and
    /// those the store names (`named`, `all_named`: see
    /// [`crate::domain_state::Known`]).
    pub fn changes(
        &mut self,
        named: &dyn Fn(u32) -> bool,
        all_named: &dyn Fn() -> Vec<u32>,
    ) -> Vec<Change> {
        self.ask(named, all_named, |state, known| state.on_virq(known))
    }

    /// Asks the domain-state backend `question` about the domains with a
    /// ring and those the store names.
    fn ask(
        &mut self,
        named: &dyn Fn(u32) -> bool,
        all_named: &dyn Fn() -> Vec<u32>,
        question: impl FnOnce(&mut dyn DomainState, &crate::domain_state::Known) -> Vec<Change>,
    ) -> Vec<Change> {
        let known = crate::domain_state::Known {
            served: &self.served,
            named,
            all_named,
        };
        question(self.state.as_mut(), &known)
    }

    /// Whether a domain exists in the hypervisor; when the backend cannot
    /// tell, only domains with a ring are known.
    pub fn domain_exists(&mut self, domid: u32) -> bool {
        if domid >= xenstore_proto::DOMID_FIRST_RESERVED {
            return false;
        }
        self.state
            .exists(domid)
            .unwrap_or_else(|| self.by_domid.contains_key(&domid))
    }
}

/// Live update: what crosses `exec` and what is made again.
impl Xen {
    /// Why guests cannot be handed to the next binary, if they cannot:
    /// this host's libxenevtchn has no `xenevtchn_fdopen`.
    pub fn hand_over_refused(&self) -> Option<String> {
        (!self.evtchn.can_be_inherited()).then(|| {
            "libxenevtchn.so.1 has no xenevtchn_fdopen (VERS_1.2, Xen 4.15 and later): \
             the event channels of the guests cannot be handed to the next binary"
                .to_string()
        })
    }

    /// The event-channel descriptor (the stream's GLOBAL `evtchn-fd`).
    pub fn evtchn_raw_fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.evtchn.fd().as_raw_fd()
    }

    /// The identity to hand over with a served domain's ring (the
    /// stream's `unique-id`): only a hypervisor `unique_id`.
    pub fn unique_id_of(&self, domid: u32) -> Option<u64> {
        if !self.state.identity_is_unique_id() {
            return None;
        }
        self.served.get(&domid).copied().flatten()
    }

    /// Unbinds a ring's port that is not handed over (a broken ring's).
    pub fn unbind_port(&mut self, port: u32) {
        self.by_port.remove(&port);
        if let Err(e) = self.evtchn.unbind(port) {
            tracing::debug!("unbind {port}: {e}");
        }
    }

    /// Right before `exec`: the event-channel descriptor is kept open
    /// across it (the rings' ports stay bound through it); the
    /// domain-state backend's own ports and `VIRQ_DOM_EXC` are unbound, as
    /// C xenstored does (the next binary binds them again: their numbers
    /// are not in the stream, and a second bind of the VIRQ would fail).
    pub fn before_exec(&mut self) -> std::io::Result<()> {
        self.evtchn.keep_across_exec(true)?;
        if let Some(p) = self.virq.take() {
            if let Err(e) = self.evtchn.unbind(p) {
                tracing::warn!("unbind VIRQ_DOM_EXC port {p}: {e}");
            }
        }
        self.state.release_ports(&mut self.evtchn);
        Ok(())
    }

    /// The `exec` failed: as before [`Xen::before_exec`].
    pub fn exec_failed(&mut self) {
        if let Err(e) = self.evtchn.keep_across_exec(false) {
            tracing::warn!("event channel descriptor: {e}");
        }
        if self.state.needs_virq() && self.virq.is_none() {
            match self.evtchn.bind_virq(xen_stable::VIRQ_DOM_EXC) {
                Ok(p) => self.virq = Some(p),
                Err(e) => tracing::error!(
                    "cannot bind VIRQ_DOM_EXC again ({e}): domain deaths will not be noticed"
                ),
            }
        }
        let served: Vec<u32> = self.served.keys().copied().collect();
        for d in served {
            self.state.track(&mut self.evtchn, d);
        }
    }

    /// A ring handed over by the binary before: its page mapped again
    /// (grant entry 1, or the local domain's `xsd_kva` when `local` is
    /// given), its port (`None`: parked or broken) still bound through the
    /// inherited handle. The indices are left as they are: the guest's
    /// bytes in flight stay. `identity` is the one recorded by the binary
    /// before (else asked of the backend now).
    pub fn restore_ring(
        &mut self,
        domid: u32,
        port: Option<u32>,
        local: Option<&XenConfig>,
        identity: Option<u64>,
        features: u32,
        conn: ConnId,
    ) -> Result<RingLink, String> {
        let page = match local {
            Some(cfg) => xen_stable::dom0::map_kva(&cfg.xsd_kva)
                .map_err(|e| format!("{}: {e}", cfg.xsd_kva.display()))?,
            None => self
                .gnttab
                .map_ring(domid)
                .map_err(|e| format!("mapping the ring of domain {domid}: {e}"))?,
        };
        if let Some(p) = port {
            self.by_port.insert(p, conn);
        }
        self.by_domid.insert(domid, conn);
        if local.is_none() {
            let identity = identity.or_else(|| self.state.identity(domid));
            self.served.insert(domid, identity);
            self.state.track(&mut self.evtchn, domid);
        }
        Ok(RingLink {
            domid,
            port,
            page,
            features,
            broken: false,
        })
    }

    /// A domain whose ring could not be mapped again: still served (its
    /// death is reported), with no ring.
    pub fn restore_unmapped(&mut self, domid: u32, identity: Option<u64>) {
        let identity = identity.or_else(|| self.state.identity(domid));
        self.served.insert(domid, identity);
        self.state.track(&mut self.evtchn, domid);
    }

    /// Every domain that matters looked at once (after a live update).
    pub fn check_all(
        &mut self,
        named: &dyn Fn(u32) -> bool,
        all_named: &dyn Fn() -> Vec<u32>,
    ) -> Vec<Change> {
        self.ask(named, all_named, |state, known| state.check_all(known))
    }
}

/// The store's view of which domains exist: the hypervisor's, when there is
/// one.
pub struct Oracle<'a>(std::cell::RefCell<Option<&'a mut Xen>>);

impl<'a> Oracle<'a> {
    /// An oracle over `xen` (none: no domain exists beyond the store's).
    pub fn new(xen: Option<&'a mut Xen>) -> Oracle<'a> {
        Oracle(std::cell::RefCell::new(xen))
    }
}

impl xenstore_store::DomainOracle for Oracle<'_> {
    fn exists(&self, domid: u32) -> bool {
        match self.0.try_borrow_mut() {
            Ok(mut x) => x.as_mut().is_some_and(|x| x.domain_exists(domid)),
            Err(_) => false,
        }
    }
}
