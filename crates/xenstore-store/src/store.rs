//! The engine: connections, domains, and request dispatch.
//!
//! [`Store::handle`] takes one request of one connection and returns every
//! message it causes, in the order they must be queued (watch events of
//! other connections, then the reply, as C xenstored does), plus side
//! effects the transport layer must carry out. Nothing here does I/O.

use crate::access::{Caller, PERM_READ};
use crate::db::{Db, Fired, Overlay};
use crate::node::Node;
use crate::quota::{Quota, QuotaSet, Usage};
use crate::watch::{Registry, Watch};
use crate::ConnId;
use std::collections::{BTreeMap, HashMap};
use xenstore_proto::{
    args, feature, number, path, Access, Header, Message, MsgType, Perm, PermList, XsError,
    DOMID_ANY,
};

/// Features a connection may have (ERROR, WATCH_DEPTH, DOMID_ANY).
pub const SUPPORTED_FEATURES: u32 = feature::ERROR | feature::WATCH_DEPTH | feature::DOMID_ANY;

/// Name of the special node fired when a domain is introduced.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// Name of the special node fired when a domain is released or dies.
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

/// Answers whether a domain exists in the hypervisor. The store asks it
/// about domids it has no record of (SET_PERMS owners, GET_QUOTA, ...).
pub trait DomainOracle {
    /// True if domain `domid` exists.
    fn exists(&self, domid: u32) -> bool;
}

/// An oracle for a store with no hypervisor: only domains the store has
/// records of exist.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHypervisor;

impl DomainOracle for NoHypervisor {
    fn exists(&self, _domid: u32) -> bool {
        false
    }
}

/// Start-up configuration. The default has dom0 as both the privileged
/// and the store domain, C's quota defaults, and orphans removed.
#[derive(Debug, Clone, Default)]
pub struct StoreConfig {
    /// The privileged domain (full access, privileged-only operations).
    pub priv_domid: u32,
    /// The domain xenstored runs in; socket connections act as it.
    pub store_domid: u32,
    /// Global quota values, copied into each new domain record.
    pub quota: QuotaSet,
    /// Give a removed domain's nodes to the privileged domain instead of
    /// deleting them (C's `--keep-orphans`; a security risk).
    pub keep_orphans: bool,
}

/// What kind of connection a client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// A Unix socket client: acts as the store domain, has every feature
    /// and no quota.
    Socket,
    /// The ring of an introduced domain.
    Domain(u32),
}

/// Something the transport must do as a result of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A domain was released or died: its ring connection (if any) must be
    /// closed and its hypervisor resources freed.
    DomainReleased {
        /// The domain.
        domid: u32,
        /// Its connection, already forgotten by the store.
        conn: Option<ConnId>,
    },
}

/// Everything one request caused.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Messages to queue, in order, each for one connection.
    pub out: Vec<(ConnId, Message)>,
    /// Side effects for the transport.
    pub effects: Vec<Effect>,
}

impl Outcome {
    fn reply(conn: ConnId, msg: Message) -> Outcome {
        Outcome {
            out: vec![(conn, msg)],
            effects: Vec::new(),
        }
    }
}

/// A domain known to the store: introduced, or referenced by permissions,
/// or owning nodes.
#[derive(Debug, Clone)]
pub struct Domain {
    /// The domid.
    pub domid: u32,
    /// INTRODUCE'd and not yet released.
    pub introduced: bool,
    /// Its ring connection, while introduced.
    pub conn: Option<ConnId>,
    /// Feature mask (SET_FEATURE before INTRODUCE changes it).
    pub features: u32,
    /// Its quota values.
    pub quota: QuotaSet,
    /// Its current usage.
    pub usage: Usage,
    /// Generation counter when the record was made.
    pub created_gen: u64,
    /// Shut down and already reported by `@releaseDomain`.
    pub shutdown: bool,
    /// Bytes the daemon holds for the domain (queued output), charged with
    /// [`Store::charge_memory`]; part of `usage`'s memory, kept apart so
    /// that [`Store::recount`] keeps it.
    pub external_memory: u64,
}

#[derive(Debug)]
struct Transaction {
    overlay: Overlay,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) kind: ConnKind,
    domid: u32,
    base: String,
    target: Option<u32>,
    transactions: BTreeMap<u32, Transaction>,
    next_tx: u32,
}

/// Per-request context.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub conn: ConnId,
    pub caller: Caller,
    pub base: String,
    /// Quotas to enforce, `None` for exempt (privileged) connections.
    pub quota: Option<QuotaSet>,
    pub features: u32,
}

impl Ctx {
    /// Resolves a path argument, with the path-length quota.
    pub fn resolve(&self, raw: &[u8], allow_special: bool) -> Result<path::Resolved, XsError> {
        let r = path::resolve(raw, &self.base)?;
        if r.is_special() && !allow_special {
            return Err(XsError::Einval);
        }
        if let Some(q) = &self.quota {
            if q.exceeds(Quota::PathMax, path::measured_len(&r.path) as u64) {
                return Err(XsError::Einval);
            }
        }
        Ok(r)
    }
}

