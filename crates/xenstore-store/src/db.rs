//! The committed database and the overlay that stages changes.
//!
//! Every change goes through an [`Overlay`]: a transaction owns one for its
//! whole life; a request outside a transaction gets a fresh one that is
//! committed as soon as the request succeeds. So a failing request never
//! leaves half its work behind, and transactions and single requests share
//! one implementation of every operation.
//!
//! Conflict detection follows C xenstored: the first time an overlay
//! touches a node it records the node's generation (or its absence); a
//! transaction's commit fails with `EAGAIN` if any recorded generation no
//! longer matches. Starting a transaction copies nothing, and a commit costs
//! in proportion to the nodes the transaction touched.

use crate::node::Node;
use crate::watch::Match;
use indexmap::IndexMap;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use xenstore_proto::{PermList, XsError, DOMID_ANY};

/// The committed tree: nodes by canonical path, the generation counter,
/// and two reverse indexes kept in step with every change, so that removing
/// a domain costs what it owns and what names it, not the size of the
/// store: the nodes each domain owns, and the nodes whose ACL names it.
/// The domains that are never removed (the privileged and store domains,
/// which own most of a host's nodes) are left out of both.
#[derive(Debug)]
pub struct Db {
    /// Paths are shared between the map and the indexes (one allocation
    /// per node, whatever its length). Hashed with std's keyed SipHash
    /// (paths come from guests); hashbrown's map for its entry by
    /// borrowed key.
    nodes: hashbrown::HashMap<Arc<str>, Node, std::hash::RandomState>,
    generation: u64,
    by_owner: HashMap<u32, HashSet<Arc<str>>>,
    by_acl: HashMap<u32, HashSet<Arc<str>>>,
    /// The generation at which each domain record was made (kept by the
    /// store), for the stale-domid check of [`Db::check_perms`].
    domain_gens: HashMap<u32, u64>,
    /// Domains the indexes leave out.
    unindexed: [u32; 2],
}

impl Default for Db {
    /// A tree that indexes every domain.
    fn default() -> Db {
        Db::unindexing([u32::MAX; 2])
    }
}

/// What tracking one node costs a transaction: its path (a heap block of
/// its own) and the slot that records it (entry, key and hash), counted
/// twice because the map of slots grows by doubling: so the charge bounds
/// the memory really held.
fn track_charge(path: &str) -> u64 {
    let slot = std::mem::size_of::<Entry>() + std::mem::size_of::<String>() + 8;
    (path.len() + BLOCK_OVERHEAD + 2 * slot) as u64
}

fn acl_domids(n: &Node) -> impl Iterator<Item = u32> + '_ {
    n.perms.entries()[1..].iter().map(|e| e.domid)
}

/// [`Db::index`] on the index fields alone, for callers holding an entry
/// of the node map.
fn index_into(
    by_owner: &mut HashMap<u32, HashSet<Arc<str>>>,
    by_acl: &mut HashMap<u32, HashSet<Arc<str>>>,
    unindexed: [u32; 2],
    path: &Arc<str>,
    n: &Node,
) {
    let owner = n.perms.owner();
    if !unindexed.contains(&owner) {
        by_owner.entry(owner).or_default().insert(path.clone());
    }
    for d in acl_domids(n) {
        if !unindexed.contains(&d) {
            by_acl.entry(d).or_default().insert(path.clone());
        }
    }
}

impl Db {
    /// An empty tree whose indexes leave out `domids` (domains that are
    /// never removed: [`Db::owned_by`] and [`Db::named_by_acl`] list
    /// nothing for them).
    pub fn unindexing(domids: [u32; 2]) -> Db {
        Db {
            nodes: hashbrown::HashMap::with_hasher(std::hash::RandomState::new()),
            generation: 0,
            by_owner: HashMap::new(),
            by_acl: HashMap::new(),
            domain_gens: HashMap::new(),
            unindexed: domids,
        }
    }

    fn indexed(&self, domid: u32) -> bool {
        !self.unindexed.contains(&domid)
    }

    /// A committed node.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Number of nodes, special nodes included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false once the root exists.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The current generation counter.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Takes a fresh generation number.
    pub fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    fn index(&mut self, path: &Arc<str>, n: &Node) {
        index_into(
            &mut self.by_owner,
            &mut self.by_acl,
            self.unindexed,
            path,
            n,
        );
    }

