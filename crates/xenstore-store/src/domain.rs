//! Domain bookkeeping: IS_DOMAIN_INTRODUCED, RELEASE, RESUME, SET_TARGET,
//! GET/SET_FEATURE, GET/SET_QUOTA, and the store side of introducing and
//! removing a domain (special watch events, orphan removal, ACL stripping).
//!
//! Mapping rings and binding event channels is the daemon's job; the store
//! only learns that a domain now has a connection, or is gone.

use crate::db::Overlay;
use crate::quota::Quota;
use crate::store::{
    nul_terminated, ConnKind, DomainOracle, Effect, Outcome, Store, INTRODUCE_DOMAIN,
    RELEASE_DOMAIN, SUPPORTED_FEATURES,
};
use crate::ConnId;
use xenstore_proto::{args, number, path, Message, XsError, DOMID_SELF};

impl Store {
    /// True if `domid` is introduced and not yet released.
    pub fn is_introduced(&self, domid: u32) -> bool {
        self.domains.get(&domid).is_some_and(|d| d.introduced)
    }

    pub(crate) fn op_is_domain_introduced(&self, p: &[u8]) -> Result<Vec<u8>, XsError> {
        let domid = number::parse_domid(args::one_arg(p)?)?;
        let yes = domid == DOMID_SELF || self.is_introduced(domid);
        Ok(if yes {
            b"T\0".to_vec()
        } else {
            b"F\0".to_vec()
        })
    }

    /// Records that `domid` is introduced with ring connection `conn`
    /// (already registered with [`Store::connect`]). For a new domain the
    /// `@introduceDomain` events are returned (not for the privileged
    /// domain). For a domain introduced before, its previous connection is
    /// reset (watches and transactions dropped) and no event fires.
    pub fn introduce_domain(&mut self, domid: u32, conn: ConnId) -> Vec<(ConnId, Message)> {
        let priv_domid = self.cfg.priv_domid;
        let d = self.domain_record(domid);
        let was = d.introduced;
        let old_conn = d.conn.replace(conn);
        d.introduced = true;
        d.shutdown = false;
        let mut out = Vec::new();
        if was {
            if let Some(old) = old_conn.filter(|&c| c != conn) {
                self.disconnect(old);
            }
            self.reset_connection(conn);
        } else if domid != priv_domid {
            self.fire_special(INTRODUCE_DOMAIN, Some(domid), true, &mut out);
        }
        out
    }

    /// True if the store holds anything of `domid` (a record, an owned
    /// node, an ACL entry) that must go when it dies, whether or not it
    /// was ever introduced. The privileged and store domains never go.
    pub fn names_domain(&self, domid: u32) -> bool {
        domid != self.cfg.priv_domid
            && domid != self.cfg.store_domid
            && domid < xenstore_proto::DOMID_FIRST_RESERVED
            && (self.domains.contains_key(&domid) || self.db.names(domid))
    }

