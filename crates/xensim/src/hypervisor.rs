//! The simulated hypervisor's state: domains, event channels and the
//! domain-state interface (`XEN_DOMCTL_get_domain_state` as libxenmanage
//! exposes it), with the semantics of Xen 4.21+:
//!
//! * domids are handed out round-robin after the last one, skipping 0,
//!   within `1..=0x7FEF`; a specific free domid may be requested;
//! * each domain gets a `unique_id` never repeated during one run;
//! * life cycle: running, shutdown (with a reason), dying, dead, gone. A dead
//!   domain stays (a zombie) while something still maps its pages; it is
//!   gone when the last reference is dropped;
//! * `VIRQ_DOM_EXC` is global: only the handler domain (dom0 unless changed)
//!   may bind it, and only once (`EEXIST`); binding creates the
//!   changed-domain bitmap with **every existing domain marked**, unbinding
//!   frees it;
//! * a domain's bit is set on creation (no VIRQ), on shutdown completion,
//!   on reaching dead, and on final destruction (each with a VIRQ);
//! * `poll_changed_domain` returns the lowest set bit, clears it, and
//!   reports the domain's current state, or all zeros if it is gone;
//!   `ENOENT` when nothing is set or the bitmap does not exist; `EACCES`
//!   for a caller that is not the handler.
//!
//! Every hypervisor call is counted ([`Hypervisor::calls`]) so benchmarks
//! can report calls per event independently of the simulator's speed.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// First reserved domid; ordinary domids are below.
pub const DOMID_FIRST_RESERVED: u32 = 0x7FF0;
/// Highest domid the allocator hands out.
pub const DOMID_MAX: u32 = 0x7FEF;
/// The virtual IRQ raised when a domain changes state.
pub const VIRQ_DOM_EXC: u32 = 3;

/// State flags of `get_domain_info` / `poll_changed_domain` (the stable
/// interface's values).
pub use xen_stable::state;

/// Capability flags.
pub use xen_stable::caps;

/// An errno a hypercall can fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Errno {
    /// No such domain (control-domain caller).
    #[error("ESRCH")]
    Esrch,
    /// Nothing (more) changed.
    #[error("ENOENT")]
    Enoent,
    /// Not allowed.
    #[error("EACCES")]
    Eacces,
    /// Already bound.
    #[error("EEXIST")]
    Eexist,
    /// Not the VIRQ handler, or busy.
    #[error("EBUSY")]
    Ebusy,
    /// Bad argument.
    #[error("EINVAL")]
    Einval,
    /// Port not bound here.
    #[error("ENOTCONN")]
    Enotconn,
    /// No free domid or port.
    #[error("ENOSPC")]
    Enospc,
}

/// Why a domain shut down (`SHUTDOWN_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    /// Powered off.
    Poweroff = 0,
    /// Reboot requested.
    Reboot = 1,
    /// Suspended.
    Suspend = 2,
    /// Crashed.
    Crash = 3,
    /// Watchdog fired.
    Watchdog = 4,
}

/// Where a domain is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Running (or paused).
    Running,
    /// Shutdown completed.
    Shutdown(ShutdownReason),
    /// Being destroyed.
    Dying,
    /// Destroyed; kept while references remain.
    Dead,
}

/// What `get_domain_info` returns.
pub use xen_stable::DomainInfo;

/// One simulated domain.
#[derive(Debug, Clone)]
pub struct Domain {
    /// Its domid.
    pub domid: u32,
    /// Its unique id.
    pub unique_id: u64,
    /// Capabilities.
    pub caps: u32,
    /// Life-cycle state.
    pub life: Life,
    /// References that keep a dead domain around (ring mappings).
    pub refs: u32,
}

/// Size of one `struct xen_domctl_getdomaininfo` on x86_64, Xen 4.17-4.22.
pub const GETDOMAININFO_SIZE: usize = 112;

