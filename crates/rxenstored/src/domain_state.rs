//! Which domains exist and which changed state: one trait, one
//! implementation per backend, chosen once at start-up ([`choose`]).
//!
//! | backend | where | on `VIRQ_DOM_EXC` |
//! |---|---|---|
//! | [`Feed`] | Xen 4.21+ (libxenmanage, stable) | drain the changed-domain feed |
//! | [`List`] | Xen 4.17 to 4.22 without libxenmanage | one list of the served domid range, diffed |
//! | [`NoState`] | anything else | nothing: deaths only through RELEASE |
//! | [`Scan`], [`Bitmap`], [`Channel`] | the simulator only (issue 4's designs) | a query per domain; a bitmap then queries; per-domain ports |
//!
//! The daemon hands a backend the domains it serves with the identity it
//! recorded for each at introduction (`unique_id`, or the handle for the
//! list), and gets back [`Change`]s; it never asks which backend it has.

use std::collections::{BTreeMap, HashMap};
use xen_stable::domlist::{DomainList, ListedDomain};
use xen_stable::libs::{BitmapView, Evtchn, Manage, XenLibs};
use xen_stable::{DomainInfo, DomainStates, EventChannels, XenError};

/// What the hypervisor said changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The domain shut down (first report since introduction or RESUME is
    /// the store's business).
    Shutdown(u32),
    /// The domain is dead, gone, or its domid was reused.
    Gone(u32),
}

/// "No such domain" from a single-domain query.
const ESRCH: i32 = 3;

/// The domains served, with the identity recorded at introduction.
pub type Served = BTreeMap<u32, Option<u64>>;

/// The domains whose changes matter on `VIRQ_DOM_EXC`: those served (with
/// the identity recorded at introduction), and those the store only names
/// (owner of a node, in an ACL, a quota record: never introduced, or not
/// yet), whose death must strip their rights too.
pub struct Known<'a> {
    /// Served domains.
    pub served: &'a Served,
    /// Whether the store names a domain (O(1)).
    pub named: &'a dyn Fn(u32) -> bool,
    /// Every domain the store names, in domid order (O(N): for the
    /// backends that diff a whole list).
    pub all_named: &'a dyn Fn() -> Vec<u32>,
}

impl Known<'_> {
    /// `Some(identity)` if the domain matters (the identity is known only
    /// for served domains).
    pub fn get(&self, domid: u32) -> Option<Option<u64>> {
        match self.served.get(&domid) {
            Some(id) => Some(*id),
            None => (self.named)(domid).then_some(None),
        }
    }

    /// Every domain that matters, in domid order.
    pub fn all(&self) -> Served {
        let mut m = self.served.clone();
        for d in (self.all_named)() {
            m.entry(d).or_insert(None);
        }
        m
    }
}

/// A source of domain state.
pub trait DomainState {
    /// Its `--domain-state` name.
    fn name(&self) -> &'static str;
    /// Whether it learns of changes through `VIRQ_DOM_EXC`.
    fn needs_virq(&self) -> bool {
        true
    }
    /// Does `domid` exist? `None`: this backend cannot tell.
    fn exists(&mut self, domid: u32) -> Option<bool>;
    /// The identity of the domain now on `domid` (its `unique_id`, or its
    /// handle), recorded at introduction to detect domid reuse.
    fn identity(&mut self, domid: u32) -> Option<u64>;
    /// `VIRQ_DOM_EXC` fired: what changed among the domains that matter.
    fn on_virq(&mut self, known: &Known) -> Vec<Change>;
    /// The domains that exist now (start-up).
    fn existing(&mut self) -> Vec<(u32, DomainInfo)>;
    /// `domid` is served from now on.
    fn track(&mut self, _evtchn: &mut Evtchn, _domid: u32) {}
    /// `domid` is no longer served.
    fn untrack(&mut self, _evtchn: &mut Evtchn, _domid: u32) {}
    /// A pending port this backend bound (`None` if it is not one of its
    /// own): what it says.
    fn on_port(&mut self, _port: u32, _served: &Served) -> Option<Vec<Change>> {
        None
    }
    /// Every domain that matters, looked at once (after a live update:
    /// deaths and shutdowns during the switch were not reported), as C
    /// xenstored's `check_domains` does at its `-U` start-up.
    fn check_all(&mut self, known: &Known) -> Vec<Change> {
        self.on_virq(known)
    }
    /// A live update is about to `exec`: unbind this backend's own ports
    /// (the next binary binds its own; their numbers are not in the
    /// stream). [`DomainState::track`] binds them again if it fails.
    fn release_ports(&mut self, _evtchn: &mut Evtchn) {}
    /// Whether [`DomainState::identity`] is the hypervisor's `unique_id`
    /// (what a live-update stream's `unique-id` field holds).
    fn identity_is_unique_id(&self) -> bool {
        true
    }
}

