//! The store's part of a live update: its nodes, watches and domain
//! records as records of Xen's migration stream (`xenstore-migrate`), and
//! back. The daemon adds what belongs to the transport (the stream header,
//! GLOBAL, the connections with their buffered input and output) and
//! decides the order C xenstored wants.
//!
//! * Nodes leave in tree order (a parent before its children, the special
//!   nodes after the tree, as C 4.18 and later write them), walked with an
//!   explicit stack: no recursion, whatever the depth.
//! * Restoring replaces the whole tree. Every node must come after its
//!   parent; a special node (`@...`) may come anywhere. Special nodes the
//!   stream does not carry keep their defaults (C 4.17 writes them as
//!   permissions only). Generations are new (the stream carries none), and
//!   the accounting is recounted from what was restored.

use crate::node::{Node, Value};
use crate::quota::Quota;
use crate::store::{Store, INTRODUCE_DOMAIN, RELEASE_DOMAIN};
use crate::watch::Watch;
use crate::ConnId;
use xenstore_migrate as mig;
use xenstore_proto::{path, Access, Perm, PermList};

/// Why a stream's content cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// A node path that is not a valid absolute or special path.
    #[error("node record with a bad path {0:?}")]
    BadPath(String),
    /// A node before its parent.
    #[error("node {0} comes before its parent")]
    Orphan(String),
    /// A node without permissions.
    #[error("node {0} has no permissions")]
    NoPerms(String),
    /// The root is missing.
    #[error("the stream has no root node")]
    NoRoot,
    /// A watch for a connection the store does not know.
    #[error("watch for unknown connection {0}")]
    UnknownConn(u64),
    /// A watch the store refuses (bad path, duplicate).
    #[error("watch {path:?} {token:?}: {reason}")]
    BadWatch {
        /// The path as recorded.
        path: String,
        /// The token.
        token: String,
        /// Why.
        reason: String,
    },
}

fn to_record_perm(p: &Perm) -> mig::Perm {
    mig::Perm {
        access: match p.access {
            Access::None => mig::PermAccess::None,
            Access::Read => mig::PermAccess::Read,
            Access::Write => mig::PermAccess::Write,
            Access::Both => mig::PermAccess::Both,
        },
        stale: p.ignored,
        // The stream's domids are 16 bits, as Xen's are.
        domid: p.domid as u16,
    }
}

fn from_record_perm(p: &mig::Perm) -> Perm {
    let access = match p.access {
        mig::PermAccess::None => Access::None,
        mig::PermAccess::Read => Access::Read,
        mig::PermAccess::Write => Access::Write,
        mig::PermAccess::Both => Access::Both,
    };
    let mut perm = Perm::new(access, u32::from(p.domid));
    perm.ignored = p.stale;
    perm
}

fn is_special(p: &str) -> bool {
    p.starts_with('@')
}

impl Store {
    /// Every committed node as a NODE record, in tree order: `/` first,
    /// each parent before its children (in creation order), then the
    /// special nodes.
    pub fn node_records(&self) -> Vec<mig::Node> {
        let db = self.db();
        let record = |p: &str, n: &Node| mig::Node {
            path: p.as_bytes().to_vec(),
            transaction: None,
            value: n.value.to_vec(),
            perms: n.perms.entries().iter().map(to_record_perm).collect(),
        };
        let mut out = Vec::with_capacity(db.len());
        let mut stack = vec!["/".to_string()];
        while let Some(p) = stack.pop() {
            let Some(n) = db.get(&p) else { continue };
            out.push(record(&p, n));
            let children: Vec<String> = n
                .child_names()
                .map(|c| {
                    if p == "/" {
                        format!("/{c}")
                    } else {
                        format!("{p}/{c}")
                    }
                })
                .collect();
            // Reversed onto the stack: popped in creation order.
            stack.extend(children.into_iter().rev());
        }
        let mut special: Vec<(&str, &Node)> = db.iter().filter(|(p, _)| is_special(p)).collect();
        special.sort_by_key(|(p, _)| *p);
        out.extend(special.into_iter().map(|(p, n)| record(p, n)));
        out
    }

    /// The watches of connection `conn`, as WATCH records of the stream's
    /// connection `stream_conn` (the path as the client gave it: a
    /// relative watch stays relative).
    pub fn watch_records(&self, conn: ConnId, stream_conn: u32) -> Vec<mig::Watch> {
        let mut ws: Vec<(u64, &Watch)> = self
            .watches()
            .iter()
            .filter(|(_, w)| w.conn == conn)
            .map(|(id, w)| (id.0, w))
            .collect();
        // Registration order, so a restore registers them alike.
        ws.sort_by_key(|(id, _)| *id);
        ws.into_iter()
            .map(|(_, w)| mig::Watch {
                conn_id: stream_conn,
                path: w.given.as_bytes().to_vec(),
                token: w.token.as_bytes().to_vec(),
                depth: w.depth.map(|d| d.min(u32::from(u16::MAX)) as u16),
            })
            .collect()
    }