impl Domain {
    /// The hypervisor's `xen_domctl_getdomaininfo` record of this domain
    /// (the fields xenstored reads; the rest zero). The handle (the
    /// toolstack's UUID) is derived from the unique id; dom0's is all
    /// zeros, as in Xen.
    fn getdomaininfo(&self) -> [u8; GETDOMAININFO_SIZE] {
        let mut b = [0u8; GETDOMAININFO_SIZE];
        b[0..2].copy_from_slice(&(self.domid as u16).to_ne_bytes());
        let flags: u32 = match self.life {
            Life::Running => 1 << 5,
            Life::Shutdown(r) => (1 << 2) | ((r as u32 & 0xff) << 16),
            Life::Dying | Life::Dead => 1,
        } | if self.caps & caps::XENSTORE != 0 {
            1 << 7
        } else {
            0
        };
        b[4..8].copy_from_slice(&flags.to_ne_bytes());
        if self.domid != 0 {
            b[76..84].copy_from_slice(&self.unique_id.to_le_bytes());
            b[84..92].copy_from_slice(&(!self.unique_id).to_be_bytes());
        }
        b
    }

    fn info(&self) -> DomainInfo {
        let state = state::EXIST
            | match self.life {
                Life::Running => 0,
                Life::Shutdown(_) => state::SHUTDOWN,
                Life::Dying => state::DYING,
                Life::Dead => state::DEAD,
            };
        DomainInfo {
            state,
            caps: self.caps,
            unique_id: self.unique_id,
        }
    }
}

/// Counts of simulated hypervisor calls, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calls {
    /// `get_domain_info` (single-domain query).
    pub get_domain_info: u64,
    /// `poll_changed_domain`.
    pub poll_changed_domain: u64,
    /// Event-channel operations (bind, notify, unbind, unmask).
    pub evtchn: u64,
    /// Legacy per-domain `getinfo_single` (the unstable call oxenstored
    /// scans with; simulator only, for comparison).
    pub getinfo_single: u64,
    /// `dying_bitmap` (the proposed one-call bitmap; simulator only).
    pub dying_bitmap: u64,
    /// `XEN_SYSCTL_getdomaininfolist` (the pre-4.21 list of all domains).
    pub getdomaininfolist: u64,
    /// Bytes of domain records those calls wrote.
    pub getdomaininfolist_bytes: u64,
}

impl Calls {
    /// All domain-state calls.
    pub fn domain_state(&self) -> u64 {
        self.get_domain_info
            + self.poll_changed_domain
            + self.getinfo_single
            + self.dying_bitmap
            + self.getdomaininfolist
    }
}

/// Words of the shutdown|dying bitmap: one bit per domid below
/// [`DOMID_FIRST_RESERVED`], 4 KiB in all.
pub const DYING_BITMAP_WORDS: usize = 512;

/// What the legacy per-domain query says (the flags of
/// `xc_domain_getinfo`'s `xc_dominfo_t` that xenstored looks at).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegacyInfo {
    /// Dying or dead.
    pub dying: bool,
    /// Shut down.
    pub shutdown: bool,
    /// The shutdown reason, when shut down.
    pub shutdown_reason: u32,
}

/// One end of an event channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binding {
    /// Allocated, waiting for `remote` to bind to it.
    Unbound { remote: u32 },
    /// Connected to `(domid, port)`.
    Interdomain { domid: u32, port: u32 },
    /// Bound to a virtual IRQ.
    Virq(u32),
    /// A death channel watching a domain (design under evaluation).
    Death { domid: u32 },
}

#[derive(Debug, Default)]
struct Ports {
    bound: BTreeMap<u32, Binding>,
    masked: std::collections::BTreeSet<u32>,
    /// Raised while masked: delivered at unmask.
    masked_pending: std::collections::BTreeSet<u32>,
    pending: VecDeque<u32>,
    queued: std::collections::BTreeSet<u32>,
}

/// The simulated hypervisor.
#[derive(Debug)]
pub struct Hypervisor {
    domains: BTreeMap<u32, Domain>,
    /// Shutdown|dying|dead bits, kept in step with every transition.
    dying: Box<[u64; DYING_BITMAP_WORDS]>,
    /// Per-domain death channels: domid -> (watcher domain, its port).
    death_channels: HashMap<u32, Vec<(u32, u32)>>,
    last_domid: u32,
    uid: u64,
    virq_handler: u32,
    virq: Option<(u32, u32)>,
    changed: Option<Vec<u64>>,
    ports: HashMap<u32, Ports>,
    calls: Calls,
    version: (u32, u32),
}