/// What a changed-domain report means for a domain we serve, whose
/// unique id we recorded at introduction (`known_uid`): gone if it no
/// longer exists, is DEAD, or is another domain now (domid reused: the
/// unique id differs); shut down if SHUTDOWN; nothing for DYING alone (wait
/// for DEAD) or a running domain.
pub fn classify(domid: u32, info: &DomainInfo, known_uid: Option<u64>) -> Option<Change> {
    let reused = known_uid.is_some_and(|u| u != 0 && u != info.unique_id);
    if !info.exists() || info.state & xen_stable::state::DEAD != 0 || reused {
        Some(Change::Gone(domid))
    } else if info.state & xen_stable::state::SHUTDOWN != 0 {
        Some(Change::Shutdown(domid))
    } else {
        None
    }
}

/// What a domain-list record (or its absence) means for a domain we serve
/// whose identity (the handle) we recorded at introduction: gone if it is
/// absent, dying (the list does not tell dying from dead; C xenstored 4.17
/// and oxenstored tear down on it too) or another domain now; shut down if
/// SHUTDOWN.
pub fn classify_listed(
    domid: u32,
    listed: Option<&ListedDomain>,
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

/// libxenmanage's single-domain query, shared by the feed and the
/// simulator's designs (their follow-up query).
struct Query(Manage);

impl Query {
    fn exists(&mut self, domid: u32) -> Option<bool> {
        Some(self.0.get_domain_info(domid).is_ok_and(|i| i.exists()))
    }

    fn identity(&mut self, domid: u32) -> Option<u64> {
        self.0.get_domain_info(domid).ok().map(|i| i.unique_id)
    }

    /// One domain's state, classified.
    fn followup(&mut self, domid: u32, uid: Option<u64>) -> Option<Change> {
        match self.0.get_domain_info(domid) {
            Ok(info) => classify(domid, &info, uid),
            Err(e) if e.errno() == Some(ESRCH) => Some(Change::Gone(domid)),
            Err(e) => {
                tracing::warn!("domain {domid}: {e}");
                None
            }
        }
    }

    /// Every domain that matters, one query each.
    fn check_all(&mut self, known: &Known) -> Vec<Change> {
        known
            .all()
            .into_iter()
            .filter_map(|(d, uid)| self.followup(d, uid))
            .collect()
    }

    /// Drains the changed-domain feed.
    fn drain(&mut self) -> Vec<(u32, DomainInfo)> {
        let mut v = Vec::new();
        loop {
            match self.0.poll_changed_domain() {
                Ok(Some(x)) => v.push(x),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("poll_changed_domain: {e}");
                    break;
                }
            }
        }
        v
    }
}

/// Xen 4.21+: libxenmanage's changed-domain feed, the stable interface.
pub struct Feed(Query);

