//! The watch registry.
//!
//! Watches are indexed by canonical path, so finding the watches an event
//! matches costs one hash lookup per component of the event path (subtree
//! matches) or one lookup (exact matches), never a scan of all watches.
//! A path's watches and a connection's are kept in ordered sets of ids (ids
//! grow, so that is registration order): adding or removing one of the many
//! watches on `@releaseDomain` (one per xl monitor on a host), or one of
//! xenconsoled's many (one per domain), costs O(log n); finding a
//! connection's watch on a path looks through the shorter of the path's
//! and the connection's sets.

use crate::ConnId;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use xenstore_proto::path;

/// Identifies one registered watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchId(pub u64);

/// One registered watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The connection that registered it.
    pub conn: ConnId,
    /// The canonical absolute or special path (shared with the registry's
    /// index by path).
    pub canonical: Arc<str>,
    /// The client's token.
    pub token: Box<str>,
    /// Optional depth limit.
    pub depth: Option<u32>,
    /// Registered with a relative path: events are reported relative to
    /// the connection's home at registration.
    pub relative: bool,
    /// What few watches need: the path as given when it differs from the
    /// canonical one, the home of a relative watch.
    extra: Option<Box<Extra>>,
}

/// The rarely needed part of a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Extra {
    /// The path as the client gave it, if not canonical (empty otherwise).
    given: Box<str>,
    /// The home stripped from relative events (empty for an absolute
    /// watch).
    base: Box<str>,
}

impl Watch {
    /// A watch of `conn` on `given` (as the client wrote it), whose
    /// canonical path is `canonical`; `base` is the connection's home,
    /// kept only for a `relative` watch.
    pub fn new(
        conn: ConnId,
        given: &str,
        canonical: String,
        token: String,
        depth: Option<u32>,
        relative: bool,
        base: &str,
    ) -> Watch {
        let given: Box<str> = if given == canonical {
            "".into()
        } else {
            given.into()
        };
        let base: Box<str> = if relative { base.into() } else { "".into() };
        let extra =
            (!given.is_empty() || !base.is_empty()).then(|| Box::new(Extra { given, base }));
        Watch {
            conn,
            canonical: canonical.into(),
            token: token.into(),
            depth,
            relative,
            extra,
        }
    }

    /// The path as the client gave it (relative stays relative).
    pub fn given(&self) -> &str {
        match &self.extra {
            Some(e) if !e.given.is_empty() => &e.given,
            _ => &self.canonical,
        }
    }

    fn base(&self) -> &str {
        self.extra.as_ref().map_or("", |e| &e.base)
    }

    /// Bytes charged to the watcher's memory quota.
    pub fn acc_size(&self) -> usize {
        self.canonical.len() + self.token.len() + self.given().len() + 32
    }

    /// The path an event for `event_path` is reported with.
    pub fn report_path<'a>(&self, event_path: &'a str) -> &'a str {
        if self.relative {
            path::relative_to(event_path, self.base())
        } else {
            event_path
        }
    }
}

/// The watches on one path, in registration order: most paths have one,
/// which is kept inline (a B-tree set allocates a whole node for it).
#[derive(Debug)]
enum IdSet {
    One(WatchId),
    // Boxed on purpose: the rare path with many watches pays a block, and
    // every path's slot in the index is 16 bytes instead of 32.
    #[allow(clippy::box_collection)]
    Many(Box<BTreeSet<WatchId>>),
}

impl IdSet {
    fn insert(&mut self, id: WatchId) {
        match self {
            IdSet::One(first) => {
                let first = *first;
                *self = IdSet::Many(Box::new([first, id].into_iter().collect()));
            }
            IdSet::Many(set) => {
                set.insert(id);
            }
        }
    }