const BITMAP_WORDS: usize = (DOMID_FIRST_RESERVED as usize).div_ceil(64);

impl Hypervisor {
    /// A hypervisor with dom0 (control, hardware) running. `seed` starts
    /// the unique-id sequence (Xen seeds it from the boot clock).
    pub fn new(seed: u64) -> Hypervisor {
        let mut h = Hypervisor {
            domains: BTreeMap::new(),
            dying: Box::new([0u64; DYING_BITMAP_WORDS]),
            death_channels: HashMap::new(),
            last_domid: 0,
            uid: seed | 1,
            virq_handler: 0,
            virq: None,
            changed: None,
            ports: HashMap::new(),
            calls: Calls::default(),
            version: (4, 21),
        };
        let uid = h.next_uid();
        h.domains.insert(
            0,
            Domain {
                domid: 0,
                unique_id: uid,
                caps: caps::CONTROL | caps::HARDWARE,
                life: Life::Running,
                refs: 0,
            },
        );
        h
    }

    fn next_uid(&mut self) -> u64 {
        // xorshift64: period 2^64 - 1, never 0.
        let mut x = self.uid;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.uid = x;
        x
    }

    /// Makes this hypervisor behave as Xen `major.minor` (default 4.21):
    /// before 4.21 the stable domain-state domctl does not exist (every
    /// `get_domain_info` and poll fails with EACCES, as Xen's domctl
    /// interface-version check answers), and the sysctl interface version
    /// is that release's.
    pub fn set_version(&mut self, major: u32, minor: u32) {
        self.version = (major, minor);
    }

    /// `XENVER_version`: `major << 16 | minor`.
    pub fn xen_version(&self) -> u32 {
        (self.version.0 << 16) | self.version.1
    }

    /// Whether `XEN_DOMCTL_get_domain_state` exists (Xen 4.21+).
    fn has_domain_state(&self) -> bool {
        self.version >= (4, 21)
    }

    /// `XEN_SYSCTL_INTERFACE_VERSION` of the simulated release.
    pub fn sysctl_interface_version(&self) -> u32 {
        match self.version {
            (4, m) if m <= 13 => 0x12,
            (4, 14) | (4, 15) => 0x13,
            (4, 16) => 0x14,
            (4, 17..=20) => 0x15,
            _ => 0x16,
        }
    }

    /// The call counters.
    pub fn calls(&self) -> Calls {
        self.calls
    }

    /// A domain, if it exists (including zombies).
    pub fn domain(&self, domid: u32) -> Option<&Domain> {
        self.domains.get(&domid)
    }

    /// All existing domains.
    pub fn domains(&self) -> impl Iterator<Item = &Domain> {
        self.domains.values()
    }

    /// What `get_domain_info` would answer, without counting a call (for
    /// checks by tests and the simulator's own reports).
    pub fn clone_info(&self, domid: u32) -> DomainInfo {
        self.domains
            .get(&domid)
            .map(Domain::info)
            .unwrap_or_default()
    }

    /// Updates the shutdown|dying bit of `domid` from its life.
    fn refresh_dying(&mut self, domid: u32) {
        let on = self
            .domains
            .get(&domid)
            .is_some_and(|d| !matches!(d.life, Life::Running));
        let (w, b) = (domid as usize / 64, domid % 64);
        if let Some(word) = self.dying.get_mut(w) {
            if on {
                *word |= 1u64 << b;
            } else {
                *word &= !(1u64 << b);
            }
        }
    }

    fn mark(&mut self, domid: u32, virq: bool) {
        self.refresh_dying(domid);
        if let Some(bits) = &mut self.changed {
            let i = domid as usize;
            if let Some(w) = bits.get_mut(i / 64) {
                *w |= 1u64 << (i % 64);
            }
        }
        if virq {
            self.raise_virq();
            // The same transitions (shutdown, dead, gone) fire the
            // domain's death channels.
            let watchers = self.death_channels.get(&domid).cloned().unwrap_or_default();
            for (dom, port) in watchers {
                self.set_pending(dom, port);
            }
        }
    }

    fn raise_virq(&mut self) {
        if let Some((dom, port)) = self.virq {
            self.set_pending(dom, port);
        }
    }