impl DomainState for Feed {
    fn name(&self) -> &'static str {
        "poll"
    }
    fn exists(&mut self, domid: u32) -> Option<bool> {
        self.0.exists(domid)
    }
    fn identity(&mut self, domid: u32) -> Option<u64> {
        self.0.identity(domid)
    }
    fn on_virq(&mut self, known: &Known) -> Vec<Change> {
        self.0
            .drain()
            .into_iter()
            .filter_map(|(d, info)| classify(d, &info, known.get(d)?))
            .collect()
    }
    /// Binding the VIRQ marked every existing domain changed: the first
    /// drain lists them all.
    fn existing(&mut self) -> Vec<(u32, DomainInfo)> {
        self.0.drain()
    }
    /// The feed (binding the VIRQ marked every existing domain changed),
    /// then a query for each domain that matters and was not in it (gone
    /// during the switch).
    fn check_all(&mut self, known: &Known) -> Vec<Change> {
        let reported: HashMap<u32, DomainInfo> = self.0.drain().into_iter().collect();
        known
            .all()
            .into_iter()
            .filter_map(|(d, uid)| match reported.get(&d) {
                Some(info) => classify(d, info, uid),
                None => self.0.followup(d, uid),
            })
            .collect()
    }
}

/// Before Xen 4.21: the list of domains through libxencall.
pub struct List(DomainList);

impl DomainState for List {
    fn name(&self) -> &'static str {
        "getdomaininfolist"
    }
    fn exists(&mut self, domid: u32) -> Option<bool> {
        match self.0.get(domid) {
            Ok(found) => Some(found.is_some()),
            Err(e) => {
                tracing::warn!("does domain {domid} exist? {e}");
                None
            }
        }
    }
    fn identity(&mut self, domid: u32) -> Option<u64> {
        self.0.get(domid).ok().flatten().map(|d| d.identity())
    }
    fn identity_is_unique_id(&self) -> bool {
        false
    }
    /// One list from the lowest to the highest domid served (one call per
    /// 512 domains), diffed against the domains served.
    fn on_virq(&mut self, known: &Known) -> Vec<Change> {
        let served = known.all();
        let (Some((&lo, _)), Some((&hi, _))) = (served.first_key_value(), served.last_key_value())
        else {
            return Vec::new();
        };
        let listed = match self.0.range(lo, hi) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("{e}");
                return Vec::new();
            }
        };
        served
            .iter()
            .filter_map(|(&d, &known)| {
                let found = listed
                    .binary_search_by_key(&d, |x| x.domid)
                    .ok()
                    .and_then(|i| listed.get(i));
                classify_listed(d, found, known)
            })
            .collect()
    }
    fn existing(&mut self) -> Vec<(u32, DomainInfo)> {
        match self
            .0
            .range(0, xen_stable::domlist::DOMID_FIRST_RESERVED - 1)
        {
            Ok(all) => all.iter().map(|d| (d.domid, d.info())).collect(),
            Err(e) => {
                tracing::warn!("listing domains at start-up: {e}");
                Vec::new()
            }
        }
    }
}

/// No domain state: deaths only through RELEASE.
pub struct NoState;

impl DomainState for NoState {
    fn name(&self) -> &'static str {
        "none"
    }
    fn needs_virq(&self) -> bool {
        false
    }
    fn exists(&mut self, _domid: u32) -> Option<bool> {
        None
    }
    fn identity(&mut self, _domid: u32) -> Option<u64> {
        None
    }
    fn on_virq(&mut self, _known: &Known) -> Vec<Change> {
        Vec::new()
    }
    fn existing(&mut self) -> Vec<(u32, DomainInfo)> {
        Vec::new()
    }
    fn identity_is_unique_id(&self) -> bool {
        false
    }
}

/// Simulator only: a query per served domain on every event (what
/// oxenstored does with libxenctrl).
pub struct Scan(Query);

