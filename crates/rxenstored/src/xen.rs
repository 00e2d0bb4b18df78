//! Guests: ring connections over event channels, through `xen-stable`.
//!
//! * One event-channel handle for everything: its descriptor is a single
//!   source of the event loop, whatever the number of domains. A pending
//!   port names the ring to serve (a map lookup, never a scan of all
//!   rings), or `VIRQ_DOM_EXC`.
//! * On `VIRQ_DOM_EXC` the changed-domain feed (libxenmanage) is drained:
//!   a shut-down domain fires `@releaseDomain/<domid>` once (generic
//!   `@releaseDomain` once per batch), a dead or vanished domain (or one
//!   whose `unique_id` changed: domid reused) is torn down.
//! * A ring is read with the barrier discipline of `xenstore_proto::ring`;
//!   indices out of range or a header announcing more than 4096 bytes mark
//!   the connection broken: the error field says why (when the ERROR feature
//!   was advertised), its watches and transactions go, and it is never read
//!   again, while the domain stays introduced until it dies or is released.

use std::collections::{HashMap, VecDeque};
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use xen_stable::domlist::DomainList;
use xen_stable::libs::{BitmapView, Evtchn, Gnttab, Manage, XenLibs};
use xen_stable::{DomainStates, EventChannels, GrantMapper, MappedPage, XenError};
use xenstore_proto::ring::{self, RingPage};
use xenstore_proto::{feature, Decoder, XsError};
use xenstore_store::ConnId;

/// Bytes queued for a guest above which its requests are not read.
pub const RING_OUT_HIGH: usize = 256 * 1024;
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
    /// How deaths are found on `VIRQ_DOM_EXC` (`None`: the best this host
    /// offers).
    pub strategy: Option<Strategy>,
}

/// How the daemon learns which domain changed state on `VIRQ_DOM_EXC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Drain libxenmanage's changed-domain feed: cost independent of the
    /// number of domains.
    #[default]
    Poll,
    /// Query every domain served (what oxenstored does with libxenctrl):
    /// one call per domain per event. Simulator only, for comparison.
    Legacy,
    /// One call for a 4 KiB shutdown|dying bitmap, then a query per set bit
    /// of a served domain. Simulator only.
    Bitmap,
    /// The same bitmap read from a page the hypervisor keeps mapped: no
    /// call to find candidates. Simulator only.
    Mapped,
    /// A death event channel bound per domain: the port names the domain.
    /// Simulator only.
    Channel,
    /// Before Xen 4.21: the list of all domains
    /// (`XEN_SYSCTL_getdomaininfolist` through libxencall), diffed against
    /// the domains served; its layout is chosen by hypervisor version.
    DomainList,
    /// No domain state: deaths only through RELEASE.
    NoState,
}

/// One guest's ring connection.
pub struct Ring {
    /// The domain.
    pub domid: u32,
    /// Its connection in the store.
    pub conn: ConnId,
    /// Our local port.
    pub port: u32,
    page: MappedPage,
    /// Requests read but not yet handled.
    pub decoder: Decoder,
    /// Replies and events not yet in the ring.
    pub out: VecDeque<u8>,
    /// Given up on (error field written); never read again.
    pub broken: bool,
    features: u32,
}

impl Ring {
    fn new(domid: u32, conn: ConnId, port: u32, page: MappedPage, features: u32) -> Ring {
        Ring {
            domid,
            conn,
            port,
            page,
            decoder: Decoder::new(),
            out: VecDeque::new(),
            broken: false,
            features,
        }
    }

    /// Copies as much queued output into the ring as fits. Returns bytes
    /// moved, or the ring error.
    pub fn write_out(&mut self) -> Result<usize, ring::RingError> {
        let mut moved = 0;
        while !self.out.is_empty() {
            let (a, _) = self.out.as_slices();
            let n = ring::server_write(&self.page, a)?;
            if n == 0 {
                break;
            }
            self.out.drain(..n);
            moved += n;
        }
        Ok(moved)
    }