    fn unindex(&mut self, path: &str, n: &Node) {
        let drop_from = |map: &mut HashMap<u32, HashSet<Arc<str>>>, d: u32| {
            if let Some(set) = map.get_mut(&d) {
                set.remove(path);
                if set.is_empty() {
                    map.remove(&d);
                }
            }
        };
        drop_from(&mut self.by_owner, n.perms.owner());
        for d in acl_domids(n) {
            drop_from(&mut self.by_acl, d);
        }
    }

    /// Stores a node under `path`, keeping the indexes.
    fn put(&mut self, path: String, node: Node) {
        let key = match self.nodes.remove_entry(path.as_str()) {
            Some((key, old)) => {
                self.unindex(&key, &old);
                key
            }
            None => Arc::from(path),
        };
        self.index(&key, &node);
        self.nodes.insert(key, node);
    }

    /// Removes the node at `path`, keeping the indexes.
    fn take(&mut self, path: &str) -> Option<Node> {
        let old = self.nodes.remove(path)?;
        self.unindex(path, &old);
        Some(old)
    }

    /// True if the reverse indexes match the nodes (tests and `check`).
    pub fn indexes_consistent(&self) -> bool {
        let mut owner: HashMap<u32, HashSet<Arc<str>>> = HashMap::new();
        let mut acl: HashMap<u32, HashSet<Arc<str>>> = HashMap::new();
        for (p, n) in &self.nodes {
            if self.indexed(n.perms.owner()) {
                owner.entry(n.perms.owner()).or_default().insert(p.clone());
            }
            for d in acl_domids(n).filter(|&d| self.indexed(d)) {
                acl.entry(d).or_default().insert(p.clone());
            }
        }
        owner == self.by_owner && acl == self.by_acl
    }

    /// Paths of the nodes `domid` owns.
    pub fn owned_by(&self, domid: u32) -> impl Iterator<Item = &str> {
        self.by_owner
            .get(&domid)
            .into_iter()
            .flatten()
            .map(|p| &**p)
    }

    /// Paths of the nodes whose ACL (entries after the owner) names `domid`.
    pub fn named_by_acl(&self, domid: u32) -> impl Iterator<Item = &str> {
        self.by_acl.get(&domid).into_iter().flatten().map(|p| &**p)
    }

    /// True if some node is owned by `domid` or names it in its ACL.
    pub fn names(&self, domid: u32) -> bool {
        self.by_owner.contains_key(&domid) || self.by_acl.contains_key(&domid)
    }

    /// Every domid that owns a node or is named in an ACL (unordered,
    /// possibly repeated).
    pub fn named_domids(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_owner.keys().chain(self.by_acl.keys()).copied()
    }

    /// Records that the store made (`Some(generation)`) or dropped
    /// (`None`) the record of `domid`.
    pub(crate) fn set_domain_gen(&mut self, domid: u32, gen: Option<u64>) {
        match gen {
            Some(g) => self.domain_gens.insert(domid, g),
            None => self.domain_gens.remove(&domid),
        };
    }

    /// Replaces the record generations by `records` (`check` repairs);
    /// true if they differed.
    pub(crate) fn sync_domain_gens(&mut self, records: impl Iterator<Item = (u32, u64)>) -> bool {
        let want: HashMap<u32, u64> = records.collect();
        let differ = want != self.domain_gens;
        self.domain_gens = want;
        differ
    }

    /// C xenstored's stale-domid rule: marks as ignored every entry after
    /// the owner that names a domain without a record, or one whose record
    /// was made after the node's last change (`generation`), so that a new
    /// domain reusing a dead one's domid does not inherit its grants.
    /// `DOMID_ANY` entries are exempt. Returns true if it marked any.
    pub fn check_perms(&self, perms: &mut PermList, generation: u64) -> bool {
        let mut changed = false;
        for e in perms.entries_mut().iter_mut().skip(1) {
            if e.ignored || e.domid == DOMID_ANY {
                continue;
            }
            if self
                .domain_gens
                .get(&e.domid)
                .is_none_or(|&made| made > generation)
            {
                e.ignored = true;
                changed = true;
            }
        }
        changed
    }