    /// Creates a domain: the next free domid after the last one (or
    /// `want`), a fresh unique id. Marks it changed (no VIRQ).
    pub fn create_domain(&mut self, want: Option<u32>, caps: u32) -> Result<u32, Errno> {
        let domid = match want {
            Some(d) if d == 0 || d > DOMID_MAX => return Err(Errno::Einval),
            Some(d) if self.domains.contains_key(&d) => return Err(Errno::Eexist),
            Some(d) => d,
            None => {
                let mut d = self.last_domid;
                let mut found = None;
                for _ in 0..DOMID_MAX {
                    d = if d >= DOMID_MAX { 1 } else { d + 1 };
                    if !self.domains.contains_key(&d) {
                        found = Some(d);
                        break;
                    }
                }
                found.ok_or(Errno::Enospc)?
            }
        };
        self.last_domid = domid;
        let unique_id = self.next_uid();
        self.domains.insert(
            domid,
            Domain {
                domid,
                unique_id,
                caps,
                life: Life::Running,
                refs: 0,
            },
        );
        self.mark(domid, false);
        Ok(domid)
    }

    /// The domain's shutdown completes (poweroff, reboot, crash, ...).
    pub fn shutdown(&mut self, domid: u32, why: ShutdownReason) -> Result<(), Errno> {
        let d = self.domains.get_mut(&domid).ok_or(Errno::Esrch)?;
        if d.life != Life::Running {
            return Err(Errno::Einval);
        }
        d.life = Life::Shutdown(why);
        self.mark(domid, true);
        Ok(())
    }

    /// Undoes a suspend (the hypervisor does not mark the domain changed;
    /// the toolstack sends RESUME to xenstored).
    pub fn resume(&mut self, domid: u32) -> Result<(), Errno> {
        let d = self.domains.get_mut(&domid).ok_or(Errno::Esrch)?;
        if !matches!(d.life, Life::Shutdown(_)) {
            return Err(Errno::Einval);
        }
        d.life = Life::Running;
        self.refresh_dying(domid);
        Ok(())
    }

    /// `xl destroy`: dying, then dead (VIRQ); gone once nothing maps it.
    pub fn destroy(&mut self, domid: u32) -> Result<(), Errno> {
        if domid == 0 {
            return Err(Errno::Einval);
        }
        let d = self.domains.get_mut(&domid).ok_or(Errno::Esrch)?;
        if matches!(d.life, Life::Dying | Life::Dead) {
            return Ok(());
        }
        d.life = Life::Dead;
        let gone = d.refs == 0;
        // Its event channels close.
        self.close_ports(domid);
        self.mark(domid, true);
        if gone {
            self.domains.remove(&domid);
            self.mark(domid, true);
            self.death_channels.remove(&domid);
        }
        Ok(())
    }

    /// Starts destruction without finishing it (a domain stuck dying).
    pub fn begin_destroy(&mut self, domid: u32) -> Result<(), Errno> {
        let d = self.domains.get_mut(&domid).ok_or(Errno::Esrch)?;
        d.life = Life::Dying;
        self.refresh_dying(domid);
        Ok(())
    }

    /// A mapping of the domain's page was taken (keeps a zombie).
    pub fn take_ref(&mut self, domid: u32) -> Result<(), Errno> {
        let d = self.domains.get_mut(&domid).ok_or(Errno::Esrch)?;
        if matches!(d.life, Life::Dead) {
            return Err(Errno::Esrch);
        }
        d.refs += 1;
        Ok(())
    }

    /// A mapping was dropped; a dead domain with no references is gone.
    pub fn drop_ref(&mut self, domid: u32) {
        let gone = match self.domains.get_mut(&domid) {
            Some(d) => {
                d.refs = d.refs.saturating_sub(1);
                d.life == Life::Dead && d.refs == 0
            }
            None => false,
        };
        if gone {
            self.domains.remove(&domid);
            self.mark(domid, true);
            self.death_channels.remove(&domid);
        }
    }

    // ----- domain state (libxenmanage) -------------------------------------