    /// True while the guest's requests should not be read: its replies
    /// are not being consumed, or unhandled input piles up. The guest's
    /// request ring then fills and it waits; nothing grows without bound.
    pub fn throttled(&self) -> bool {
        self.out.len() >= RING_OUT_HIGH || self.decoder.buffered() >= RING_IN_HIGH
    }

    /// Reads what the guest produced into the decoder, unless throttled.
    /// Returns bytes read.
    pub fn read_in(&mut self) -> Result<usize, ring::RingError> {
        let mut buf = [0u8; 1024];
        let mut total = 0;
        while !self.throttled() {
            let n = ring::server_read(&self.page, &mut buf)?;
            if n == 0 {
                break;
            }
            self.decoder.feed(&buf[..n]);
            total += n;
        }
        Ok(total)
    }

    /// Gives up on the ring, telling the guest why if it may know.
    pub fn break_with(&mut self, code: u32) {
        if !self.broken && self.features & feature::ERROR != 0 {
            self.page.store_u32(ring::ERROR, code);
        }
        self.broken = true;
        self.out.clear();
        self.decoder.clear();
    }
}

/// What the hypervisor said changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The domain shut down (first report since introduction or RESUME is
    /// the store's business).
    Shutdown(u32),
    /// The domain is dead, gone, or its domid was reused.
    Gone(u32),
}

/// The Xen side of the daemon.
pub struct Xen {
    strategy: Strategy,
    /// The mapped bitmap (strategy `Mapped`).
    bitmap: Option<BitmapView>,
    /// Death-channel port -> domain, and domain -> port (strategy `Channel`).
    death_ports: HashMap<u32, u32>,
    death_of: HashMap<u32, u32>,
    evtchn: Evtchn,
    gnttab: Gnttab,
    manage: Option<Manage>,
    domlist: Option<DomainList>,
    virq: Option<u32>,
    rings: HashMap<u32, Ring>,
    by_domid: HashMap<u32, u32>,
    by_conn: HashMap<ConnId, u32>,
    unique_ids: HashMap<u32, u64>,
}