impl DomainState for Scan {
    fn name(&self) -> &'static str {
        "legacy"
    }
    fn exists(&mut self, domid: u32) -> Option<bool> {
        self.0.exists(domid)
    }
    fn identity(&mut self, domid: u32) -> Option<u64> {
        self.0.identity(domid)
    }
    fn on_virq(&mut self, known: &Known) -> Vec<Change> {
        let mut out = Vec::new();
        for &d in known.all().keys() {
            match self.0 .0.legacy_getinfo(d) {
                Ok(i) if i.dying => out.push(Change::Gone(d)),
                Ok(i) if i.shutdown => out.push(Change::Shutdown(d)),
                Ok(_) => {}
                Err(e) if e.errno() == Some(ESRCH) => out.push(Change::Gone(d)),
                Err(e) => tracing::warn!("getinfo {d}: {e}"),
            }
        }
        out
    }
    fn existing(&mut self) -> Vec<(u32, DomainInfo)> {
        self.0.drain()
    }
}

/// Simulator only: the shutdown|dying bitmap, fetched by a call or read
/// from a mapped page, then a follow-up query per set bit of a served
/// domain (the bitmap says neither which state nor which incarnation).
pub struct Bitmap {
    query: Query,
    mapped: Option<BitmapView>,
}

impl DomainState for Bitmap {
    fn name(&self) -> &'static str {
        if self.mapped.is_some() {
            "mapped"
        } else {
            "bitmap"
        }
    }
    fn exists(&mut self, domid: u32) -> Option<bool> {
        self.query.exists(domid)
    }
    fn identity(&mut self, domid: u32) -> Option<u64> {
        self.query.identity(domid)
    }
    fn on_virq(&mut self, known: &Known) -> Vec<Change> {
        let bits = match &self.mapped {
            Some(v) => v.read(),
            None => match self.query.0.dying_bitmap() {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("dying bitmap: {e}");
                    return Vec::new();
                }
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
                if let Some(uid) = known.get(d) {
                    set.push((d, uid));
                }
            }
        }
        set.into_iter()
            .filter_map(|(d, uid)| self.query.followup(d, uid))
            .collect()
    }
    fn existing(&mut self) -> Vec<(u32, DomainInfo)> {
        self.query.drain()
    }
    fn check_all(&mut self, known: &Known) -> Vec<Change> {
        self.query.check_all(known)
    }
}

/// Simulator only: a death event channel per served domain; the port
/// names the domain, a follow-up query says what happened.
pub struct Channel {
    query: Query,
    ports: HashMap<u32, u32>,
    of: HashMap<u32, u32>,
}

impl DomainState for Channel {
    fn name(&self) -> &'static str {
        "channel"
    }
    fn exists(&mut self, domid: u32) -> Option<bool> {
        self.query.exists(domid)
    }
    fn identity(&mut self, domid: u32) -> Option<u64> {
        self.query.identity(domid)
    }
    /// Deaths arrive on their own ports; the VIRQ carries nothing.
    fn on_virq(&mut self, _known: &Known) -> Vec<Change> {
        Vec::new()
    }
    fn existing(&mut self) -> Vec<(u32, DomainInfo)> {
        self.query.drain()
    }
    fn track(&mut self, evtchn: &mut Evtchn, domid: u32) {
        match evtchn.bind_death_channel(domid) {
            Ok(p) => {
                self.ports.insert(p, domid);
                self.of.insert(domid, p);
            }
            Err(e) => tracing::warn!("death channel of domain {domid}: {e}"),
        }
    }
    fn untrack(&mut self, evtchn: &mut Evtchn, domid: u32) {
        if let Some(p) = self.of.remove(&domid) {
            self.ports.remove(&p);
            let _ = evtchn.unbind(p);
        }
    }
    fn on_port(&mut self, port: u32, served: &Served) -> Option<Vec<Change>> {
        let d = *self.ports.get(&port)?;
        let uid = served.get(&d).copied().flatten();
        Some(self.query.followup(d, uid).into_iter().collect())
    }
    fn check_all(&mut self, known: &Known) -> Vec<Change> {
        self.query.check_all(known)
    }
    fn release_ports(&mut self, evtchn: &mut Evtchn) {
        for (p, _) in self.ports.drain() {
            let _ = evtchn.unbind(p);
        }
        self.of.clear();
    }
}