    /// Every domain [`Store::names_domain`] is true of, in domid order.
    pub fn named_domains(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .domains
            .keys()
            .copied()
            .chain(self.db.named_domids())
            .filter(|&d| self.names_domain(d))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The connection of an introduced domain.
    pub fn domain_conn(&self, domid: u32) -> Option<ConnId> {
        self.domains.get(&domid).and_then(|d| d.conn)
    }

    fn check_removable(&self, domid: u32) -> Result<(), XsError> {
        if domid == self.cfg.priv_domid || domid == self.cfg.store_domid {
            return Err(XsError::Einval);
        }
        if !self.is_introduced(domid) {
            return Err(XsError::Enoent);
        }
        Ok(())
    }

    pub(crate) fn op_release(&mut self, p: &[u8], out: &mut Outcome) -> Result<Vec<u8>, XsError> {
        let domid = number::parse_domid(args::one_arg(p)?)?;
        self.check_removable(domid)?;
        let o = self.remove_domain(domid);
        out.out.extend(o.out);
        out.effects.extend(o.effects);
        Ok(b"OK\0".to_vec())
    }

    /// Tears a domain down (RELEASE, or death seen by the hypervisor
    /// layer): its own watches go first so it hears nothing of its own
    /// removal; then its connection, transactions and watches; then the
    /// nodes it owns are removed (firing watches as RM does) or, with
    /// `keep_orphans`, handed to the privileged domain; every ACL entry
    /// naming it is stripped; finally `@releaseDomain` fires (generic and
    /// per-domain).
    pub fn remove_domain(&mut self, domid: u32) -> Outcome {
        let mut out = Outcome::default();
        let conn = self.domains.get(&domid).and_then(|d| d.conn);
        if let Some(c) = conn {
            self.disconnect(c);
        }
        let introduced = self.is_introduced(domid);
        self.remove_owned_nodes(domid, &mut out);
        self.cut_targets_of(domid);
        self.domains.remove(&domid);
        self.db.set_domain_gen(domid, None);
        // A domain that was never introduced (only named in the store) goes
        // silently, as in C.
        if introduced {
            self.fire_special(RELEASE_DOMAIN, Some(domid), true, &mut out.out);
        }
        out.effects.push(Effect::DomainReleased { domid, conn });
        out
    }

    fn remove_owned_nodes(&mut self, domid: u32, out: &mut Outcome) {
        // Top-most owned nodes: owned, and parent not owned (or special).
        // Both lists come from the tree's reverse indexes: the cost is what
        // the domain owns and what names it, not the size of the store.
        let mut tops: Vec<String> = self
            .db
            .owned_by(domid)
            .filter(|p| p != "/")
            .filter(|p| {
                path::parent(p)
                    .and_then(|pp| self.db.get(pp))
                    .is_none_or(|pn| pn.owner() != domid)
            })
            .collect();
        let strip: Vec<String> = self.db.named_by_acl(domid).collect();
        let ctx = crate::store::Ctx {
            conn: ConnId(u64::MAX),
            caller: crate::access::Caller {
                domid: self.cfg.priv_domid,
                target: None,
                privileged: true,
            },
            base: path::domain_home(self.cfg.priv_domid),
            quota: None,
            features: SUPPORTED_FEATURES,
        };
        let mut ov = Overlay::new(None);
        // Strip ACL entries through the overlay, so that accounting (the
        // records shrink) follows. No watch fires for this.
        for p in &strip {
            if let Ok(Some(mut n)) = ov.get(&self.db, p) {
                n.perms.strip(domid);
                let _ = ov.set(&self.db, p, Some(n));
            }
        }
        tops.sort();
        for top in &tops {
            if self.cfg.keep_orphans || top.starts_with('@') {
                // Hand the whole owned subtree to the privileged domain.
                let mut stack = vec![top.clone()];
                while let Some(cur) = stack.pop() {
                    let Ok(Some(mut n)) = ov.get(&self.db, &cur) else {
                        continue;
                    };
                    stack.extend(n.child_names().map(|c| path::child(&cur, c)));
                    if n.perms.owner() == domid {
                        n.perms.set_owner(self.cfg.priv_domid);
                        let _ = ov.set(&self.db, &cur, Some(n));
                    }
                }
            } else if let Ok(Some(_)) = ov.get(&self.db, top) {
                // A top inside a subtree removed before is already gone.
                let _ = crate::ops::stage_removal(&self.db, &mut ov, top);
            }
        }
        let _ = self.commit(&ctx, ov, false, out);
    }

    /// The hypervisor reports `domid` shut down: fires
    /// `@releaseDomain/<domid>` once per shutdown (RESUME re-arms). Returns
    /// the events; the caller fires one generic `@releaseDomain` per batch
    /// with [`Store::release_domain_generic`].
    pub fn domain_shutdown(&mut self, domid: u32) -> Vec<(ConnId, Message)> {
        let mut out = Vec::new();
        if let Some(d) = self.domains.get_mut(&domid) {
            if d.introduced && !d.shutdown {
                d.shutdown = true;
                self.fire_special(RELEASE_DOMAIN, Some(domid), false, &mut out);
            }
        }
        out
    }

    /// One generic `@releaseDomain` event to every plain watcher.
    pub fn release_domain_generic(&self) -> Vec<(ConnId, Message)> {
        let mut out = Vec::new();
        self.fire_special(RELEASE_DOMAIN, None, true, &mut out);
        out
    }

    pub(crate) fn op_resume(&mut self, p: &[u8]) -> Result<Vec<u8>, XsError> {
        let domid = number::parse_domid(args::one_arg(p)?)?;
        self.check_removable(domid)?;
        if let Some(d) = self.domains.get_mut(&domid) {
            d.shutdown = false;
        }
        Ok(b"OK\0".to_vec())
    }

    pub(crate) fn op_set_target(&mut self, p: &[u8]) -> Result<Vec<u8>, XsError> {
        let [a, b] = args::exactly::<2>(p)?;
        let domid = number::parse_domid(a)?;
        let tdomid = number::parse_domid(b)?;
        for d in [domid, tdomid] {
            if !self.is_introduced(d) {
                return Err(XsError::Enoent);
            }
        }
        let conn = self.domain_conn(domid).ok_or(XsError::Einval)?;
        if self.domain_conn(tdomid).is_none() {
            return Err(XsError::Einval);
        }
        if !self.conns.contains_key(&conn) {
            return Err(XsError::Einval);
        }
        self.link_target(conn, tdomid);
        Ok(b"OK\0".to_vec())
    }

    pub(crate) fn op_get_feature(
        &self,
        ctx: &crate::store::Ctx,
        p: &[u8],
        oracle: &dyn DomainOracle,
    ) -> Result<Vec<u8>, XsError> {
        let a = args::strings(p);
        let features = match a.as_slice() {
            [] => ctx.features,
            [d] => {
                if !ctx.caller.privileged {
                    return Err(XsError::Eacces);
                }
                let domid = number::parse_domid(d)?;
                match self.domains.get(&domid) {
                    Some(dom) => dom.features,
                    None if oracle.exists(domid) => SUPPORTED_FEATURES,
                    None => return Err(XsError::Enoent),
                }
            }
            _ => return Err(XsError::Einval),
        };
        Ok(nul_terminated(features.to_string()))
    }

    pub(crate) fn op_set_feature(
        &mut self,
        p: &[u8],
        oracle: &dyn DomainOracle,
    ) -> Result<Vec<u8>, XsError> {
        let [d, mask] = args::exactly::<2>(p)?;
        let domid = number::parse_domid(d)?;
        if !self.domain_exists(domid, oracle) {
            return Err(XsError::Enoent);
        }
        if self.is_introduced(domid) {
            return Err(XsError::Ebusy);
        }
        let mask = u32::try_from(number::atoi(mask)).map_err(|_| XsError::Einval)?;
        if mask & !SUPPORTED_FEATURES != 0 {
            return Err(XsError::Einval);
        }
        self.domain_record(domid).features = mask;
        Ok(b"OK\0".to_vec())
    }

    /// The quota names GET_QUOTA lists, with the global value of each.
    pub fn quota_names(&self) -> Vec<(String, u64)> {
        let q = &self.cfg.quota;
        let mut v = Vec::new();
        for quota in Quota::ALL {
            if q.get(quota) != 0 {
                v.push((quota.name().to_owned(), q.get(quota)));
            }
            if quota.has_soft() && q.soft_memory != 0 {
                v.push((format!("soft-{}", quota.name()), q.soft_memory));
            }
        }
        v
    }

    fn quota_of(&self, name: &[u8], set: &crate::quota::QuotaSet) -> Result<u64, XsError> {
        if name == b"soft-memory" {
            return Ok(set.soft_memory);
        }
        Quota::from_name(name)
            .map(|q| set.get(q))
            .ok_or(XsError::Einval)
    }

    pub(crate) fn op_get_quota(
        &mut self,
        p: &[u8],
        oracle: &dyn DomainOracle,
    ) -> Result<Vec<u8>, XsError> {
        let a = args::strings(p);
        let v = match a.as_slice() {
            [] => {
                let names: Vec<String> = self.quota_names().into_iter().map(|(n, _)| n).collect();
                return Ok(nul_terminated(names.join(" ")));
            }
            [name] => self.quota_of(name, &self.cfg.quota)?,
            [d, name] => {
                let domid = number::parse_domid(d)?;
                let set = match self.domains.get(&domid) {
                    Some(dom) => dom.quota,
                    None if oracle.exists(domid) => self.cfg.quota,
                    None => return Err(XsError::Enoent),
                };
                self.quota_of(name, &set)?
            }
            _ => return Err(XsError::Einval),
        };
        Ok(nul_terminated(v.to_string()))
    }

    pub(crate) fn op_set_quota(
        &mut self,
        p: &[u8],
        oracle: &dyn DomainOracle,
    ) -> Result<Vec<u8>, XsError> {
        let a = args::strings(p);
        let (domid, name, value) = match a.as_slice() {
            [n, v] => (None, *n, *v),
            [d, n, v] => (Some(number::parse_domid(d)?), *n, *v),
            _ => return Err(XsError::Einval),
        };
        let v = number::atoi(value);
        let v = u32::try_from(v)
            .ok()
            .filter(|&v| v != u32::MAX)
            .ok_or(XsError::Einval)?;
        let soft = name == b"soft-memory";
        let quota = if soft {
            Quota::Memory
        } else {
            Quota::from_name(name).ok_or(XsError::Einval)?
        };
        let set = match domid {
            None => &mut self.cfg.quota,
            Some(d) => {
                if !self.domain_exists(d, oracle) {
                    return Err(XsError::Enoent);
                }
                &mut self.domain_record(d).quota
            }
        };
        if soft {
            set.soft_memory = u64::from(v);
        } else {
            set.set(quota, u64::from(v));
        }
        Ok(b"OK\0".to_vec())
    }

    /// Sets a global quota (CONTROL `quota set`); affects domains created
    /// later.
    pub fn set_global_quota(&mut self, quota: Quota, soft: bool, value: u64) {
        if soft {
            self.cfg.quota.soft_memory = value;
        } else {
            self.cfg.quota.set(quota, value);
        }
    }

    /// The kind of a connection.
    pub fn conn_kind(&self, id: ConnId) -> Option<ConnKind> {
        self.conns.get(&id).map(|c| c.kind)
    }
}