/// Why the Xen side could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No event channel or grant interface: no Xen here (socket only).
    #[error("{0}")]
    NoXen(XenError),
    /// The domain-state backend asked for cannot be used.
    #[error("--domain-state: {0}")]
    DomainState(XenError),
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
    /// one, the best this host offers (see [`Xen::choose`]); binds
    /// `VIRQ_DOM_EXC` when there is a backend to ask on it.
    pub fn open(cfg: &XenConfig) -> Result<Xen, OpenError> {
        let libs = XenLibs::new(cfg.lib_dir.as_deref());
        let mut evtchn = libs.evtchn().map_err(OpenError::NoXen)?;
        let gnttab = libs.gnttab().map_err(OpenError::NoXen)?;
        let (strategy, manage, domlist) = Xen::choose(cfg.strategy, &libs)?;
        let virq = if strategy == Strategy::NoState {
            None
        } else {
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
        };
        let needs = |lib: &'static str, symbol: &'static str| {
            OpenError::DomainState(XenError::Symbol {
                lib,
                symbol,
                version: "XENSIM_1.0 (this --domain-state runs on the simulator only)",
            })
        };
        let mut manage = manage;
        let bitmap = match strategy {
            Strategy::Poll | Strategy::DomainList | Strategy::NoState => None,
            Strategy::Legacy if manage.as_ref().is_some_and(Manage::has_legacy_query) => None,
            Strategy::Legacy => return Err(needs("libxenmanage.so.1", "xensim_getinfo_single")),
            Strategy::Bitmap if manage.as_ref().is_some_and(Manage::has_bitmap) => None,
            Strategy::Bitmap => return Err(needs("libxenmanage.so.1", "xensim_dying_bitmap")),
            Strategy::Mapped => match manage.as_mut().map(Manage::map_dying_bitmap) {
                Some(Ok(v)) => Some(v),
                _ => return Err(needs("libxenmanage.so.1", "xensim_map_dying_bitmap")),
            },
            Strategy::Channel if evtchn.has_death_channels() && manage.is_some() => None,
            Strategy::Channel => {
                return Err(needs("libxenevtchn.so.1", "xensim_bind_death_channel"))
            }
        };
        Ok(Xen {
            strategy,
            bitmap,
            death_ports: HashMap::new(),
            death_of: HashMap::new(),
            evtchn,
            gnttab,
            manage,
            domlist,
            virq,
            rings: HashMap::new(),
            by_domid: HashMap::new(),
            by_conn: HashMap::new(),
            unique_ids: HashMap::new(),
        })
    }

    /// Picks the domain-state backend and says which in one log line.
    ///
    /// Without `--domain-state`: libxenmanage when it loads and the
    /// hypervisor answers it (Xen 4.21+, stable); otherwise the domain list
    /// through libxencall when the hypervisor's version is in the layout
    /// table (Xen 4.17 to 4.22); otherwise none (one error line: deaths
    /// are then noticed only through RELEASE, and only domains that have a
    /// ring count as existing, so that no right is ever granted to a domain
    /// that may not exist). A backend named on the command line that cannot
    /// be opened is an error.
    #[allow(clippy::type_complexity)]
    fn choose(
        asked: Option<Strategy>,
        libs: &XenLibs,
    ) -> Result<(Strategy, Option<Manage>, Option<DomainList>), OpenError> {
        let explicit = |e: XenError| OpenError::DomainState(e);
        match asked {
            Some(Strategy::NoState) => {
                tracing::warn!(
                    "domain state: none (--domain-state none): domain deaths are noticed only \
                     through RELEASE"
                );
                return Ok((Strategy::NoState, None, None));
            }
            Some(Strategy::DomainList) => {
                let l = libs.domain_list().map_err(explicit)?;
                log_domain_list(&l, "asked for with --domain-state");
                return Ok((Strategy::DomainList, None, Some(l)));
            }
            Some(s) => {
                let mut m = libs.manage().map_err(explicit)?;
                if s == Strategy::Poll {
                    usable(&mut m).map_err(explicit)?;
                    tracing::info!(
                        "domain state: libxenmanage's changed-domain feed (stable, Xen 4.21+), \
                         asked for with --domain-state"
                    );
                }
                return Ok((s, Some(m), None));
            }
            None => {}
        }
        let why_not_manage = match libs.manage() {
            Ok(mut m) => match usable(&mut m) {
                Ok(()) => {
                    tracing::info!(
                        "domain state: libxenmanage's changed-domain feed (stable interface of \
                         Xen 4.21+)"
                    );
                    return Ok((Strategy::Poll, Some(m), None));
                }
                Err(e) => format!("libxenmanage.so.1 loads but the hypervisor refuses it ({e})"),
            },
            Err(e) => e.to_string(),
        };
        match libs.domain_list() {
            Ok(l) => {
                log_domain_list(&l, &why_not_manage);
                Ok((Strategy::DomainList, None, Some(l)))
            }
            Err(e) => {
                tracing::error!(
                    "domain state: none: {why_not_manage}; {e}. Domain deaths will be noticed \
                     only through RELEASE, and only domains with a ring count as existing \
                     (guests cannot be given rights before INTRODUCE)"
                );
                Ok((Strategy::NoState, None, None))
            }
        }
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

    /// A ring by local port.
    pub fn ring_mut(&mut self, port: u32) -> Option<&mut Ring> {
        self.rings.get_mut(&port)
    }

    /// The local port of a connection's ring.
    pub fn port_of(&self, conn: ConnId) -> Option<u32> {
        self.by_conn.get(&conn).copied()
    }

    /// The ring of a domain, if it has one.
    pub fn ring_of_domain(&self, domid: u32) -> Option<u32> {
        self.by_domid.get(&domid).copied()
    }

    /// Signals the guest of `port`.
    pub fn notify(&mut self, port: u32) {
        if let Err(e) = self.evtchn.notify(port) {
            tracing::debug!("notify {port}: {e}");
        }
    }

    /// The domains that exist now, drained from the changed-domain feed
    /// (binding `VIRQ_DOM_EXC` marked every existing domain). Used once at
    /// start-up.
    pub fn existing_domains(&mut self) -> Vec<(u32, xen_stable::DomainInfo)> {
        let mut v = Vec::new();
        if let Some(l) = &mut self.domlist {
            match l.range(0, xen_stable::domlist::DOMID_FIRST_RESERVED - 1) {
                Ok(all) => return all.iter().map(|d| (d.domid, d.info())).collect(),
                Err(e) => {
                    tracing::warn!("listing domains at start-up: {e}");
                    return v;
                }
            }
        }
        if self.virq.is_none() {
            return v;
        }
        let Some(m) = &mut self.manage else {
            return v;
        };
        while let Ok(Some(x)) = m.poll_changed_domain() {
            v.push(x);
        }
        v
    }

    /// At start-up: serves `domid` if its ring page names its event channel
    /// (dom0less and Hyperlaunch guests are built so, with no INTRODUCE to
    /// come). `Ok(None)` if the page names no port.
    pub fn adopt(
        &mut self,
        domid: u32,
        features: u32,
        conn: ConnId,
    ) -> Result<Option<u32>, XsError> {
        let page = self.gnttab.map_ring(domid).map_err(|e| xs_error(&e))?;
        if page.load_u32(ring::EVTCHN_PORT) == 0 {
            return Ok(None);
        }
        drop(page);
        self.attach(domid, 0, features, conn).map(Some)
    }

    /// Maps `domid`'s ring and binds its event channel (the guest's
    /// `remote_port`, unless the page names another), advertising
    /// `features`. Returns the new ring's local port. For a domain that
    /// already has a ring, only the event channel is re-bound.
    pub fn attach(
        &mut self,
        domid: u32,
        remote_port: u32,
        features: u32,
        conn: ConnId,
    ) -> Result<u32, XsError> {
        if let Some(old) = self.by_domid.get(&domid).copied() {
            let Some(mut r) = self.rings.remove(&old) else {
                return Err(XsError::Einval);
            };
            let _ = self.evtchn.unbind(old);
            let page_port = r.page.load_u32(ring::EVTCHN_PORT);
            let remote = if page_port != 0 {
                page_port
            } else {
                remote_port
            };
            let port = self
                .evtchn
                .bind_interdomain(domid, remote)
                .map_err(|e| xs_error(&e))?;
            r.port = port;
            r.out.clear();
            r.decoder.clear();
            r.broken = false;
            self.by_domid.insert(domid, port);
            self.by_conn.insert(r.conn, port);
            if self.reset_page(&r.page) {
                self.notify(port);
            }
            self.rings.insert(port, r);
            return Ok(port);
        }
        let page = self.gnttab.map_ring(domid).map_err(|e| {
            tracing::warn!("INTRODUCE {domid}: {e}");
            xs_error(&e)
        })?;
        let page_port = page.load_u32(ring::EVTCHN_PORT);
        let remote = if page_port != 0 {
            page_port
        } else {
            remote_port
        };
        let port = self.evtchn.bind_interdomain(domid, remote).map_err(|e| {
            tracing::warn!("INTRODUCE {domid}: {e}");
            xs_error(&e)
        })?;
        page.store_u32(ring::SERVER_FEATURES, features);
        let kick = self.reset_page(&page);
        if let Some(m) = &mut self.manage {
            if let Ok(info) = m.get_domain_info(domid) {
                self.unique_ids.insert(domid, info.unique_id);
            }
        } else if let Some(l) = &mut self.domlist {
            if let Ok(Some(d)) = l.get(domid) {
                self.unique_ids.insert(domid, d.identity());
            }
        }
        self.register(Ring::new(domid, conn, port, page, features));
        if kick {
            self.notify(port);
        }
        if self.strategy == Strategy::Channel {
            match self.evtchn.bind_death_channel(domid) {
                Ok(dp) => {
                    self.death_ports.insert(dp, domid);
                    self.death_of.insert(domid, dp);
                }
                Err(e) => tracing::warn!("death channel of domain {domid}: {e}"),
            }
        }
        Ok(port)
    }

    /// The domain a death-channel port watches.
    pub fn death_port_domain(&self, port: u32) -> Option<u32> {
        self.death_ports.get(&port).copied()
    }

    /// After a domain's death channel fired: what happened to it.
    pub fn death_channel_change(&mut self, domid: u32) -> Option<Change> {
        self.followup(domid)
    }

    /// A query for one domain, classified.
    fn followup(&mut self, domid: u32) -> Option<Change> {
        let uid = self.unique_ids.get(&domid).copied();
        let m = self.manage.as_mut()?;
        match m.get_domain_info(domid) {
            Ok(info) => classify(domid, &info, uid),
            Err(e) if e.errno() == Some(3) => Some(Change::Gone(domid)),
            Err(e) => {
                tracing::warn!("domain {domid}: {e}");
                None
            }
        }
    }

    /// The bitmap designs: candidates are the served domains whose bit is
    /// set; each gets a follow-up query (the bitmap says neither which
    /// state nor which incarnation).
    fn bitmap_changes(&mut self) -> Vec<Change> {
        let bits = match self.strategy {
            Strategy::Mapped => match &self.bitmap {
                Some(v) => v.read(),
                None => return Vec::new(),
            },
            _ => match self.manage.as_mut().map(Manage::dying_bitmap) {
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    tracing::warn!("dying bitmap: {e}");
                    return Vec::new();
                }
                None => return Vec::new(),
            },
        };
        // Walk the set bits (512 words), not the domains served.
        let mut set = Vec::new();
        for (w, &word) in bits.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                let b = word.trailing_zeros();
                word &= word - 1;
                let d = w as u32 * 64 + b;
                if self.by_domid.contains_key(&d) {
                    set.push(d);
                }
            }
        }
        set.sort_unstable();
        set.into_iter().filter_map(|d| self.followup(d)).collect()
    }

    /// Serves the local domain's own ring (xenfs `xsd_kva`/`xsd_port`):
    /// not grant-mapped but mapped from the file, its port bound to our own
    /// domain. Returns the local port.
    pub fn attach_local(
        &mut self,
        cfg: &XenConfig,
        domid: u32,
        features: u32,
        conn: ConnId,
    ) -> Result<u32, String> {
        let page = xen_stable::dom0::map_kva(&cfg.xsd_kva)
            .map_err(|e| format!("{}: {e}", cfg.xsd_kva.display()))?;
        let remote = xen_stable::dom0::read_port(&cfg.xsd_port)
            .map_err(|e| format!("{}: {e}", cfg.xsd_port.display()))?;
        let port = self
            .evtchn
            .bind_interdomain(domid, remote)
            .map_err(|e| format!("binding the local ring's port {remote}: {e}"))?;
        page.store_u32(ring::SERVER_FEATURES, features);
        let _ = self.reset_page(&page);
        self.register(Ring::new(domid, conn, port, page, features));
        self.notify(port);
        Ok(port)
    }

    /// Zeroes the indices and the error field; a guest waiting in the
    /// reconnection handshake (dom0less guests start so) is told it is
    /// connected. Returns true if the guest must be signalled.
    fn reset_page(&mut self, page: &MappedPage) -> bool {
        ring::reset_indices(page);
        page.store_u32(ring::ERROR, ring::ERROR_NONE);
        if page.load_u32(ring::CONNECTION) == ring::RECONNECT {
            page.store_u32(ring::CONNECTION, ring::CONNECTED);
            return true;
        }
        false
    }

    fn register(&mut self, r: Ring) {
        self.by_domid.insert(r.domid, r.port);
        self.by_conn.insert(r.conn, r.port);
        self.rings.insert(r.port, r);
    }

    /// Forgets a domain's ring: unbinds its port and unmaps its page.
    pub fn detach(&mut self, domid: u32) -> Option<ConnId> {
        if let Some(dp) = self.death_of.remove(&domid) {
            self.death_ports.remove(&dp);
            let _ = self.evtchn.unbind(dp);
        }
        let port = self.by_domid.remove(&domid)?;
        self.unique_ids.remove(&domid);
        let r = self.rings.remove(&port)?;
        self.by_conn.remove(&r.conn);
        if let Err(e) = self.evtchn.unbind(port) {
            tracing::debug!("unbind {port}: {e}");
        }
        Some(r.conn)
    }

    /// What changed, by the configured strategy. Only domains with a ring
    /// matter.
    pub fn changes(&mut self) -> Vec<Change> {
        match self.strategy {
            Strategy::Poll => self.poll_changes(),
            Strategy::DomainList => self.list_changes(),
            Strategy::NoState => Vec::new(),
            Strategy::Legacy => self.scan_changes(),
            Strategy::Bitmap | Strategy::Mapped => self.bitmap_changes(),
            // Deaths arrive on their own ports; the VIRQ carries nothing.
            Strategy::Channel => Vec::new(),
        }
    }

    /// The legacy design: ask every domain served (O(N) per event).
    fn scan_changes(&mut self) -> Vec<Change> {
        let mut out = Vec::new();
        let Some(m) = &mut self.manage else {
            return out;
        };
        let mut domids: Vec<u32> = self.by_domid.keys().copied().collect();
        domids.sort_unstable();
        for d in domids {
            match m.legacy_getinfo(d) {
                Ok(i) if i.dying => out.push(Change::Gone(d)),
                Ok(i) if i.shutdown => out.push(Change::Shutdown(d)),
                Ok(_) => {}
                Err(e) if e.errno() == Some(3) => out.push(Change::Gone(d)),
                Err(e) => tracing::warn!("getinfo {d}: {e}"),
            }
        }
        out
    }

    /// Before 4.21: the list of domains from the lowest to the highest domid
    /// served (one call per 512 domains), diffed against the domains
    /// served.
    fn list_changes(&mut self) -> Vec<Change> {
        let Some(l) = &mut self.domlist else {
            return Vec::new();
        };
        let mut served: Vec<u32> = self.by_domid.keys().copied().collect();
        served.sort_unstable();
        let (Some(&lo), Some(&hi)) = (served.first(), served.last()) else {
            return Vec::new();
        };
        let listed = match l.range(lo, hi) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("{e}");
                return Vec::new();
            }
        };
        served
            .into_iter()
            .filter_map(|d| {
                let found = listed
                    .binary_search_by_key(&d, |x| x.domid)
                    .ok()
                    .and_then(|i| listed.get(i));
                classify_listed(d, found, self.unique_ids.get(&d).copied())
            })
            .collect()
    }

    /// The changed-domain feed (libxenmanage).
    fn poll_changes(&mut self) -> Vec<Change> {
        let mut out = Vec::new();
        let Some(m) = &mut self.manage else {
            return out;
        };
        loop {
            match m.poll_changed_domain() {
                Ok(Some((domid, info))) => {
                    if !self.by_domid.contains_key(&domid) {
                        continue;
                    }
                    if let Some(c) = classify(domid, &info, self.unique_ids.get(&domid).copied()) {
                        out.push(c);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("poll_changed_domain: {e}");
                    break;
                }
            }
        }
        out
    }

    /// Whether a domain exists in the hypervisor (libxenmanage, or the
    /// domain list; without either, only domains with a ring are known).
    pub fn domain_exists(&mut self, domid: u32) -> bool {
        if domid >= xenstore_proto::DOMID_FIRST_RESERVED {
            return false;
        }
        if let Some(m) = &mut self.manage {
            return m.get_domain_info(domid).is_ok_and(|i| i.exists());
        }
        if let Some(l) = &mut self.domlist {
            return match l.get(domid) {
                Ok(found) => found.is_some(),
                Err(e) => {
                    tracing::warn!("does domain {domid} exist? {e}");
                    self.by_domid.contains_key(&domid)
                }
            };
        }
        self.by_domid.contains_key(&domid)
    }
}