    /// A copy of the node at `path` as access checks see it: with
    /// [`Db::check_perms`] applied. Whatever is written back from such a
    /// copy keeps the marks, as in C.
    pub fn get_checked(&self, path: &str) -> Option<Node> {
        let mut n = self.nodes.get(path)?.clone();
        let generation = n.generation;
        self.check_perms(&mut n.perms, generation);
        Some(n)
    }

    /// The permissions of `n` (a committed node) as access checks see
    /// them.
    pub fn checked_perms(&self, n: &Node) -> PermList {
        let mut p = n.perms.clone();
        self.check_perms(&mut p, n.generation);
        p
    }

    /// Stores a node as it is (start-up, repairs).
    pub(crate) fn insert_raw(&mut self, path: String, mut node: Node) {
        node.generation = self.next_generation();
        self.put(path, node);
    }

    /// Stores a restored node under `path` with a fresh generation: a
    /// node stored twice keeps the children the first one got.
    pub(crate) fn restore_put(&mut self, path: &str, mut node: Node) {
        node.generation = self.next_generation();
        let Db {
            nodes,
            by_owner,
            by_acl,
            unindexed,
            ..
        } = self;
        if let hashbrown::hash_map::EntryRef::Vacant(e) = nodes.entry_ref(path) {
            // The usual case: the path hashed once.
            let stored = e.insert_entry_with_key(Arc::from(path), node);
            index_into(by_owner, by_acl, *unindexed, stored.key(), stored.get());
            return;
        }
        if let Some(old) = self.nodes.get(path) {
            node.children = old.children.clone();
        }
        self.put(path.to_owned(), node);
    }

    /// Room for `additional` more nodes without growing the map.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.nodes.reserve(additional);
    }

    /// Appends a child name to a node in place (a restore, which inserts
    /// parents before children); false if there is no node at `path`.
    pub(crate) fn add_child_raw(&mut self, path: &str, child: &str) -> bool {
        match self.nodes.get_mut(path) {
            Some(n) => {
                n.add_child(child);
                true
            }
            None => false,
        }
    }

    /// Takes over `from`'s domain records as records every node of this
    /// tree is younger than (a live update's restore: the domains existed
    /// before the restored nodes' last changes), and a generation counter
    /// past both.
    pub(crate) fn adopt_domains_of(&mut self, from: &Db) {
        self.domain_gens = from.domain_gens.keys().map(|&d| (d, 0)).collect();
        self.generation = self.generation.max(from.generation);
    }

    /// Removes a node as it is (repairs).
    pub(crate) fn remove_raw(&mut self, path: &str) -> Option<Node> {
        self.take(path)
    }

    /// Removes a child name from a node in place (`check` repairs; the
    /// indexes do not depend on child lists).
    pub(crate) fn remove_child_raw(&mut self, path: &str, child: &str) {
        if let Some(n) = self.nodes.get_mut(path) {
            n.remove_child(child);
        }
    }

    /// All nodes (reports, consistency checks).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(p, n)| (&**p, n))
    }
}

/// Net change of one owner's accounting staged in an overlay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    /// Nodes.
    pub nodes: i64,
    /// Accounted bytes.
    pub memory: i64,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Generation at first touch, `None` if the node was missing.
    base_gen: Option<u64>,
    /// Permissions at first touch, for watch filtering after commit.
    old_perms: Option<PermList>,
    /// The node as the overlay sees it now.
    node: Option<Node>,
    dirty: bool,
    fire: Option<Match>,
}

/// A node that must fire watches once the overlay is committed.
#[derive(Debug, Clone)]
pub struct Fired {
    /// The node's path.
    pub path: String,
    /// How it matches watches.
    pub how: Match,
    /// The node's permissions when the overlay first touched it.
    pub old_perms: Option<PermList>,
}