    /// `xenmanage_get_domain_info`.
    pub fn get_domain_info(&mut self, domid: u32) -> Result<DomainInfo, Errno> {
        self.calls.get_domain_info += 1;
        if !self.has_domain_state() {
            return Err(Errno::Eacces);
        }
        if domid >= DOMID_FIRST_RESERVED {
            return Err(Errno::Einval);
        }
        self.domains
            .get(&domid)
            .map(Domain::info)
            .ok_or(Errno::Esrch)
    }

    /// `xenmanage_poll_changed_domain`, called from domain `caller`.
    pub fn poll_changed_domain(&mut self, caller: u32) -> Result<(u32, DomainInfo), Errno> {
        self.calls.poll_changed_domain += 1;
        if caller != self.virq_handler || !self.has_domain_state() {
            return Err(Errno::Eacces);
        }
        let Some(bits) = &mut self.changed else {
            return Err(Errno::Enoent);
        };
        let Some((w, word)) = bits.iter_mut().enumerate().find(|(_, w)| **w != 0) else {
            return Err(Errno::Enoent);
        };
        let b = word.trailing_zeros();
        *word &= !(1u64 << b);
        let domid = (w * 64) as u32 + b;
        let info = self
            .domains
            .get(&domid)
            .map(Domain::info)
            .unwrap_or_default();
        Ok((domid, info))
    }

    // ----- domain state before 4.21 (unstable sysctl) ----------------------

    /// `XEN_SYSCTL_getdomaininfolist`: up to `max` records of the domains
    /// with domid >= `first`, in domid order, each the 112-byte x86_64
    /// `struct xen_domctl_getdomaininfo` of Xen 4.17 to 4.22 (domain u16
    /// at 0, flags u32 at 4, handle at 76; the rest zero here). A caller
    /// that passes another release's sysctl interface version is refused
    /// with EACCES, as Xen does.
    pub fn getdomaininfolist(
        &mut self,
        interface_version: u32,
        first: u32,
        max: u32,
    ) -> Result<Vec<u8>, Errno> {
        self.calls.getdomaininfolist += 1;
        if interface_version != self.sysctl_interface_version() {
            return Err(Errno::Eacces);
        }
        let mut out = Vec::new();
        for d in self
            .domains
            .range(first..)
            .take(max as usize)
            .map(|(_, d)| d)
        {
            out.extend_from_slice(&d.getdomaininfo());
        }
        self.calls.getdomaininfolist_bytes += out.len() as u64;
        Ok(out)
    }

    // ----- designs under evaluation (simulator only) ----------------------

    /// The legacy per-domain query (`xc_domain_getinfo_single`): one call
    /// per domain. Not a stable interface; offered for comparison only.
    pub fn getinfo_single(&mut self, domid: u32) -> Result<LegacyInfo, Errno> {
        self.calls.getinfo_single += 1;
        let d = self.domains.get(&domid).ok_or(Errno::Esrch)?;
        Ok(match d.life {
            Life::Running => LegacyInfo::default(),
            Life::Shutdown(r) => LegacyInfo {
                dying: false,
                shutdown: true,
                shutdown_reason: r as u32,
            },
            Life::Dying | Life::Dead => LegacyInfo {
                dying: true,
                ..LegacyInfo::default()
            },
        })
    }

    /// The bits of the proposed "shutdown or dying" bitmap, as they are now
    /// (no call counted: this is also what a page mapped read-only from the
    /// hypervisor would show).
    pub fn dying_bits(&self) -> [u64; DYING_BITMAP_WORDS] {
        *self.dying
    }

    /// The proposed one-call bitmap of shutdown|dying domains.
    pub fn dying_bitmap(&mut self) -> [u64; DYING_BITMAP_WORDS] {
        self.calls.dying_bitmap += 1;
        self.dying_bits()
    }

    /// The proposed per-domain death channel: a new port of `caller` that
    /// fires whenever `domid` shuts down, becomes dead, or goes.
    pub fn bind_death_channel(&mut self, caller: u32, domid: u32) -> Result<u32, Errno> {
        self.calls.evtchn += 1;
        if !self.domains.contains_key(&domid) || !self.domains.contains_key(&caller) {
            return Err(Errno::Esrch);
        }
        let port = self.free_port(caller);
        self.ports
            .entry(caller)
            .or_default()
            .bound
            .insert(port, Binding::Death { domid });
        self.death_channels
            .entry(domid)
            .or_default()
            .push((caller, port));
        Ok(port)
    }