    /// Every domain record the store keeps, as DOMAIN records: features,
    /// and the quotas that differ from the global ones.
    pub fn domain_records(&self) -> Vec<mig::Domain> {
        let global = self.config().quota;
        self.domains()
            .map(|d| mig::Domain {
                domid: d.domid as u16,
                features: d.features,
                quotas: Quota::ALL
                    .iter()
                    .filter(|q| d.quota.get(**q) != global.get(**q))
                    .map(|q| mig::Quota {
                        name: q.name().as_bytes().to_vec(),
                        value: u32::try_from(d.quota.get(*q)).unwrap_or(u32::MAX),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Replaces the tree with `nodes` (see the module's rules), then
    /// recounts what each domain owns.
    pub fn restore_nodes(&mut self, nodes: &[mig::Node]) -> Result<(), RestoreError> {
        // Check everything before touching the store.
        let seen = checked_nodes(nodes)?;
        let defaults: Vec<(String, Node)> = [INTRODUCE_DOMAIN, RELEASE_DOMAIN]
            .iter()
            .filter(|s| !seen.contains(**s))
            .filter_map(|s| self.db().get(s).map(|n| (s.to_string(), n.clone())))
            .collect();
        self.db_mut().clear_raw();
        for n in nodes {
            let p = String::from_utf8_lossy(&n.path).into_owned();
            let perms = PermList::from_vec(n.perms.iter().map(from_record_perm).collect())
                .ok_or_else(|| RestoreError::NoPerms(p.clone()))?;
            let mut node = Node::new(perms);
            node.value = Value::new(&n.value);
            if let (false, Some(parent)) = (is_special(&p), path::parent(&p)) {
                self.db_mut().add_child_raw(parent, path::basename(&p));
            }
            // A node listed twice keeps the children the first one got.
            if let Some(old) = self.db().get(&p) {
                node.children = old.children.clone();
            }
            self.db_mut().insert_raw(p, node);
        }
        for (p, n) in defaults {
            self.db_mut().insert_raw(p, n);
        }
        self.recount();
        Ok(())
    }

    /// Registers a watch of connection `conn` from its record (the
    /// connection must be known: [`Store::connect`]).
    pub fn restore_watch(&mut self, conn: ConnId, w: &mig::Watch) -> Result<(), RestoreError> {
        let bad = |reason: &str| RestoreError::BadWatch {
            path: String::from_utf8_lossy(&w.path).into(),
            token: String::from_utf8_lossy(&w.token).into(),
            reason: reason.into(),
        };
        let mut p = w.path.clone();
        p.push(0);
        p.extend_from_slice(&w.token);
        p.push(0);
        if let Some(d) = w.depth {
            p.extend_from_slice(d.to_string().as_bytes());
            p.push(0);
        }
        if self.conn_kind(conn).is_none() {
            return Err(RestoreError::UnknownConn(conn.0));
        }
        // As the client registered it; the event every new watch fires
        // is not sent again.
        let out = self.handle(
            conn,
            &xenstore_proto::Message::new(xenstore_proto::MsgType::Watch as u32, 0, 0, p),
            &crate::NoHypervisor,
        );
        match out
            .out
            .iter()
            .find(|(c, m)| *c == conn && m.kind() != Some(xenstore_proto::MsgType::WatchEvent))
        {
            Some((_, m)) if m.kind() == Some(xenstore_proto::MsgType::Error) => {
                Err(bad(&String::from_utf8_lossy(&m.payload).replace('\0', "")))
            }
            _ => Ok(()),
        }
    }

    /// The domain connection `conn` acts for after SET_TARGET (a ring's
    /// `tdomid` in the stream).
    pub fn conn_target(&self, conn: ConnId) -> Option<u32> {
        self.targeted
            .iter()
            .find(|(_, conns)| conns.contains(&conn))
            .map(|(t, _)| *t)
    }

    /// A ring connection handed over by a live update: `domid` is
    /// introduced again with connection `conn` (registered with
    /// [`Store::connect`] before), or with none when its ring could not be
    /// mapped again (it stays introduced, so that its death is reported);
    /// `target` is its SET_TARGET. Nothing fires: the domain was
    /// introduced all along.
    pub fn restore_ring(&mut self, domid: u32, conn: Option<ConnId>, target: Option<u32>) {
        let rec = self.domain_record(domid);
        rec.introduced = true;
        rec.conn = conn;
        if let (Some(c), Some(t)) = (conn, target) {
            self.link_target(c, t);
        }
    }

    /// A domain's features and quotas from its record (the record is made
    /// if the store has none).
    pub fn restore_domain(&mut self, d: &mig::Domain) {
        let rec = self.domain_record(u32::from(d.domid));
        rec.features = d.features;
        for q in &d.quotas {
            if let Some(quota) = Quota::from_name(&q.name) {
                rec.quota.set(quota, u64::from(q.value));
            }
        }
    }
}

/// The checks [`Store::restore_nodes`] makes before it changes anything:
/// paths valid and UTF-8, permissions present, a parent before its
/// children, the root present. A take-over runs them before it takes any
/// descriptor, so that a refused state leaves the previous daemon's
/// descriptors to a fallback binary.
pub fn check_node_records(nodes: &[mig::Node]) -> Result<(), RestoreError> {
    checked_nodes(nodes).map(|_| ())
}

fn checked_nodes(nodes: &[mig::Node]) -> Result<std::collections::HashSet<&str>, RestoreError> {
    let mut seen: std::collections::HashSet<&str> =
        std::collections::HashSet::with_capacity(nodes.len());
    for n in nodes {
        let p = std::str::from_utf8(&n.path)
            .map_err(|_| RestoreError::BadPath(String::from_utf8_lossy(&n.path).into()))?;
        if n.perms.is_empty() {
            return Err(RestoreError::NoPerms(p.into()));
        }
        if path::validate(p.as_bytes()).is_err() || (is_special(p) && p.contains('/')) {
            return Err(RestoreError::BadPath(p.into()));
        }
        if let (false, Some(parent)) = (is_special(p), path::parent(p)) {
            if !seen.contains(parent) {
                return Err(RestoreError::Orphan(p.into()));
            }
        }
        seen.insert(p);
    }
    if !seen.contains("/") {
        return Err(RestoreError::NoRoot);
    }
    Ok(seen)
}