/// What a changed-domain report means for a domain we serve, whose
/// unique id we recorded at introduction (`known_uid`): gone if it no
/// longer exists, is DEAD, or is another domain now (domid reused: the
/// unique id differs); shut down if SHUTDOWN; nothing for DYING alone (wait
/// for DEAD) or a running domain.
pub fn classify(
    domid: u32,
    info: &xen_stable::DomainInfo,
    known_uid: Option<u64>,
) -> Option<Change> {
    let reused = known_uid.is_some_and(|u| u != 0 && u != info.unique_id);
    if !info.exists() || info.state & xen_stable::state::DEAD != 0 || reused {
        Some(Change::Gone(domid))
    } else if info.state & xen_stable::state::SHUTDOWN != 0 {
        Some(Change::Shutdown(domid))
    } else {
        None
    }
}

/// libxenmanage is usable if the hypervisor answers it: before Xen 4.21
/// the domctl under it does not exist and Xen answers EACCES.
fn usable(m: &mut Manage) -> Result<(), XenError> {
    m.get_domain_info(0).map(|_| ())
}

fn log_domain_list(l: &DomainList, why: &str) {
    let (major, minor) = l.version();
    tracing::info!(
        "domain state: XEN_SYSCTL_getdomaininfolist through libxencall.so.1 (Xen {major}.{minor}, \
         sysctl interface {:#x}, record layout from the table for Xen {}): {why}",
        l.layout().sysctl_version,
        xen_stable::domlist::known_range()
    );
}