    /// Makes `domid` the `VIRQ_DOM_EXC` handler (fails while bound).
    pub fn set_virq_handler(&mut self, domid: u32) -> Result<(), Errno> {
        if self.virq.is_some() {
            return Err(Errno::Ebusy);
        }
        self.virq_handler = domid;
        Ok(())
    }

    // ----- event channels ------------------------------------------------

    /// A free port of `domid`: the one after the highest in use (O(log n)),
    /// or the lowest free one if the port space is exhausted at the top.
    fn free_port(&self, domid: u32) -> u32 {
        let Some(used) = self.ports.get(&domid).map(|p| &p.bound) else {
            return 1;
        };
        match used.keys().next_back() {
            None => 1,
            Some(&top) if top < u32::MAX => top + 1,
            Some(_) => (1..).find(|p| !used.contains_key(p)).unwrap_or(1),
        }
    }

    /// Allocates an unbound port in `domid` that `remote` may bind to.
    pub fn alloc_unbound(&mut self, domid: u32, remote: u32) -> Result<u32, Errno> {
        self.calls.evtchn += 1;
        if !self.domains.contains_key(&domid) {
            return Err(Errno::Esrch);
        }
        let port = self.free_port(domid);
        self.ports
            .entry(domid)
            .or_default()
            .bound
            .insert(port, Binding::Unbound { remote });
        Ok(port)
    }

    /// Domain `local` binds a new port to `(remote, remote_port)`, which
    /// must be unbound and allow `local` as its peer.
    pub fn bind_interdomain(
        &mut self,
        local: u32,
        remote: u32,
        remote_port: u32,
    ) -> Result<u32, Errno> {
        self.calls.evtchn += 1;
        if !self.domains.contains_key(&remote) || !self.domains.contains_key(&local) {
            return Err(Errno::Esrch);
        }
        match self
            .ports
            .get(&remote)
            .and_then(|p| p.bound.get(&remote_port))
        {
            Some(Binding::Unbound { remote: allowed }) if *allowed == local => {}
            _ => return Err(Errno::Einval),
        }
        let port = self.free_port(local);
        self.ports.entry(local).or_default().bound.insert(
            port,
            Binding::Interdomain {
                domid: remote,
                port: remote_port,
            },
        );
        self.ports
            .entry(remote)
            .or_default()
            .bound
            .insert(remote_port, Binding::Interdomain { domid: local, port });
        Ok(port)
    }

    /// Domain `domid` binds a virtual IRQ. `VIRQ_DOM_EXC`: handler only
    /// (`EBUSY`), once (`EEXIST`); creates the changed-domain bitmap with
    /// every existing domain marked.
    pub fn bind_virq(&mut self, domid: u32, virq: u32) -> Result<u32, Errno> {
        self.calls.evtchn += 1;
        if virq != VIRQ_DOM_EXC {
            return Err(Errno::Einval);
        }
        if self.virq.is_some() {
            return Err(Errno::Eexist);
        }
        if domid != self.virq_handler {
            return Err(Errno::Ebusy);
        }
        let port = self.free_port(domid);
        self.ports
            .entry(domid)
            .or_default()
            .bound
            .insert(port, Binding::Virq(virq));
        self.virq = Some((domid, port));
        let mut bits = vec![0u64; BITMAP_WORDS];
        for &d in self.domains.keys() {
            bits[d as usize / 64] |= 1u64 << (d % 64);
        }
        self.changed = Some(bits);
        Ok(port)
    }

    /// Closes a port of `domid`. Closing the `VIRQ_DOM_EXC` port frees the
    /// changed-domain bitmap; closing an interdomain port leaves the peer's
    /// end unbound.
    /// The domain and local port `VIRQ_DOM_EXC` is bound to, if it is.
    pub fn virq_binding(&self) -> Option<(u32, u32)> {
        self.virq
    }