/// The Xenstore database engine.
#[derive(Debug)]
pub struct Store {
    pub(crate) cfg: StoreConfig,
    pub(crate) db: Db,
    /// Boxed, as the daemon's connection records: small map slots.
    pub(crate) conns: HashMap<ConnId, Box<Conn>>,
    pub(crate) domains: BTreeMap<u32, Domain>,
    pub(crate) watches: Registry,
    /// SET_TARGET links by target: the connections that act for a domain,
    /// cut when that domain goes.
    pub(crate) targeted: HashMap<u32, std::collections::BTreeSet<ConnId>>,
    /// Where the last DIRECTORY_PART outside a transaction stopped, so the
    /// next part of the same listing starts there instead of at the first
    /// child.
    pub(crate) part_cursor: Option<PartCursor>,
}

/// The end of a DIRECTORY_PART reply: the node (path and generation: any
/// change to its child list changes the generation), the byte offset the
/// next part asks for, and the key of the child found there.
#[derive(Debug, Clone)]
pub(crate) struct PartCursor {
    pub(crate) path: String,
    pub(crate) generation: u64,
    pub(crate) offset: usize,
    pub(crate) key: u64,
}

fn is_privileged_only(t: MsgType) -> bool {
    matches!(
        t,
        MsgType::Control
            | MsgType::Introduce
            | MsgType::Release
            | MsgType::IsDomainIntroduced
            | MsgType::Resume
            | MsgType::SetTarget
            | MsgType::SetFeature
            | MsgType::GetQuota
            | MsgType::SetQuota
    )
}

impl Store {
    /// A store holding the initial tree: `/`, `/local`, `/local/domain`,
    /// `/tool`, `/tool/xenstored`, all `n<priv>`, and the special nodes
    /// `@introduceDomain` (`n<priv>`) and `@releaseDomain`
    /// (`n<priv>`, `r<DOMID_ANY>`). The privileged and store domains are
    /// introduced from the start.
    pub fn new(cfg: StoreConfig) -> Store {
        let mut s = Store {
            db: Db::unindexing([cfg.priv_domid, cfg.store_domid]),
            cfg,
            conns: HashMap::new(),
            domains: BTreeMap::new(),
            watches: Registry::default(),
            targeted: HashMap::new(),
            part_cursor: None,
        };
        let priv_domid = s.cfg.priv_domid;
        let root_perms = PermList::owned_by(priv_domid, Access::None);
        let mut tree: Vec<(&str, &[&str])> = vec![
            ("/", &["local", "tool"]),
            ("/local", &["domain"]),
            ("/local/domain", &[]),
            ("/tool", &["xenstored"]),
            ("/tool/xenstored", &[]),
        ];
        let release_perms = PermList::from_vec(vec![
            Perm::new(Access::None, priv_domid),
            Perm::new(Access::Read, DOMID_ANY),
        ])
        .unwrap_or_else(|| root_perms.clone());
        for (p, children) in tree.drain(..) {
            let mut n = Node::new(root_perms.clone());
            for c in children {
                n.add_child(c);
            }
            s.db.insert_raw(p, n);
        }
        s.db.insert_raw(INTRODUCE_DOMAIN, Node::new(root_perms.clone()));
        s.db.insert_raw(RELEASE_DOMAIN, Node::new(release_perms));
        for d in [s.cfg.priv_domid, s.cfg.store_domid] {
            s.domain_record(d).introduced = true;
        }
        s.recount();
        s
    }