/// Staged changes over a [`Db`].
#[derive(Debug, Default)]
pub struct Overlay {
    entries: IndexMap<String, Entry>,
    fire_order: Vec<usize>,
    deltas: HashMap<u32, Delta>,
    /// Most distinct nodes this overlay may touch (transaction-nodes quota).
    pub limit: Option<usize>,
    /// An operation failed half-way; the transaction can only be aborted.
    pub failed: bool,
    /// Nodes were created (the commit re-checks the node quota).
    pub created: bool,
    /// Bytes this overlay holds: the path of every node it touched
    /// (bookkeeping of a tracked access) plus, for each staged node, its
    /// memory charge (record plus path). A transaction's connection's
    /// domain is charged this while the transaction is open.
    held: u64,
    /// The part of `held` currently added to a domain's memory usage (kept
    /// by the store, so it can release exactly that).
    pub(crate) charged: u64,
    /// Most bytes `held` may reach (memory quota left for this
    /// transaction); `None` for no limit.
    pub(crate) budget: Option<u64>,
    /// Number of successful `set` calls, to tell whether a failed request
    /// staged part of its work.
    writes: u64,
    /// The overlay of a transaction (its memory is charged while open).
    pub(crate) in_tx: bool,
}

/// What the allocator adds to each heap block (header and rounding, as
/// glibc's malloc does): charged per block a transaction holds.
const BLOCK_OVERHEAD: usize = 24;

/// Bytes held for a node staged at `path` (nothing for a deletion): its
/// record and path, and the blocks of its value and permission list.
fn staged_charge(path: &str, n: &Option<Node>) -> u64 {
    n.as_ref().map_or(0, |n| staged_node_charge(path, n))
}

fn staged_node_charge(path: &str, n: &Node) -> u64 {
    (n.mem_charge(path) + 2 * BLOCK_OVERHEAD) as u64
}

fn contribution(path: &str, n: &Option<Node>) -> Option<(u32, i64)> {
    n.as_ref().map(|n| {
        (
            n.perms.owner(),
            i64::try_from(n.mem_charge(path)).unwrap_or(i64::MAX),
        )
    })
}

impl Overlay {
    /// An overlay with an optional touched-node limit.
    pub fn new(limit: Option<usize>) -> Overlay {
        Overlay {
            limit,
            ..Overlay::default()
        }
    }

    /// Number of distinct nodes touched.
    pub fn touched(&self) -> usize {
        self.entries.len()
    }

    /// The net accounting change for `owner`.
    pub fn delta(&self, owner: u32) -> Delta {
        self.deltas.get(&owner).copied().unwrap_or_default()
    }