    /// Removes `id`; true if the set is empty afterwards.
    fn remove(&mut self, id: WatchId) -> bool {
        match self {
            IdSet::One(only) => *only == id,
            IdSet::Many(set) => {
                set.remove(&id);
                set.is_empty()
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            IdSet::One(_) => 1,
            IdSet::Many(set) => set.len(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = WatchId> + '_ {
        let (one, many) = match self {
            IdSet::One(id) => (Some(*id), None),
            IdSet::Many(set) => (None, Some(set.iter().copied())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

/// How an event matches watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Watches on the path itself only (nodes below the top of an RM).
    Exact,
    /// Watches on the path and on its ancestors, within their depth.
    Subtree,
}

/// All watches of all connections.
#[derive(Debug, Default)]
pub struct Registry {
    by_id: HashMap<WatchId, Watch>,
    by_path: HashMap<Arc<str>, IdSet>,
    by_conn: HashMap<ConnId, BTreeSet<WatchId>>,
    next: u64,
}

impl Registry {
    /// Number of watches of one connection.
    pub fn count(&self, conn: ConnId) -> usize {
        self.by_conn.get(&conn).map_or(0, BTreeSet::len)
    }

    /// Total number of watches.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when there are no watches.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The watch of `conn` with this canonical path and token.
    pub fn find(&self, conn: ConnId, canonical: &str, token: &str) -> Option<WatchId> {
        let (on_path, of_conn) = (self.by_path.get(canonical)?, self.by_conn.get(&conn)?);
        let is_it = |id: &WatchId| {
            self.by_id
                .get(id)
                .is_some_and(|w| w.conn == conn && &*w.canonical == canonical && &*w.token == token)
        };
        if on_path.len() <= of_conn.len() {
            on_path.iter().find(is_it)
        } else {
            of_conn.iter().copied().find(is_it)
        }
    }

    /// Adds a watch.
    pub fn add(&mut self, w: Watch) -> WatchId {
        self.next += 1;
        let id = WatchId(self.next);
        match self.by_path.get_mut(&w.canonical) {
            Some(set) => set.insert(id),
            None => {
                self.by_path.insert(w.canonical.clone(), IdSet::One(id));
            }
        }
        self.by_conn.entry(w.conn).or_default().insert(id);
        self.by_id.insert(id, w);
        id
    }

    /// Removes a watch, returning it.
    pub fn remove(&mut self, id: WatchId) -> Option<Watch> {
        let w = self.by_id.remove(&id)?;
        if self
            .by_path
            .get_mut(&w.canonical)
            .is_some_and(|v| v.remove(id))
        {
            self.by_path.remove(&w.canonical);
        }
        if let Some(v) = self.by_conn.get_mut(&w.conn) {
            v.remove(&id);
            if v.is_empty() {
                self.by_conn.remove(&w.conn);
            }
        }
        Some(w)
    }

    /// Removes every watch of a connection, returning them.
    pub fn remove_conn(&mut self, conn: ConnId) -> Vec<Watch> {
        let ids = self.by_conn.remove(&conn).unwrap_or_default();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(w) = self.by_id.remove(&id) {
                if self
                    .by_path
                    .get_mut(&w.canonical)
                    .is_some_and(|v| v.remove(id))
                {
                    self.by_path.remove(&w.canonical);
                }
                out.push(w);
            }
        }
        out
    }

    /// A watch by id.
    pub fn get(&self, id: WatchId) -> Option<&Watch> {
        self.by_id.get(&id)
    }

    /// The watches registered exactly on `canonical`.
    pub fn on_path(&self, canonical: &str) -> impl Iterator<Item = (WatchId, &Watch)> {
        self.by_path
            .get(canonical)
            .into_iter()
            .flat_map(IdSet::iter)
            .filter_map(|id| self.by_id.get(&id).map(|w| (id, w)))
    }

    /// The watches an event on `event_path` reaches, with the matching
    /// rule and depth limits applied, in a stable order: the path's own
    /// watches first, then its ancestors' nearest first.
    pub fn matching(&self, event_path: &str, m: Match) -> Vec<&Watch> {
        let mut out = Vec::new();
        let ev_depth = path::depth(event_path);
        let mut visit = |p: &str| {
            let d = ev_depth.saturating_sub(path::depth(p));
            for (_, w) in self.on_path(p) {
                if w.depth.is_none_or(|max| d <= max as usize) {
                    out.push(w);
                }
            }
        };
        visit(event_path);
        if m == Match::Subtree && event_path.starts_with('/') {
            for a in path::ancestors(event_path) {
                visit(a);
            }
        }
        out
    }

    /// Iterates over all watches (for reports).
    pub fn iter(&self) -> impl Iterator<Item = (&WatchId, &Watch)> {
        self.by_id.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(conn: u64, p: &str, depth: Option<u32>) -> Watch {
        Watch::new(
            ConnId(conn),
            p,
            p.into(),
            "t".into(),
            depth,
            false,
            "/local/domain/0",
        )
    }

    #[test]
    fn subtree_and_depth() {
        let mut r = Registry::default();
        r.add(w(1, "/", None));
        r.add(w(1, "/a", Some(1)));
        r.add(w(1, "/a/b/c", None));
        r.add(w(2, "/ab", None));
        let hits = |p: &str, m| {
            r.matching(p, m)
                .into_iter()
                .map(|w| w.canonical.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(hits("/a/b", Match::Subtree), ["/a", "/"]);
        assert_eq!(hits("/a/b/x", Match::Subtree), ["/"]);
        assert_eq!(hits("/a/b/c", Match::Exact), ["/a/b/c"]);
        assert_eq!(hits("@releaseDomain", Match::Subtree), Vec::<String>::new());
    }

    #[test]
    fn many_watchers_of_one_path() {
        let mut r = Registry::default();
        let ids: Vec<WatchId> = (0..1000)
            .map(|c| r.add(w(c, "@releaseDomain", None)))
            .collect();
        // One connection with many watches (xenconsoled's, one per domain).
        let many: Vec<WatchId> = (0..1000)
            .map(|i| r.add(w(7000, &format!("/local/domain/{i}/console"), None)))
            .collect();
        assert_eq!(
            r.find(ConnId(7000), "/local/domain/999/console", "t"),
            Some(many[999])
        );
        r.remove(many[10]);
        assert_eq!(r.find(ConnId(7000), "/local/domain/10/console", "t"), None);
        assert_eq!(r.count(ConnId(7000)), 999);
        // Same path and token on two connections: each finds its own.
        assert_eq!(r.find(ConnId(500), "@releaseDomain", "t"), Some(ids[500]));
        assert_eq!(r.find(ConnId(5000), "@releaseDomain", "t"), None);
        assert_eq!(r.find(ConnId(500), "@releaseDomain", "u"), None);
        r.remove(ids[500]);
        assert_eq!(r.find(ConnId(500), "@releaseDomain", "t"), None);
        // Registration order is kept for the rest.
        let order: Vec<ConnId> = r.on_path("@releaseDomain").map(|(_, w)| w.conn).collect();
        assert_eq!(order.len(), 999);
        assert!(order.windows(2).all(|p| p[0].0 < p[1].0));
    }

    #[test]
    fn remove_conn_cleans_index() {
        let mut r = Registry::default();
        let id = r.add(w(1, "/a", None));
        r.add(w(2, "/a", None));
        assert_eq!(r.find(ConnId(1), "/a", "t"), Some(id));
        assert_eq!(r.remove_conn(ConnId(1)).len(), 1);
        assert_eq!(r.find(ConnId(1), "/a", "t"), None);
        assert_eq!(r.matching("/a", Match::Exact).len(), 1);
        assert_eq!(r.count(ConnId(2)), 1);
    }
}