/// What a domain-list record (or its absence) means for a domain we serve
/// whose identity (the handle) we recorded at introduction: gone if it is
/// absent, dying (the list does not tell dying from dead; C xenstored 4.17
/// and oxenstored tear down on it too) or another domain now; shut down if
/// SHUTDOWN.
pub fn classify_listed(
    domid: u32,
    listed: Option<&xen_stable::domlist::ListedDomain>,
    known_identity: Option<u64>,
) -> Option<Change> {
    let Some(d) = listed else {
        return Some(Change::Gone(domid));
    };
    let reused = known_identity.is_some_and(|u| u != 0 && u != d.identity());
    if d.dying() || reused {
        Some(Change::Gone(domid))
    } else if d.shutdown() {
        Some(Change::Shutdown(domid))
    } else {
        None
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

#[cfg(test)]
mod tests {
    use super::*;
    use xen_stable::state::{DEAD, DYING, EXIST, SHUTDOWN};
    use xen_stable::DomainInfo;

    fn info(state: u32, uid: u64) -> DomainInfo {
        DomainInfo {
            state,
            caps: 0,
            unique_id: uid,
        }
    }

    #[test]
    fn deaths_shutdowns_and_domid_reuse() {
        assert_eq!(classify(5, &info(EXIST, 9), Some(9)), None);
        assert_eq!(
            classify(5, &info(EXIST | SHUTDOWN, 9), Some(9)),
            Some(Change::Shutdown(5))
        );
        assert_eq!(classify(5, &info(EXIST | DYING, 9), Some(9)), None);
        assert_eq!(
            classify(5, &info(EXIST | DEAD, 9), Some(9)),
            Some(Change::Gone(5))
        );
        // Vanished: all zeros.
        assert_eq!(classify(5, &info(0, 0), Some(9)), Some(Change::Gone(5)));
        // The domid now names another domain, even a running one.
        assert_eq!(
            classify(5, &info(EXIST, 10), Some(9)),
            Some(Change::Gone(5))
        );
        assert_eq!(
            classify(5, &info(EXIST | SHUTDOWN, 10), Some(9)),
            Some(Change::Gone(5))
        );
        // No recorded id (no libxenmanage at introduction): no reuse check.
        assert_eq!(classify(5, &info(EXIST, 10), None), None);
    }
}