    /// All net accounting changes.
    pub fn deltas(&self) -> impl Iterator<Item = (u32, Delta)> + '_ {
        self.deltas.iter().map(|(k, v)| (*k, *v))
    }

    /// True if the overlay has changes to commit.
    pub fn is_dirty(&self) -> bool {
        self.entries.values().any(|e| e.dirty)
    }

    /// Whether touching `n` more nodes not yet touched would pass the limit.
    pub fn would_exceed(&self, n: usize) -> bool {
        self.limit.is_some_and(|l| self.entries.len() + n > l)
    }

    /// Bytes held (see the field); what an open transaction is charged.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Number of successful `set` calls so far.
    pub(crate) fn writes(&self) -> u64 {
        self.writes
    }

    /// How much `held` grows if `records` (path and new node, each path
    /// distinct) are staged.
    pub fn growth_if_staged<'a>(&self, records: impl Iterator<Item = (&'a str, &'a Node)>) -> i64 {
        records
            .map(|(p, n)| {
                let new = staged_node_charge(p, n) as i64;
                match self.entries.get(p) {
                    Some(e) if e.dirty => new - staged_charge(p, &e.node) as i64,
                    Some(_) => new,
                    None => new + track_charge(p) as i64,
                }
            })
            .sum()
    }

    /// True if growing `held` by `growth` passes the budget.
    pub fn over_budget(&self, growth: i64) -> bool {
        growth > 0
            && self
                .budget
                .is_some_and(|b| self.held.saturating_add_signed(growth) > b)
    }

    /// True if the overlay already touched `path`.
    pub fn has_touched(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    fn touch(&mut self, db: &Db, path: &str) -> Result<usize, XsError> {
        if let Some(i) = self.entries.get_index_of(path) {
            return Ok(i);
        }
        if self.would_exceed(1) {
            self.failed = true;
            return Err(XsError::Enospc);
        }
        // Tracking an access holds its path. Refusing it changes nothing
        // staged, so the transaction stays usable.
        let cost = track_charge(path);
        if self.over_budget(cost as i64) {
            return Err(XsError::Eio);
        }
        self.held += cost;
        let node = db.get_checked(path);
        let entry = Entry {
            base_gen: node.as_ref().map(|n| n.generation),
            old_perms: node.as_ref().map(|n| n.perms.clone()),
            node,
            dirty: false,
            fire: None,
        };
        Ok(self.entries.insert_full(path.to_owned(), entry).0)
    }

    /// The node at `path` as the overlay sees it, recording the access.
    pub fn get(&mut self, db: &Db, path: &str) -> Result<Option<Node>, XsError> {
        let i = self.touch(db, path)?;
        Ok(self.entries[i].node.clone())
    }

    /// Replaces (or creates, with `None` deletes) the node at `path`.
    pub fn set(&mut self, db: &Db, path: &str, node: Option<Node>) -> Result<(), XsError> {
        let i = self.touch(db, path)?;
        let old = if self.entries[i].dirty {
            staged_charge(path, &self.entries[i].node)
        } else {
            0
        };
        let new = staged_charge(path, &node);
        if new > old && self.over_budget(i64::try_from(new - old).unwrap_or(i64::MAX)) {
            // Callers check before staging; this is the backstop, and part
            // of the request may already be staged.
            self.failed = true;
            return Err(XsError::Eio);
        }
        self.held = self.held.saturating_sub(old).saturating_add(new);
        self.writes += 1;
        let e = &mut self.entries[i];
        if let Some((owner, size)) = contribution(path, &e.node) {
            let d = self.deltas.entry(owner).or_default();
            d.nodes -= 1;
            d.memory -= size;
        }
        if let Some((owner, size)) = contribution(path, &node) {
            let d = self.deltas.entry(owner).or_default();
            d.nodes += 1;
            d.memory += size;
        }
        e.node = node;
        e.dirty = true;
        Ok(())
    }

    /// Marks `path` (already touched) to fire watches at commit. A subtree
    /// match replaces an exact one, not the other way round.
    pub fn fire(&mut self, path: &str, how: Match) {
        if let Some(i) = self.entries.get_index_of(path) {
            let e = &mut self.entries[i];
            match e.fire {
                None => {
                    e.fire = Some(how);
                    self.fire_order.push(i);
                }
                Some(_) if how == Match::Subtree => e.fire = Some(how),
                Some(_) => {}
            }
        }
    }

    /// Checks that nothing this overlay touched changed in `db` since.
    pub fn conflicts(&self, db: &Db) -> bool {
        self.entries
            .iter()
            .any(|(p, e)| db.get(p).map(|n| n.generation) != e.base_gen)
    }

    /// Writes the staged changes into `db` with fresh generations and
    /// returns the nodes that fire watches, in firing order. The caller has
    /// checked conflicts and quotas; accounting is the caller's too (see
    /// [`Overlay::deltas`], to be read before this call).
    pub fn apply(self, db: &mut Db) -> Vec<Fired> {
        let Overlay {
            entries,
            fire_order,
            ..
        } = self;
        let mut fired = Vec::with_capacity(fire_order.len());
        for &i in &fire_order {
            if let Some((p, e)) = entries.get_index(i) {
                // A node created and deleted again fires nothing.
                if e.base_gen.is_some() || e.node.is_some() {
                    fired.push(Fired {
                        path: p.clone(),
                        how: e.fire.unwrap_or(Match::Exact),
                        old_perms: e.old_perms.clone(),
                    });
                }
            }
        }
        for (path, e) in entries {
            if !e.dirty {
                continue;
            }
            match e.node {
                Some(mut n) => {
                    n.generation = db.next_generation();
                    db.put(path, n);
                }
                None => {
                    db.take(&path);
                }
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenstore_proto::Access;

    fn db_with(paths: &[&str]) -> Db {
        let mut db = Db::default();
        for p in paths {
            db.insert_raw((*p).into(), Node::new(PermList::owned_by(0, Access::None)));
        }
        db
    }

    #[test]
    fn conflict_on_changed_generation() {
        let mut db = db_with(&["/", "/a"]);
        let mut ov = Overlay::new(None);
        assert!(ov.get(&db, "/a").unwrap().is_some());
        assert!(ov.get(&db, "/b").unwrap().is_none());
        assert!(!ov.conflicts(&db));
        db.insert_raw("/b".into(), Node::new(PermList::owned_by(0, Access::None)));
        assert!(ov.conflicts(&db));
    }

    #[test]
    fn deltas_track_net_change() {
        let db = db_with(&["/"]);
        let mut ov = Overlay::new(None);
        let n = Node::new(PermList::owned_by(5, Access::None));
        ov.set(&db, "/x", Some(n.clone())).unwrap();
        ov.set(&db, "/y", Some(n)).unwrap();
        ov.set(&db, "/y", None).unwrap();
        assert_eq!(ov.delta(5).nodes, 1);
        // The record (16 + 8) plus the path "/x".
        assert_eq!(ov.delta(5).memory, 24 + 2);
    }

    #[test]
    fn limit_fails_overlay() {
        let db = db_with(&["/"]);
        let mut ov = Overlay::new(Some(1));
        ov.get(&db, "/").unwrap();
        assert_eq!(ov.get(&db, "/a"), Err(XsError::Enospc));
        assert!(ov.failed);
    }

    #[test]
    fn held_bytes_and_budget() {
        let db = db_with(&["/", "/a"]);
        let t = |p: &str| track_charge(p);
        let mut ov = Overlay::new(None);
        ov.get(&db, "/a").unwrap();
        // A tracked read holds its path and its entry.
        assert_eq!(ov.held(), t("/a"));
        assert!(t("/a") > 2 + std::mem::size_of::<Entry>() as u64);
        let n = Node::new(PermList::owned_by(5, Access::None));
        ov.set(&db, "/a", Some(n.clone())).unwrap();
        // A staged record holds its charge (record and path) too.
        let staged = (24 + 2 + 2 * BLOCK_OVERHEAD) as u64;
        assert_eq!(ov.held(), t("/a") + staged);
        ov.set(&db, "/a", None).unwrap();
        assert_eq!(ov.held(), t("/a"));
        ov.budget = Some(t("/a") + 10);
        assert_eq!(ov.set(&db, "/a", Some(n.clone())), Err(XsError::Eio));
        assert!(ov.failed);
        let mut ov = Overlay::new(None);
        ov.budget = Some(t("/a") + 3);
        ov.get(&db, "/a").unwrap();
        // Refusing a read stages nothing: the overlay stays usable.
        assert_eq!(ov.get(&db, "/bb"), Err(XsError::Eio));
        assert!(!ov.failed && !ov.has_touched("/bb"));
        assert_eq!(ov.held(), t("/a"));
        let staged = (26 + 2 * BLOCK_OVERHEAD) as i64;
        assert_eq!(ov.growth_if_staged([("/a", &n)].into_iter()), staged);
        assert_eq!(
            ov.growth_if_staged([("/b", &n)].into_iter()),
            staged + t("/b") as i64
        );
    }

    #[test]
    fn stale_domid_rule() {
        let mut db = Db::default();
        db.set_domain_gen(1, Some(5));
        db.set_domain_gen(2, Some(10));
        let mut p = PermList::parse(
            ["n2", "r1", "r2", "r3", "r32757"]
                .iter()
                .map(|s| s.as_bytes()),
        )
        .unwrap();
        // Node last changed at 10: domain 1 (5) and 2 (10) are not newer;
        // 3 has no record; DOMID_ANY is exempt; the owner is never marked.
        assert!(db.check_perms(&mut p, 10));
        let ignored: Vec<bool> = p.entries().iter().map(|e| e.ignored).collect();
        assert_eq!(ignored, [false, false, false, true, false]);
        // Node last changed at 9: domain 2's record is newer.
        let mut q = PermList::parse(["n2", "r2"].iter().map(|s| s.as_bytes())).unwrap();
        assert!(db.check_perms(&mut q, 9));
        assert!(q.entries()[1].ignored);
        // A dropped record: ignored whatever the generations.
        db.set_domain_gen(1, None);
        let mut r = PermList::parse(["n0", "b1"].iter().map(|s| s.as_bytes())).unwrap();
        assert!(db.check_perms(&mut r, u64::MAX));
        assert!(r.entries()[1].ignored);
        // Marks are never cleared.
        assert!(!db.check_perms(&mut r, u64::MAX));
        assert!(r.entries()[1].ignored);
    }
}