    /// The configuration in force.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// The committed database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn db_mut(&mut self) -> &mut Db {
        &mut self.db
    }

    /// The watch registry.
    pub fn watches(&self) -> &Registry {
        &self.watches
    }

    /// Known domains.
    pub fn domains(&self) -> impl Iterator<Item = &Domain> {
        self.domains.values()
    }

    /// One domain's record.
    pub fn domain(&self, domid: u32) -> Option<&Domain> {
        self.domains.get(&domid)
    }

    /// The record of `domid`, made (not introduced) if missing.
    pub(crate) fn domain_record(&mut self, domid: u32) -> &mut Domain {
        // A new record takes a generation of its own, so that every node
        // committed before it is strictly older. C reuses the last one: a
        // record made for a recycled domid right after a node naming the
        // old domain was written counts as older than that node, and the
        // stale grant is honoured.
        let quota = self.cfg.quota;
        let mut gen = self.db.generation();
        if !self.domains.contains_key(&domid) {
            gen = self.db.next_generation();
            self.db.set_domain_gen(domid, Some(gen));
        }
        self.domains.entry(domid).or_insert_with(|| Domain {
            domid,
            introduced: false,
            conn: None,
            features: SUPPORTED_FEATURES,
            quota,
            usage: Usage::default(),
            created_gen: gen,
            shutdown: false,
            external_memory: 0,
        })
    }

    /// True if `domid` is known to the store or exists in the hypervisor.
    pub fn domain_exists(&self, domid: u32, oracle: &dyn DomainOracle) -> bool {
        self.domains.contains_key(&domid) || oracle.exists(domid)
    }

    /// Registers a new connection.
    pub fn connect(&mut self, id: ConnId, kind: ConnKind) {
        let domid = match kind {
            ConnKind::Socket => self.cfg.store_domid,
            ConnKind::Domain(d) => d,
        };
        self.conns.insert(
            id,
            Box::new(Conn {
                kind,
                domid,
                base: path::domain_home(domid),
                target: None,
                transactions: BTreeMap::new(),
                next_tx: 1,
            }),
        );
    }

    /// Forgets a connection with its watches and transactions.
    pub fn disconnect(&mut self, id: ConnId) {
        self.reset_connection(id);
        if let Some(c) = self.conns.remove(&id) {
            if let Some(t) = c.target {
                self.unlink_target(id, t);
            }
            if let ConnKind::Domain(d) = c.kind {
                if let Some(dom) = self.domains.get_mut(&d) {
                    if dom.conn == Some(id) {
                        dom.conn = None;
                    }
                }
            }
        }
    }

    /// `conn` acts for `tdomid` from now on (SET_TARGET).
    pub(crate) fn link_target(&mut self, conn: ConnId, tdomid: u32) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let old = c.target.replace(tdomid);
        if let Some(o) = old {
            self.unlink_target(conn, o);
        }
        self.targeted.entry(tdomid).or_default().insert(conn);
    }

    fn unlink_target(&mut self, conn: ConnId, tdomid: u32) {
        if let Some(set) = self.targeted.get_mut(&tdomid) {
            set.remove(&conn);
            if set.is_empty() {
                self.targeted.remove(&tdomid);
            }
        }
    }

    /// `domid` is gone: nobody acts for it any more.
    pub(crate) fn cut_targets_of(&mut self, domid: u32) {
        for conn in self.targeted.remove(&domid).unwrap_or_default() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.target = None;
            }
        }
    }

    /// Drops a connection's watches and transactions (RESET_WATCHES, and
    /// INTRODUCE of an already introduced domain).
    pub fn reset_connection(&mut self, id: ConnId) {
        let removed = self.watches.remove_conn(id);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let ntx = c.transactions.len() as i64;
        let tx_mem: u64 = c.transactions.values().map(|t| t.overlay.charged).sum();
        c.transactions.clear();
        let domid = c.domid;
        let is_domain = matches!(c.kind, ConnKind::Domain(_));
        if is_domain {
            if let Some(d) = self.domains.get_mut(&domid) {
                let mem: i64 = removed.iter().map(|w| w.acc_size() as i64).sum();
                d.usage.add(Quota::Watches, -(removed.len() as i64));
                d.usage.add(Quota::Memory, -mem);
                d.usage
                    .add(Quota::Memory, -i64::try_from(tx_mem).unwrap_or(i64::MAX));
                d.usage.add(Quota::Transactions, -ntx);
            }
        }
    }

    /// Number of connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Number of open transactions of a connection.
    pub fn transaction_count(&self, id: ConnId) -> usize {
        self.conns.get(&id).map_or(0, |c| c.transactions.len())
    }

    /// True if the connection is privileged.
    pub fn is_privileged(&self, id: ConnId) -> bool {
        self.conns
            .get(&id)
            .is_some_and(|c| c.domid == self.cfg.priv_domid)
    }

    /// The domid a connection acts as.
    pub fn conn_domid(&self, id: ConnId) -> Option<u32> {
        self.conns.get(&id).map(|c| c.domid)
    }

    pub(crate) fn caller(&self, c: &Conn) -> Caller {
        Caller {
            domid: c.domid,
            target: c.target,
            privileged: c.domid == self.cfg.priv_domid,
        }
    }

    pub(crate) fn ctx(&self, id: ConnId) -> Option<Ctx> {
        let c = self.conns.get(&id)?;
        let caller = self.caller(c);
        let (quota, features) = match c.kind {
            ConnKind::Socket => (None, SUPPORTED_FEATURES),
            ConnKind::Domain(d) => {
                let dom = self.domains.get(&d);
                let features = dom.map_or(SUPPORTED_FEATURES, |d| d.features);
                let quota = if caller.privileged {
                    None
                } else {
                    Some(dom.map_or(self.cfg.quota, |d| d.quota))
                };
                (quota, features)
            }
        };
        Some(Ctx {
            conn: id,
            caller,
            base: c.base.clone(),
            quota,
            features,
        })
    }

    /// The checks C xenstored applies to every request before its handler:
    /// unknown types (`ENOSYS`), privileged-only types from unprivileged
    /// connections (`EACCES`), and a `tx_id` that names no transaction of
    /// this connection (`ENOENT`; `EBUSY` for TRANSACTION_START naming one).
    pub fn gate(&self, id: ConnId, h: &Header) -> Result<MsgType, XsError> {
        let t = match h.kind() {
            None | Some(MsgType::WatchEvent) | Some(MsgType::Error) => return Err(XsError::Enosys),
            Some(t) => t,
        };
        let c = self.conns.get(&id).ok_or(XsError::Einval)?;
        if is_privileged_only(t) && c.domid != self.cfg.priv_domid {
            return Err(XsError::Eacces);
        }
        match t {
            MsgType::Watch | MsgType::Unwatch => {}
            MsgType::TransactionStart if h.tx_id != 0 => {
                return Err(if c.transactions.contains_key(&h.tx_id) {
                    XsError::Ebusy
                } else {
                    XsError::Enoent
                });
            }
            _ if h.tx_id != 0 && !c.transactions.contains_key(&h.tx_id) => {
                return Err(XsError::Enoent)
            }
            _ => {}
        }
        Ok(t)
    }

    /// Handles one request. INTRODUCE and CONTROL belong to the daemon (they
    /// need the hypervisor and the daemon's logs); here they get `ENOSYS`.
    pub fn handle(&mut self, id: ConnId, msg: &Message, oracle: &dyn DomainOracle) -> Outcome {
        let h = msg.header;
        let t = match self.gate(id, &h) {
            Ok(t) => t,
            Err(e) => return Outcome::reply(id, Message::error(&h, e)),
        };
        let Some(ctx) = self.ctx(id) else {
            return Outcome::reply(id, Message::error(&h, XsError::Einval));
        };
        let tx = (h.tx_id != 0).then_some(h.tx_id);
        let p = &msg.payload;
        let mut out = Outcome::default();
        let result: Result<Vec<u8>, XsError> = match t {
            MsgType::Read => self.op_read(&ctx, tx, p),
            MsgType::Directory => self.op_directory(&ctx, tx, p),
            MsgType::DirectoryPart => self.op_directory_part(&ctx, tx, p),
            MsgType::GetPerms => self.op_get_perms(&ctx, tx, p),
            MsgType::Write => self.op_write(&ctx, tx, p, &mut out),
            MsgType::Mkdir => self.op_mkdir(&ctx, tx, p, &mut out),
            MsgType::Rm => self.op_rm(&ctx, tx, p, &mut out),
            MsgType::SetPerms => self.op_set_perms(&ctx, tx, p, oracle, &mut out),
            MsgType::Watch => self.op_watch(&ctx, p, &mut out),
            MsgType::Unwatch => self.op_unwatch(&ctx, p),
            MsgType::TransactionStart => self.op_transaction_start(&ctx),
            MsgType::TransactionEnd => self.op_transaction_end(&ctx, tx, p, &mut out),
            MsgType::ResetWatches => {
                self.reset_connection(id);
                Ok(b"OK\0".to_vec())
            }
            MsgType::GetDomainPath => args::one_arg(p)
                .and_then(number::parse_domid)
                .map(|d| nul_terminated(path::domain_home(d))),
            MsgType::IsDomainIntroduced => self.op_is_domain_introduced(p),
            MsgType::Release => self.op_release(p, &mut out),
            MsgType::Resume => self.op_resume(p),
            MsgType::SetTarget => self.op_set_target(p),
            MsgType::GetFeature => self.op_get_feature(&ctx, p, oracle),
            MsgType::SetFeature => self.op_set_feature(p, oracle),
            MsgType::GetQuota => self.op_get_quota(p, oracle),
            MsgType::SetQuota => self.op_set_quota(p, oracle),
            MsgType::Control | MsgType::Introduce => Err(XsError::Enosys),
            MsgType::WatchEvent | MsgType::Error => Err(XsError::Enosys),
        };
        let reply = match result {
            Ok(payload) => Message::reply(&h, payload),
            Err(e) => {
                // A failed request causes no events.
                out.out
                    .retain(|(_, m)| m.kind() != Some(MsgType::WatchEvent));
                Message::error(&h, e)
            }
        };
        // The WATCH initial event goes after the reply; everything else
        // before it.
        let after: Vec<_> = if t == MsgType::Watch {
            std::mem::take(&mut out.out)
        } else {
            Vec::new()
        };
        out.out.push((id, reply));
        out.out.extend(after);
        out
    }

    // ----- transactions and commits -------------------------------------

    /// Runs `f` on the overlay of transaction `tx`, or on a fresh overlay
    /// committed at once when `tx` is `None`.
    pub(crate) fn with_overlay<R>(
        &mut self,
        ctx: &Ctx,
        tx: Option<u32>,
        out: &mut Outcome,
        f: impl FnOnce(&mut Store, &mut Overlay) -> Result<R, XsError>,
    ) -> Result<R, XsError> {
        match tx {
            Some(txid) => {
                let mut t = self
                    .conns
                    .get_mut(&ctx.conn)
                    .and_then(|c| c.transactions.remove(&txid))
                    .ok_or(XsError::Enoent)?;
                t.overlay.budget = self.tx_budget(ctx, &t.overlay);
                let writes = t.overlay.writes();
                let r = f(self, &mut t.overlay);
                if r.is_err() && t.overlay.writes() != writes {
                    // Part of the request is staged: the transaction can
                    // only be aborted now.
                    t.overlay.failed = true;
                }
                self.charge_tx(ctx, &mut t.overlay);
                if let Some(c) = self.conns.get_mut(&ctx.conn) {
                    c.transactions.insert(txid, t);
                }
                r
            }
            None => {
                let mut ov = Overlay::new(None);
                let r = f(self, &mut ov)?;
                self.commit(ctx, ov, false, out)?;
                Ok(r)
            }
        }
    }

    /// The bytes a transaction of an unprivileged caller may hold: its
    /// domain's hard memory quota less everything else charged to the
    /// domain. `None` when exempt or the quota is disabled.
    fn tx_budget(&self, ctx: &Ctx, ov: &Overlay) -> Option<u64> {
        let limit = ctx.quota.as_ref()?.get(Quota::Memory);
        if limit == 0 {
            return None;
        }
        let used = self
            .domains
            .get(&ctx.caller.domid)
            .map_or(0, |d| d.usage.get(Quota::Memory));
        Some(limit.saturating_sub(used.saturating_sub(ov.charged)))
    }

    /// Brings the memory charged for an open transaction of an
    /// unprivileged caller up to what its overlay holds.
    fn charge_tx(&mut self, ctx: &Ctx, ov: &mut Overlay) {
        if ctx.quota.is_none() || ov.held() == ov.charged {
            return;
        }
        let delta = ov.held() as i64 - ov.charged as i64;
        self.domain_record(ctx.caller.domid)
            .usage
            .add(Quota::Memory, delta);
        ov.charged = ov.held();
    }

    /// Releases what an ending transaction of connection domain `domid`
    /// was charged.
    fn release_tx(&mut self, domid: u32, ov: &Overlay) {
        if ov.charged == 0 {
            return;
        }
        if let Some(d) = self.domains.get_mut(&domid) {
            d.usage.add(
                Quota::Memory,
                -i64::try_from(ov.charged).unwrap_or(i64::MAX),
            );
        }
    }

    /// Commits an overlay: failed transactions give `ENOMEM`, node quotas
    /// are re-checked (`ENOSPC`), conflicts give `EAGAIN` (transactions
    /// only); then the changes land, accounting moves, and watches fire.
    pub(crate) fn commit(
        &mut self,
        ctx: &Ctx,
        ov: Overlay,
        is_tx: bool,
        out: &mut Outcome,
    ) -> Result<(), XsError> {
        if ov.failed {
            return Err(XsError::Enomem);
        }
        let deltas: Vec<_> = ov.deltas().collect();
        if ctx.quota.is_some() && ov.created {
            for (owner, d) in &deltas {
                if d.nodes <= 0 || *owner == self.cfg.priv_domid {
                    continue;
                }
                let (used, q) = self.domains.get(owner).map_or((0, self.cfg.quota), |d| {
                    (d.usage.get(Quota::Nodes), d.quota)
                });
                if q.exceeds(Quota::Nodes, used.saturating_add_signed(d.nodes)) {
                    return Err(XsError::Enospc);
                }
            }
        }
        if is_tx && ov.conflicts(&self.db) {
            return Err(XsError::Eagain);
        }
        if !ov.is_dirty() {
            return Ok(());
        }
        for (owner, d) in deltas {
            let dom = self.domain_record(owner);
            dom.usage.add(Quota::Nodes, d.nodes);
            dom.usage.add(Quota::Memory, d.memory);
        }
        let fired = ov.apply(&mut self.db);
        self.fire(&fired, &mut out.out);
        Ok(())
    }

    /// Queues the watch events for committed changes.
    pub(crate) fn fire(&self, fired: &[Fired], out: &mut Vec<(ConnId, Message)>) {
        for f in fired {
            // Looked up for the first watch that matches, if any does.
            let mut perms: Option<(Option<PermList>, Option<PermList>)> = None;
            for w in self.watches.matching(&f.path, f.how) {
                let (node, parent) = perms.get_or_insert_with(|| {
                    let node = self.db.get(&f.path).map(|n| self.db.checked_perms(n));
                    let parent = path::parent(&f.path)
                        .and_then(|p| self.db.get(p))
                        .map(|n| self.db.checked_perms(n));
                    (node, parent)
                });
                let Some(c) = self.conns.get(&w.conn) else {
                    continue;
                };
                let caller = self.caller(c);
                let permitted = if caller.privileged {
                    node.is_some() || f.old_perms.is_some()
                } else {
                    f.old_perms.as_ref().is_some_and(|p| caller.can_read(p))
                        || node.as_ref().is_some_and(|p| caller.can_read(p))
                        || parent.as_ref().is_some_and(|p| caller.can_read(p))
                };
                if !permitted {
                    continue;
                }
                if let Some(m) =
                    Message::watch_event(w.report_path(&f.path).as_bytes(), w.token.as_bytes())
                {
                    out.push((w.conn, m));
                }
            }
        }
    }

    /// Fires a special event (`@introduceDomain`, `@releaseDomain`): the
    /// generic form to plain watches without depth, the per-domain form
    /// `<name>/<domid>` to plain watches with depth >= 1 and to watches on
    /// that exact per-domain path. Watchers need read access to the special
    /// node.
    pub(crate) fn fire_special(
        &self,
        name: &str,
        domid: Option<u32>,
        generic: bool,
        out: &mut Vec<(ConnId, Message)>,
    ) {
        let Some(perms) = self.db.get(name).map(|n| self.db.checked_perms(n)) else {
            return;
        };
        let readable = |w: &Watch| {
            self.conns
                .get(&w.conn)
                .is_some_and(|c| self.caller(c).perm_for(&perms) & PERM_READ != 0)
        };
        let mut send = |w: &Watch, p: &str| {
            if readable(w) {
                if let Some(m) = Message::watch_event(p.as_bytes(), w.token.as_bytes()) {
                    out.push((w.conn, m));
                }
            }
        };
        let per_domain = domid.map(|d| format!("{name}/{d}"));
        for (_, w) in self.watches.on_path(name) {
            match (w.depth, &per_domain) {
                (None, _) if generic => send(w, name),
                (Some(d), Some(pd)) if d >= 1 => send(w, pd),
                _ => {}
            }
        }
        if let Some(pd) = &per_domain {
            for (_, w) in self.watches.on_path(pd) {
                send(w, pd);
            }
        }
    }

    fn op_transaction_start(&mut self, ctx: &Ctx) -> Result<Vec<u8>, XsError> {
        if let Some(q) = &ctx.quota {
            let used = self
                .domains
                .get(&ctx.caller.domid)
                .map_or(0, |d| d.usage.get(Quota::Transactions));
            if q.exceeds(Quota::Transactions, used + 1) {
                return Err(XsError::Enospc);
            }
        }
        let limit = ctx
            .quota
            .as_ref()
            .map(|q| q.get(Quota::TransactionNodes))
            .filter(|&l| l != 0)
            .map(|l| usize::try_from(l).unwrap_or(usize::MAX));
        let c = self.conns.get_mut(&ctx.conn).ok_or(XsError::Einval)?;
        let mut id = c.next_tx;
        while id == 0 || c.transactions.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        c.next_tx = id.wrapping_add(1);
        let mut overlay = Overlay::new(limit);
        overlay.in_tx = true;
        c.transactions.insert(id, Transaction { overlay });
        if ctx.quota.is_some() {
            self.domain_record(ctx.caller.domid)
                .usage
                .add(Quota::Transactions, 1);
        }
        Ok(nul_terminated(id.to_string()))
    }

    fn op_transaction_end(
        &mut self,
        ctx: &Ctx,
        tx: Option<u32>,
        p: &[u8],
        out: &mut Outcome,
    ) -> Result<Vec<u8>, XsError> {
        let arg = args::one_arg(p)?;
        let commit = match arg {
            b"T" => true,
            b"F" => false,
            _ => return Err(XsError::Einval),
        };
        let txid = tx.ok_or(XsError::Enoent)?;
        let t = self
            .conns
            .get_mut(&ctx.conn)
            .and_then(|c| c.transactions.remove(&txid))
            .ok_or(XsError::Enoent)?;
        if ctx.quota.is_some() {
            self.domain_record(ctx.caller.domid)
                .usage
                .add(Quota::Transactions, -1);
        }
        self.release_tx(ctx.caller.domid, &t.overlay);
        if commit {
            self.commit(ctx, t.overlay, true, out)?;
        }
        Ok(b"OK\0".to_vec())
    }

    // ----- watches -------------------------------------------------------

    fn op_watch(&mut self, ctx: &Ctx, p: &[u8], out: &mut Outcome) -> Result<Vec<u8>, XsError> {
        // As C: two strings, or three with a depth; strings after the third
        // are ignored.
        let a: Vec<&[u8]> = args::strings(p).into_iter().take(3).collect();
        if a.len() < 2 {
            return Err(XsError::Einval);
        }
        let depth = match a.get(2) {
            None => None,
            Some(d) => {
                if ctx.features & feature::WATCH_DEPTH == 0 {
                    return Err(XsError::Einval);
                }
                let v = number::atoi(d);
                Some(u32::try_from(v).map_err(|_| XsError::Einval)?)
            }
        };
        let r = ctx.resolve(a[0], true)?;
        let token = String::from_utf8(a[1].to_vec()).map_err(|_| XsError::Einval)?;
        if self.watches.find(ctx.conn, &r.path, &token).is_some() {
            return Err(XsError::Eexist);
        }
        let w = Watch::new(
            ctx.conn,
            &String::from_utf8_lossy(a[0]),
            r.path,
            token,
            depth,
            r.relative,
            &ctx.base,
        );
        let size = w.acc_size() as i64;
        if let Some(q) = &ctx.quota {
            let usage = self
                .domains
                .get(&ctx.caller.domid)
                .map(|d| d.usage)
                .unwrap_or_default();
            if q.exceeds(Quota::Watches, usage.get(Quota::Watches) + 1) {
                return Err(XsError::Enospc);
            }
            if q.exceeds(
                Quota::Memory,
                usage.get(Quota::Memory).saturating_add_signed(size),
            ) {
                return Err(XsError::Enomem);
            }
        }
        if matches!(
            self.conns.get(&ctx.conn).map(|c| c.kind),
            Some(ConnKind::Domain(_))
        ) {
            let d = self.domain_record(ctx.caller.domid);
            d.usage.add(Quota::Watches, 1);
            d.usage.add(Quota::Memory, size);
        }
        if let Some(m) = Message::watch_event(w.given().as_bytes(), w.token.as_bytes()) {
            out.out.push((ctx.conn, m));
        }
        self.watches.add(w);
        Ok(b"OK\0".to_vec())
    }

    fn op_unwatch(&mut self, ctx: &Ctx, p: &[u8]) -> Result<Vec<u8>, XsError> {
        let [wpath, token] = args::exactly::<2>(p)?;
        let r = ctx.resolve(wpath, true)?;
        let token = std::str::from_utf8(token).map_err(|_| XsError::Einval)?;
        let id = self
            .watches
            .find(ctx.conn, &r.path, token)
            .ok_or(XsError::Enoent)?;
        if let Some(w) = self.watches.remove(id) {
            if matches!(
                self.conns.get(&ctx.conn).map(|c| c.kind),
                Some(ConnKind::Domain(_))
            ) {
                let d = self.domain_record(ctx.caller.domid);
                d.usage.add(Quota::Watches, -1);
                d.usage.add(Quota::Memory, -(w.acc_size() as i64));
            }
        }
        Ok(b"OK\0".to_vec())
    }

    // ----- accounting ----------------------------------------------------

    /// Adds `delta` bytes held by the daemon for `domid` (queued output)
    /// to its memory usage; the daemon's share saturates at 0. A no-op for
    /// a domain without a record: charges come from a domain's ring
    /// connection, which has one, and a removed domain's leftovers must
    /// not bring a record back (it would look like a new domain to the
    /// permission generation check). Removing the record clears the
    /// charge; [`Store::recount`] keeps it.
    pub fn charge_memory(&mut self, domid: u32, delta: i64) {
        let Some(d) = self.domains.get_mut(&domid) else {
            return;
        };
        let before = d.external_memory;
        d.external_memory = before.saturating_add_signed(delta);
        let change = if d.external_memory >= before {
            i64::try_from(d.external_memory - before).unwrap_or(i64::MAX)
        } else {
            -i64::try_from(before - d.external_memory).unwrap_or(i64::MAX)
        };
        d.usage.add(Quota::Memory, change);
    }

    /// The hard quota `q` and current usage of it of an unprivileged
    /// domain (global quota and no usage without a record); `None` for
    /// the privileged domain.
    fn limit_state(&self, domid: u32, q: Quota) -> Option<(u64, u64)> {
        if domid == self.cfg.priv_domid {
            return None;
        }
        Some(match self.domains.get(&domid) {
            Some(d) => (d.quota.get(q), d.usage.get(q)),
            None => (self.cfg.quota.get(q), 0),
        })
    }

    /// True if `bytes` more would take an unprivileged domain over its
    /// hard memory quota (values up to the quota are allowed); false when
    /// the quota is 0 (disabled) or for the privileged domain.
    pub fn memory_would_exceed(&self, domid: u32, bytes: u64) -> bool {
        self.limit_state(domid, Quota::Memory)
            .is_some_and(|(limit, used)| limit != 0 && used.saturating_add(bytes) > limit)
    }

    /// True if an unprivileged domain is at or over its hard memory quota
    /// (C stops reading its ring then); false when the quota is disabled.
    pub fn memory_full(&self, domid: u32) -> bool {
        self.limit_state(domid, Quota::Memory)
            .is_some_and(|(limit, used)| limit != 0 && used >= limit)
    }

    /// Adds `delta` to the domain's `outstanding` counter (requests in
    /// flight and undelivered events), saturating at 0 and recording the
    /// maximum. A no-op without a record, as [`Store::charge_memory`];
    /// [`Store::recount`] does not touch it.
    pub fn charge_outstanding(&mut self, domid: u32, delta: i64) {
        if let Some(d) = self.domains.get_mut(&domid) {
            d.usage.add(Quota::Outstanding, delta);
        }
    }

    /// True if an unprivileged domain has as many outstanding requests as
    /// its `outstanding` quota allows (count >= quota; quota 0 disables).
    pub fn outstanding_full(&self, domid: u32) -> bool {
        self.limit_state(domid, Quota::Outstanding)
            .is_some_and(|(limit, used)| limit != 0 && used >= limit)
    }

    /// Recomputes every domain's node, watch and memory usage from the
    /// tree, the watches and the open transactions; the daemon's charges
    /// ([`Store::charge_memory`], [`Store::charge_outstanding`]) are kept.
    /// Returns the number of counters that were wrong.
    pub fn recount(&mut self) -> usize {
        let mut counts: HashMap<u32, (u64, u64)> = HashMap::new();
        for (p, n) in self.db.iter() {
            let e = counts.entry(n.owner()).or_default();
            e.0 += 1;
            e.1 += n.mem_charge(&p) as u64;
        }
        let watch_mem: HashMap<u32, (u64, u64)> = {
            let mut m: HashMap<u32, (u64, u64)> = HashMap::new();
            for (_, w) in self.watches.iter() {
                if let Some(c) = self.conns.get(&w.conn) {
                    if matches!(c.kind, ConnKind::Domain(_)) {
                        let e = m.entry(c.domid).or_default();
                        e.0 += 1;
                        e.1 += w.acc_size() as u64;
                    }
                }
            }
            m
        };
        // Open transactions of unprivileged domains hold what their
        // overlays hold (and are charged exactly that from now on).
        let mut tx_mem: HashMap<u32, u64> = HashMap::new();
        let priv_domid = self.cfg.priv_domid;
        for c in self.conns.values_mut() {
            let charged = matches!(c.kind, ConnKind::Domain(_)) && c.domid != priv_domid;
            for t in c.transactions.values_mut() {
                if charged {
                    *tx_mem.entry(c.domid).or_default() += t.overlay.held();
                    t.overlay.charged = t.overlay.held();
                } else {
                    t.overlay.charged = 0;
                }
            }
        }
        for owner in counts.keys().copied().collect::<Vec<_>>() {
            self.domain_record(owner);
        }
        let mut fixed = 0;
        for (domid, d) in self.domains.iter_mut() {
            let (nodes, mem) = counts.get(domid).copied().unwrap_or_default();
            let (watches, wmem) = watch_mem.get(domid).copied().unwrap_or_default();
            let tmem = tx_mem.get(domid).copied().unwrap_or_default();
            let want = [
                (Quota::Nodes, nodes),
                (Quota::Memory, mem + wmem + tmem + d.external_memory),
                (Quota::Watches, watches),
            ];
            for (q, v) in want {
                if d.usage.get(q) != v {
                    fixed += 1;
                    let cur = d.usage.get(q) as i64;
                    d.usage.add(q, v as i64 - cur);
                }
            }
        }
        fixed
    }

    /// Checks the tree for consistency (every child listed exists, every
    /// node is listed by its parent, accounting matches) and repairs what
    /// it finds. Returns a description of each problem fixed.
    pub fn check(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        // Children that do not exist.
        let mut fix_children = Vec::new();
        for (p, n) in self.db.iter() {
            for c in n.child_names() {
                if self.db.get(&path::child(&p, c)).is_none() {
                    fix_children.push((p.to_owned(), c.to_owned()));
                }
            }
        }
        for (p, c) in fix_children {
            problems.push(format!("{p}: child {c} missing"));
            self.db.remove_child_raw(&p, &c);
        }
        // Nodes their parent does not list.
        let orphans: Vec<String> = self
            .db
            .iter()
            .filter(|(p, _)| p.starts_with('/') && *p != "/")
            .filter(|(p, _)| {
                path::parent(p)
                    .and_then(|pp| self.db.get(pp))
                    .is_none_or(|parent| !parent.has_child(path::basename(p)))
            })
            .map(|(p, _)| p.to_owned())
            .collect();
        for p in orphans {
            problems.push(format!("{p}: not reachable"));
            self.db.remove_raw(&p);
        }
        // The record generations the permission check uses follow the
        // records.
        if self
            .db
            .sync_domain_gens(self.domains.values().map(|d| (d.domid, d.created_gen)))
        {
            problems.push("domain record generations resynchronised".to_owned());
        }
        let fixed = self.recount();
        if fixed > 0 {
            problems.push(format!("{fixed} accounting counters corrected"));
        }
        problems
    }
}

pub(crate) fn nul_terminated(s: String) -> Vec<u8> {
    let mut v = s.into_bytes();
    v.push(0);
    v
}

/// The value of a WRITE as shared bytes.
pub(crate) fn value_bytes(v: &[u8]) -> crate::node::Value {
    crate::node::Value::new(v)
}