    pub fn unbind(&mut self, domid: u32, port: u32) -> Result<(), Errno> {
        self.calls.evtchn += 1;
        let b = self
            .ports
            .get_mut(&domid)
            .and_then(|p| p.bound.remove(&port))
            .ok_or(Errno::Enotconn)?;
        match b {
            Binding::Death { domid: watched } => {
                if let Some(v) = self.death_channels.get_mut(&watched) {
                    v.retain(|&(d, p)| (d, p) != (domid, port));
                    if v.is_empty() {
                        self.death_channels.remove(&watched);
                    }
                }
            }
            Binding::Virq(_) => {
                self.virq = None;
                self.changed = None;
            }
            Binding::Interdomain {
                domid: rd,
                port: rp,
            } => {
                if let Some(p) = self.ports.get_mut(&rd) {
                    p.bound.insert(rp, Binding::Unbound { remote: domid });
                }
            }
            Binding::Unbound { .. } => {}
        }
        Ok(())
    }

    fn close_ports(&mut self, domid: u32) {
        let ports: Vec<u32> = self
            .ports
            .get(&domid)
            .map(|p| p.bound.keys().copied().collect())
            .unwrap_or_default();
        for p in ports {
            let _ = self.unbind(domid, p);
        }
        self.ports.remove(&domid);
    }

    fn set_pending(&mut self, domid: u32, port: u32) {
        let p = self.ports.entry(domid).or_default();
        if p.masked.contains(&port) {
            p.masked_pending.insert(port);
        } else if p.queued.insert(port) {
            p.pending.push_back(port);
        }
    }

    /// Domain `domid` signals its `port`: the peer's port becomes pending.
    pub fn notify(&mut self, domid: u32, port: u32) -> Result<(), Errno> {
        self.calls.evtchn += 1;
        match self.ports.get(&domid).and_then(|p| p.bound.get(&port)) {
            Some(Binding::Interdomain {
                domid: rd,
                port: rp,
            }) => {
                let (rd, rp) = (*rd, *rp);
                self.set_pending(rd, rp);
                Ok(())
            }
            Some(_) => Ok(()),
            None => Err(Errno::Enotconn),
        }
    }

    /// The next pending port of `domid`, masked until [`Hypervisor::unmask`]
    /// (the Linux evtchn device's delivery model).
    pub fn pending(&mut self, domid: u32) -> Option<u32> {
        let p = self.ports.get_mut(&domid)?;
        let port = p.pending.pop_front()?;
        p.queued.remove(&port);
        p.masked.insert(port);
        Some(port)
    }