/// `--domain-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// libxenmanage's changed-domain feed (Xen 4.21+).
    Poll,
    /// The domain list through libxencall (before 4.21).
    DomainList,
    /// None: deaths only through RELEASE.
    NoState,
    /// Simulator only: a query per served domain.
    Legacy,
    /// Simulator only: the one-call bitmap.
    Bitmap,
    /// Simulator only: the mapped bitmap.
    Mapped,
    /// Simulator only: per-domain death channels.
    Channel,
}

/// Why no backend could be opened.
#[derive(Debug, thiserror::Error)]
#[error("--domain-state: {0}")]
pub struct ChooseError(pub XenError);

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

/// The simulator-only symbols a design needs.
fn sim_only(lib: &'static str, symbol: &'static str) -> ChooseError {
    ChooseError(XenError::Symbol {
        lib,
        symbol,
        version: "XENSIM_1.0 (this --domain-state runs on the simulator only)",
    })
}

/// Picks the backend and says which in one log line.
///
/// Without `--domain-state` (`asked` is `None`): libxenmanage when it loads
/// and the hypervisor answers it (Xen 4.21+, stable); otherwise the domain
/// list through libxencall when the hypervisor's version is in the layout
/// table (Xen 4.17 to 4.22); otherwise none (one error line: deaths are
/// then noticed only through RELEASE, and only domains that have a ring
/// count as existing, so that no right is ever granted to a domain that may
/// not exist). A backend named on the command line that cannot be opened
/// is an error.
pub fn choose(
    asked: Option<Strategy>,
    libs: &XenLibs,
    evtchn: &Evtchn,
) -> Result<Box<dyn DomainState>, ChooseError> {
    let manage = || libs.manage().map_err(ChooseError);
    match asked {
        None => {}
        Some(Strategy::NoState) => {
            tracing::warn!(
                "domain state: none (--domain-state none): domain deaths are noticed only \
                 through RELEASE"
            );
            return Ok(Box::new(NoState));
        }
        Some(Strategy::DomainList) => {
            let l = libs.domain_list().map_err(ChooseError)?;
            log_domain_list(&l, "asked for with --domain-state");
            return Ok(Box::new(List(l)));
        }
        Some(Strategy::Poll) => {
            let mut m = manage()?;
            usable(&mut m).map_err(ChooseError)?;
            tracing::info!(
                "domain state: libxenmanage's changed-domain feed (stable, Xen 4.21+), asked \
                 for with --domain-state"
            );
            return Ok(Box::new(Feed(Query(m))));
        }
        Some(Strategy::Legacy) => {
            let m = manage()?;
            if !m.has_legacy_query() {
                return Err(sim_only("libxenmanage.so.1", "xensim_getinfo_single"));
            }
            return Ok(Box::new(Scan(Query(m))));
        }
        Some(Strategy::Bitmap) => {
            let m = manage()?;
            if !m.has_bitmap() {
                return Err(sim_only("libxenmanage.so.1", "xensim_dying_bitmap"));
            }
            return Ok(Box::new(Bitmap {
                query: Query(m),
                mapped: None,
            }));
        }
        Some(Strategy::Mapped) => {
            let mut m = manage()?;
            let view = m
                .map_dying_bitmap()
                .map_err(|_| sim_only("libxenmanage.so.1", "xensim_map_dying_bitmap"))?;
            return Ok(Box::new(Bitmap {
                query: Query(m),
                mapped: Some(view),
            }));
        }
        Some(Strategy::Channel) => {
            let m = manage()?;
            if !evtchn.has_death_channels() {
                return Err(sim_only("libxenevtchn.so.1", "xensim_bind_death_channel"));
            }
            return Ok(Box::new(Channel {
                query: Query(m),
                ports: HashMap::new(),
                of: HashMap::new(),
            }));
        }
    }
    let why_not_manage = match libs.manage() {
        Ok(mut m) => match usable(&mut m) {
            Ok(()) => {
                tracing::info!(
                    "domain state: libxenmanage's changed-domain feed (stable interface of Xen \
                     4.21+)"
                );
                return Ok(Box::new(Feed(Query(m))));
            }
            Err(e) => format!("libxenmanage.so.1 loads but the hypervisor refuses it ({e})"),
        },
        Err(e) => e.to_string(),
    };
    match libs.domain_list() {
        Ok(l) => {
            log_domain_list(&l, &why_not_manage);
            Ok(Box::new(List(l)))
        }
        Err(e) => {
            tracing::error!(
                "domain state: none: {why_not_manage}; {e}. Domain deaths will be noticed only \
                 through RELEASE, and only domains with a ring count as existing (guests cannot \
                 be given rights before INTRODUCE)"
            );
            Ok(Box::new(NoState))
        }
    }
}

