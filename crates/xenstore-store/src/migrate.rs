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

use crate::db::NodeRef;
use crate::node::{Node, Value};
use crate::quota::Quota;
use crate::store::{Store, StoreConfig, INTRODUCE_DOMAIN, RELEASE_DOMAIN};
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
    /// Calls `f` with every committed node in tree order: `/` first, each
    /// parent before its children (in creation order), then the special
    /// nodes, sorted. One path buffer serves the whole walk; the stack
    /// holds one child iterator per level, whatever the depth.
    fn walk_nodes<E>(
        &self,
        mut f: impl FnMut(&str, NodeRef<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let db = self.db();
        if let Some(root) = db.get("/") {
            f("/", root)?;
            let mut path = String::from("/");
            let mut stack: Vec<(usize, Box<dyn Iterator<Item = &str> + '_>)> =
                vec![(1, Box::new(root.child_names()))];
            while let Some((base, names)) = stack.last_mut() {
                let Some(name) = names.next() else {
                    stack.pop();
                    continue;
                };
                let base = *base;
                path.truncate(base);
                // Only the root's path is one byte long.
                if base != 1 {
                    path.push('/');
                }
                path.push_str(name);
                let Some(n) = db.get(&path) else { continue };
                f(&path, n)?;
                if n.child_count() > 0 {
                    stack.push((path.len(), Box::new(n.child_names())));
                }
            }
        }
        let mut special: Vec<(String, NodeRef<'_>)> = db.special_nodes().collect();
        special.sort_by(|a, b| a.0.cmp(&b.0));
        special.into_iter().try_for_each(|(p, n)| f(&p, n))
    }

    /// Every committed node as a NODE record, in the order of
    /// [`Store::write_node_records`].
    pub fn node_records(&self) -> Vec<mig::Node> {
        let mut out = Vec::with_capacity(self.db().len());
        let _ = self.walk_nodes(|p, n| {
            out.push(mig::Node {
                path: p.as_bytes().to_vec(),
                transaction: None,
                value: n.value().to_vec(),
                perms: n.perm_entries().map(|e| to_record_perm(&e)).collect(),
            });
            Ok::<(), ()>(())
        });
        out
    }

    /// Writes every committed node as a NODE record, in tree order (`/`
    /// first, each parent before its children in creation order, then the
    /// special nodes), straight from the tree: nothing is copied per node.
    /// `owner` may change each node's owner as it is written (a hand-back
    /// to C gives it no node of a dead domain). Returns the number of nodes
    /// written.
    pub fn write_node_records<W: std::io::Write>(
        &self,
        w: &mut mig::Writer<W>,
        mut owner: impl FnMut(u16) -> u16,
    ) -> mig::Result<usize> {
        let mut perms: Vec<mig::Perm> = Vec::new();
        let mut count = 0;
        self.walk_nodes(|p, n| {
            perms.clear();
            perms.extend(n.perm_entries().map(|e| to_record_perm(&e)));
            if let Some(first) = perms.first_mut() {
                first.domid = owner(first.domid);
            }
            count += 1;
            w.write_node(p.as_bytes(), n.value(), &perms)
        })?;
        Ok(count)
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
                path: w.given().as_bytes().to_vec(),
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
    /// recounts what each domain owns; a refused stream changes nothing.
    pub fn restore_nodes(&mut self, nodes: &[mig::Node]) -> Result<(), RestoreError> {
        let tree = RestoredTree::build(
            self.config(),
            nodes.len(),
            nodes
                .iter()
                .filter(|n| n.transaction.is_none())
                .map(|n| (&n.path[..], &n.value[..], n.perms.iter().copied())),
        )?;
        self.install_tree(tree);
        Ok(())
    }

    /// Replaces the tree with one read and checked before
    /// ([`RestoredTree::build`]), then recounts what each domain owns. The
    /// special nodes the tree lacks keep their present state (C 4.17
    /// writes them as permissions only), and the domain records the store
    /// holds count as older than every restored node.
    pub fn install_tree(&mut self, tree: RestoredTree) {
        let mut db = tree.db;
        for s in [INTRODUCE_DOMAIN, RELEASE_DOMAIN] {
            if db.get(s).is_none() {
                if let Some(n) = self.db().get(s) {
                    db.restore_put(s, n.to_node());
                }
            }
        }
        db.adopt_domains_of(self.db());
        for d in self.domains.values_mut() {
            d.created_gen = 0;
        }
        *self.db_mut() = db;
        self.recount();
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

/// A tree built from a stream's committed NODE records and checked: paths
/// valid and UTF-8, permissions present, a parent before its children,
/// the root present. A take-over builds it before it takes any descriptor,
/// so that a refused state leaves the previous daemon's descriptors to a
/// fallback binary; [`Store::install_tree`] then puts it in place.
#[derive(Debug)]
pub struct RestoredTree {
    db: crate::db::Db,
}

impl RestoredTree {
    /// Builds the tree from `(path, value, permissions)` in stream order,
    /// for a store configured as `cfg` (its privileged and store domains
    /// are left out of the reverse indexes, as [`Store::new`] does). Each
    /// path is hashed to find its parent and once more to store it; a
    /// node stored twice keeps the children the first one got.
    ///
    /// `expected` is the number of nodes to make room for at once
    /// ([`xenstore_migrate::count_records`] tells it from a stream).
    pub fn build<'a, P>(
        cfg: &StoreConfig,
        expected: usize,
        nodes: impl IntoIterator<Item = (&'a [u8], &'a [u8], P)>,
    ) -> Result<RestoredTree, RestoreError>
    where
        P: IntoIterator<Item = mig::Perm>,
    {
        let mut db = crate::db::Db::unindexing([cfg.priv_domid, cfg.store_domid]);
        // The special nodes besides.
        db.reserve(expected.saturating_add(2));
        let mut perms: Vec<Perm> = Vec::new();
        for (raw, value, record_perms) in nodes {
            let p = std::str::from_utf8(raw)
                .map_err(|_| RestoreError::BadPath(String::from_utf8_lossy(raw).into()))?;
            if path::validate(p.as_bytes()).is_err() || (is_special(p) && p.contains('/')) {
                return Err(RestoreError::BadPath(p.into()));
            }
            perms.clear();
            perms.extend(record_perms.into_iter().map(|r| from_record_perm(&r)));
            let perms =
                PermList::from_slice(&perms).ok_or_else(|| RestoreError::NoPerms(p.into()))?;
            if let (false, Some(parent)) = (is_special(p), path::parent(p)) {
                if !db.add_child_raw(parent, path::basename(p)) {
                    return Err(RestoreError::Orphan(p.into()));
                }
            }
            let mut node = Node::new(perms);
            node.value = Value::new(value);
            db.restore_put(p, node);
        }
        if db.get("/").is_none() {
            return Err(RestoreError::NoRoot);
        }
        Ok(RestoredTree { db })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.db.len()
    }

    /// True if there are none (never for a tree built).
    pub fn is_empty(&self) -> bool {
        self.db.is_empty()
    }
}