    /// Re-enables delivery of `port`; an event raised meanwhile is
    /// delivered now.
    pub fn unmask(&mut self, domid: u32, port: u32) {
        self.calls.evtchn += 1;
        if let Some(p) = self.ports.get_mut(&domid) {
            p.masked.remove(&port);
            if p.masked_pending.remove(&port) && p.queued.insert(port) {
                p.pending.push_back(port);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(h: &mut Hypervisor) -> Vec<(u32, DomainInfo)> {
        let mut v = Vec::new();
        while let Ok(x) = h.poll_changed_domain(0) {
            v.push(x);
        }
        v
    }

    #[test]
    fn domids_round_robin_and_unique_ids() {
        let mut h = Hypervisor::new(42);
        let a = h.create_domain(None, 0).unwrap();
        let b = h.create_domain(None, 0).unwrap();
        assert_eq!((a, b), (1, 2));
        h.destroy(a).unwrap();
        // Round-robin: 1 is free again but 3 comes first.
        assert_eq!(h.create_domain(None, 0).unwrap(), 3);
        let reused = h.create_domain(Some(1), 0).unwrap();
        assert_eq!(reused, 1);
        let uids: std::collections::BTreeSet<u64> = h.domains().map(|d| d.unique_id).collect();
        assert_eq!(uids.len(), h.domains().count());
        assert_eq!(h.create_domain(Some(1), 0), Err(Errno::Eexist));
        assert_eq!(h.create_domain(Some(0x7FF0), 0), Err(Errno::Einval));
    }

    #[test]
    fn changed_feed_semantics() {
        let mut h = Hypervisor::new(1);
        let d1 = h.create_domain(None, 0).unwrap();
        // No bitmap before the VIRQ is bound.
        assert_eq!(h.poll_changed_domain(0), Err(Errno::Enoent));
        assert_eq!(h.bind_virq(1, VIRQ_DOM_EXC), Err(Errno::Ebusy));
        let port = h.bind_virq(0, VIRQ_DOM_EXC).unwrap();
        assert_eq!(h.bind_virq(0, VIRQ_DOM_EXC), Err(Errno::Eexist));
        // Binding marks every existing domain.
        let all: Vec<u32> = drain(&mut h).iter().map(|x| x.0).collect();
        assert_eq!(all, [0, d1]);
        assert_eq!(h.poll_changed_domain(5), Err(Errno::Eacces));
        // Shutdown: bit set and VIRQ pending.
        h.shutdown(d1, ShutdownReason::Crash).unwrap();
        assert_eq!(h.pending(0), Some(port));
        let r = drain(&mut h);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].1.state, state::EXIST | state::SHUTDOWN);
        // Several changes coalesce into one report of the current state.
        let m = h.create_domain(None, 0).unwrap();
        h.take_ref(m).unwrap();
        h.destroy(m).unwrap();
        let r = drain(&mut h);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].1.state, state::EXIST | state::DEAD);
        // Dropping the last reference: gone, reported as zeros.
        h.drop_ref(m);
        assert_eq!(drain(&mut h), [(m, DomainInfo::default())]);
        // Unbinding frees the bitmap.
        h.unbind(0, port).unwrap();
        h.shutdown(0, ShutdownReason::Poweroff).unwrap();
        assert_eq!(h.poll_changed_domain(0), Err(Errno::Enoent));
        assert_eq!(h.calls().poll_changed_domain, 12);
    }

    #[test]
    fn designs_under_evaluation() {
        let mut h = Hypervisor::new(3);
        let a = h.create_domain(None, 0).unwrap();
        let b = h.create_domain(None, 0).unwrap();
        // Legacy: one call per domain.
        assert_eq!(h.getinfo_single(a).unwrap(), LegacyInfo::default());
        assert_eq!(h.getinfo_single(99), Err(Errno::Esrch));
        assert_eq!(h.calls().getinfo_single, 2);
        // Bitmap: one call, a bit for each shut-down or dying domain.
        h.shutdown(a, ShutdownReason::Crash).unwrap();
        let bits = h.dying_bitmap();
        assert_eq!(bits[0], 1 << a);
        assert_eq!(
            h.getinfo_single(a).unwrap().shutdown_reason,
            ShutdownReason::Crash as u32
        );
        assert_eq!(h.calls().dying_bitmap, 1);
        // Death channel: the watcher's port fires for b's death only.
        let port = h.bind_death_channel(0, b).unwrap();
        assert_eq!(h.pending(0), None);
        h.take_ref(b).unwrap();
        h.destroy(b).unwrap();
        assert_eq!(h.pending(0), Some(port));
        assert_eq!(h.dying_bits()[0], (1 << a) | (1 << b));
        h.unmask(0, port);
        h.drop_ref(b);
        // Gone: fired again, then the channel is forgotten.
        assert_eq!(h.pending(0), Some(port));
        assert_eq!(h.dying_bits()[0], 1 << a);
        assert!(h.death_channels.is_empty());
        assert_eq!(h.bind_death_channel(0, 77), Err(Errno::Esrch));
    }

    #[test]
    fn event_channels() {
        let mut h = Hypervisor::new(7);
        let g = h.create_domain(None, 0).unwrap();
        let gp = h.alloc_unbound(g, 0).unwrap();
        assert_eq!(h.bind_interdomain(5, g, gp), Err(Errno::Esrch));
        let lp = h.bind_interdomain(0, g, gp).unwrap();
        h.notify(g, gp).unwrap();
        h.notify(g, gp).unwrap();
        assert_eq!(h.pending(0), Some(lp));
        // Masked until unmasked; what was raised meanwhile is not lost.
        h.notify(g, gp).unwrap();
        assert_eq!(h.pending(0), None);
        h.unmask(0, lp);
        assert_eq!(h.pending(0), Some(lp));
        h.unmask(0, lp);
        assert_eq!(h.pending(0), None);
        h.notify(0, lp).unwrap();
        assert_eq!(h.pending(g), Some(gp));
        // A binding to a port that does not allow us fails.
        let other = h.alloc_unbound(g, 9).unwrap();
        assert_eq!(h.bind_interdomain(0, g, other), Err(Errno::Einval));
    }
}