/// What this host offers, for `--version`: one line per Xen library the
/// daemon loads, and the domain-state backend `choose(None, ..)` would
/// take. Opens the libraries (and their devices) and closes them again;
/// changes nothing.
pub fn host_report(libs: &XenLibs) -> Vec<String> {
    let mut lines = Vec::new();
    let mut say = |what: &str, r: Result<String, String>| {
        lines.push(match r {
            Ok(s) => format!("  {what}: {s}"),
            Err(e) => format!("  {what}: unavailable ({e})"),
        });
    };
    say(
        "libxenevtchn.so.1 (event channels)",
        libs.evtchn()
            .map(|_| "loaded, device opened".into())
            .map_err(|e| e.to_string()),
    );
    say(
        "libxengnttab.so.1 (ring mapping)",
        libs.gnttab()
            .map(|_| "loaded, device opened".into())
            .map_err(|e| e.to_string()),
    );
    let manage = libs.manage().map_err(|e| e.to_string()).and_then(|mut m| {
        usable(&mut m)
            .map(|()| m)
            .map_err(|e| format!("loads, but the hypervisor refuses it: {e}"))
    });
    say(
        "libxenmanage.so.1 (domain state, Xen 4.21+)",
        manage
            .as_ref()
            .map(|_| "loaded, the hypervisor answers it".into())
            .map_err(Clone::clone),
    );
    let list = libs.domain_list().map_err(|e| e.to_string());
    say(
        "libxencall.so.1 (domain list, Xen 4.17-4.22)",
        list.as_ref()
            .map(|l| {
                let (major, minor) = l.version();
                format!(
                    "loaded, Xen {major}.{minor}, sysctl interface {:#x}",
                    l.layout().sysctl_version
                )
            })
            .map_err(Clone::clone),
    );
    lines.push(format!(
        "domain-state backend (--domain-state auto): {}",
        match (&manage, &list) {
            (Ok(_), _) => "poll: libxenmanage's changed-domain feed (stable)",
            (Err(_), Ok(_)) => "getdomaininfolist: the domain list through libxencall",
            (Err(_), Err(_)) => "none: deaths noticed only through RELEASE",
        }
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_stable::state::{DEAD, DYING, EXIST, SHUTDOWN};

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

    #[test]
    fn listed_deaths_shutdowns_and_domid_reuse() {
        let d = |flags: u32, h: u8| ListedDomain {
            domid: 5,
            flags,
            handle: [h; 16],
        };
        let running = d(1 << 5, 1);
        let id = running.identity();
        assert_eq!(classify_listed(5, Some(&running), Some(id)), None);
        assert_eq!(classify_listed(5, None, Some(id)), Some(Change::Gone(5)));
        assert_eq!(
            classify_listed(5, Some(&d(1, 1)), Some(id)),
            Some(Change::Gone(5)),
            "dying"
        );
        assert_eq!(
            classify_listed(5, Some(&d(1 << 2, 1)), Some(id)),
            Some(Change::Shutdown(5))
        );
        assert_eq!(
            classify_listed(5, Some(&d(1 << 5, 2)), Some(id)),
            Some(Change::Gone(5)),
            "another handle: domid reused"
        );
        // dom0-like all-zero handle: no reuse check.
        assert_eq!(classify_listed(5, Some(&d(0, 0)), Some(0)), None);
    }
}
