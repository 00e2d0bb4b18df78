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
//!
//! The committed tree keeps no path. Each node is a 48-byte slot in an
//! arena, naming its parent's slot and holding its last component, its
//! permissions and its value as one run of bytes: inside the slot when the
//! run is short (most of Xenstore's nodes: a state, a number, a name),
//! else in a byte pool ([`crate::blobs`]). A table of slot numbers, hashed
//! by full path with a keyed hash, finds a node: the candidate's path is
//! compared component by component up its chain of parents, never built.
//! A removed node whose slot other slots still name as their parent stays
//! in the arena, out of the table, until the last of them goes, so a path
//! is always what its chain spells. The reverse indexes hold slot numbers.

use crate::blobs::{Blobs, Handle};
use crate::node::{Children, Node, Value, NODE_HEADER_SIZE, PERM_ENTRY_SIZE};
use crate::watch::Match;
use hashbrown::HashTable;
use indexmap::IndexMap;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use xenstore_proto::{path, Access, Perm, PermList, XsError, DOMID_ANY};

/// No slot: the parent of a node stored without one (the root, the
/// special nodes, a node whose parent was missing when it was stored: its
/// name is then its whole path).
const NONE: u32 = u32::MAX;
/// Bytes of a node's run kept inside its slot.
const INLINE: usize = 16;
/// Slots per arena page (pages never move).
const PAGE_SLOTS: usize = 1024;

/// One node of the committed tree, or a removed one kept for the paths of
/// the slots below it (`perm_count == 0`), or a free slot.
#[derive(Debug, Clone, Default)]
struct Slot {
    generation: u64,
    children: Children,
    parent: u32,
    /// Slots naming this one as their parent.
    kids: u32,
    /// Length of the run: name, permissions, value.
    len: u32,
    name_len: u16,
    /// Permission entries; never 0 for a node in the table.
    perm_count: u16,
    /// The run when it is at most [`INLINE`] bytes, else its pool handle.
    inline: [u8; INLINE],
}

/// A permission entry in a run: a flags byte (the access in the low two
/// bits, ignored in the high bit), then the domid in two bytes, or `FFFF`
/// and the domid in four.
fn encode_perm(out: &mut Vec<u8>, p: &Perm) {
    let access = match p.access {
        Access::None => 0,
        Access::Read => 1,
        Access::Write => 2,
        Access::Both => 3,
    };
    out.push(access | if p.ignored { 0x80 } else { 0 });
    match u16::try_from(p.domid) {
        Ok(d) if d != u16::MAX => out.extend_from_slice(&d.to_le_bytes()),
        _ => {
            out.extend_from_slice(&u16::MAX.to_le_bytes());
            out.extend_from_slice(&p.domid.to_le_bytes());
        }
    }
}

/// The entry at `bytes[at..]` and the offset after it.
#[inline]
fn decode_perm(bytes: &[u8], at: usize) -> Option<(Perm, usize)> {
    let [flags, lo, hi] = *bytes.get(at..at + 3)? else {
        return None;
    };
    let short = u16::from_le_bytes([lo, hi]);
    let (domid, next) = if short == u16::MAX {
        let [a, b, c, d] = *bytes.get(at + 3..at + 7)? else {
            return None;
        };
        (u32::from_le_bytes([a, b, c, d]), at + 7)
    } else {
        (u32::from(short), at + 3)
    };
    let access = match flags & 3 {
        0 => Access::None,
        1 => Access::Read,
        2 => Access::Write,
        _ => Access::Both,
    };
    Some((
        Perm {
            access,
            domid,
            ignored: flags & 0x80 != 0,
        },
        next,
    ))
}

/// The entries of a run's permissions (`bytes` starts at the first).
fn decode_perms(bytes: &[u8], count: u16) -> impl Iterator<Item = Perm> + '_ {
    let mut at = 0;
    (0..count).map_while(move |_| {
        let (p, next) = decode_perm(bytes, at)?;
        at = next;
        Some(p)
    })
}

/// Bytes taken by `count` entries at the start of `bytes`.
fn perms_len(bytes: &[u8], count: u16) -> usize {
    let mut at = 0;
    for _ in 0..count {
        match decode_perm(bytes, at) {
            Some((_, next)) => at = next,
            None => break,
        }
    }
    at
}

/// Where a slot keeps its run ([`Arena::layout`]).
enum Layout {
    Inline,
    Split,
    Pooled,
}

/// Builds in `run` the run of a node named `name`; returns the length of
/// its name and permissions.
fn build_run(run: &mut Vec<u8>, name: &[u8], perms: &PermList, value: &[u8]) -> usize {
    run.clear();
    run.extend_from_slice(name);
    for p in perms.entries() {
        encode_perm(run, p);
    }
    let head = run.len();
    run.extend_from_slice(value);
    head
}

/// The arena: slots in pages, the byte pool of long runs.
#[derive(Default)]
struct Arena {
    pages: Vec<Vec<Slot>>,
    free: Vec<u32>,
    blobs: Blobs,
}

impl Arena {
    fn slot(&self, i: u32) -> &Slot {
        let i = i as usize;
        &self.pages[i / PAGE_SLOTS][i % PAGE_SLOTS]
    }

    fn slot_mut(&mut self, i: u32) -> &mut Slot {
        let i = i as usize;
        &mut self.pages[i / PAGE_SLOTS][i % PAGE_SLOTS]
    }

    /// How slot `s` keeps its run: all inside; name and permissions
    /// inside after the value's handle (when they fit whatever the width
    /// of their entries), the value in the pool; or the whole run in the
    /// pool. Told from the slot's lengths alone.
    fn layout(s: &Slot) -> Layout {
        let len = s.len as usize;
        if len <= INLINE {
            Layout::Inline
        } else if usize::from(s.name_len) + 7 * usize::from(s.perm_count) <= INLINE - 4 {
            Layout::Split
        } else {
            Layout::Pooled
        }
    }

    fn handle(s: &Slot) -> Handle {
        Handle::from_le_bytes([s.inline[0], s.inline[1], s.inline[2], s.inline[3]])
    }

    /// The run of `s` as name and permissions followed by the value, and,
    /// when the value is kept apart, the value.
    fn pieces<'a>(&'a self, s: &'a Slot) -> (&'a [u8], Option<&'a [u8]>) {
        let len = s.len as usize;
        match Arena::layout(s) {
            Layout::Inline => (&s.inline[..len], None),
            Layout::Split => {
                let head = &s.inline[4..];
                let name_len = usize::from(s.name_len);
                let head_len =
                    name_len + perms_len(head.get(name_len..).unwrap_or_default(), s.perm_count);
                let head = head.get(..head_len).unwrap_or_default();
                let value = self
                    .blobs
                    .get(Arena::handle(s), len.saturating_sub(head_len));
                (head, Some(value))
            }
            Layout::Pooled => (self.blobs.get(Arena::handle(s), len), None),
        }
    }

    fn name<'a>(&'a self, s: &'a Slot) -> &'a [u8] {
        let n = usize::from(s.name_len);
        let head = match Arena::layout(s) {
            Layout::Inline => &s.inline[..],
            Layout::Split => &s.inline[4..],
            Layout::Pooled => self.blobs.get(Arena::handle(s), s.len as usize),
        };
        head.get(..n).unwrap_or_default()
    }

    /// Stores `run` (`head_len` bytes of name and permissions, then the
    /// value) as the run of slot `i`, whose name length and permission
    /// count are set; its previous run is freed first.
    fn set_run(&mut self, i: u32, run: &[u8], head_len: usize) {
        self.free_run(i);
        let s = self.slot_mut(i);
        s.len = u32::try_from(run.len()).unwrap_or(u32::MAX);
        let layout = Arena::layout(s);
        let mut inline = [0u8; INLINE];
        match layout {
            Layout::Inline => {
                if let Some(dst) = inline.get_mut(..run.len()) {
                    dst.copy_from_slice(run);
                }
            }
            Layout::Split => {
                let (head, value) = run.split_at(head_len.min(run.len()));
                // The layout guarantees the head fits (names are at most
                // 65,535 bytes, as a path in a message or a stream).
                if let Some(dst) = inline.get_mut(4..4 + head.len()) {
                    dst.copy_from_slice(head);
                }
                let h = self.blobs.alloc(value);
                inline[..4].copy_from_slice(&h.to_le_bytes());
            }
            Layout::Pooled => {
                let h = self.blobs.alloc(run);
                inline[..4].copy_from_slice(&h.to_le_bytes());
            }
        }
        self.slot_mut(i).inline = inline;
    }

    fn free_run(&mut self, i: u32) {
        let s = self.slot(i);
        let len = s.len as usize;
        match Arena::layout(s) {
            Layout::Inline => {}
            Layout::Split => {
                let (head, _) = self.pieces(s);
                let value_len = len.saturating_sub(head.len());
                let h = Arena::handle(s);
                self.blobs.free(h, value_len);
            }
            Layout::Pooled => {
                let h = Arena::handle(s);
                self.blobs.free(h, len);
            }
        }
        self.slot_mut(i).len = 0;
    }

    fn new_slot(&mut self, s: Slot) -> u32 {
        if let Some(i) = self.free.pop() {
            *self.slot_mut(i) = s;
            return i;
        }
        if self.pages.last().is_none_or(|p| p.len() == PAGE_SLOTS) {
            self.pages.push(Vec::with_capacity(PAGE_SLOTS));
        }
        let page = self.pages.len() - 1;
        let at = self.pages[page].len();
        self.pages[page].push(s);
        u32::try_from(page * PAGE_SLOTS + at).unwrap_or(NONE)
    }

    /// Gives slot `i` back, and then each parent left removed and with no
    /// slot below it.
    fn release(&mut self, mut i: u32) {
        loop {
            self.free_run(i);
            let parent = self.slot(i).parent;
            *self.slot_mut(i) = Slot::default();
            self.free.push(i);
            if parent == NONE {
                return;
            }
            let p = self.slot_mut(parent);
            p.kids = p.kids.saturating_sub(1);
            if p.kids > 0 || p.perm_count > 0 {
                return;
            }
            i = parent;
        }
    }

    /// True if slot `i`'s path is `path`: its name ends the path, and the
    /// rest is its parent's path and a `/` (only `/` under the root).
    fn path_is(&self, mut i: u32, path: &str) -> bool {
        let mut rest = path.as_bytes();
        let mut first = true;
        loop {
            let s = self.slot(i);
            let name = self.name(s);
            if s.parent == NONE {
                // The root under a child stands for the empty prefix.
                return if !first && name == b"/" {
                    rest.is_empty()
                } else {
                    rest == name
                };
            }
            // Compared byte by byte: names are short, a call to memcmp
            // costs more than the loop.
            let Some(cut) = rest.len().checked_sub(name.len() + 1) else {
                return false;
            };
            if rest[cut] != b'/' || !rest[cut + 1..].iter().eq(name.iter()) {
                return false;
            }
            rest = &rest[..cut];
            i = s.parent;
            first = false;
        }
    }

    /// The names from the top of slot `i`'s chain down to it.
    fn chain(&self, mut i: u32, names: &mut Vec<u32>) {
        names.clear();
        loop {
            names.push(i);
            let p = self.slot(i).parent;
            if p == NONE {
                break;
            }
            i = p;
        }
        names.reverse();
    }

    /// Slot `i`'s path.
    fn path_of(&self, i: u32) -> String {
        let mut chain = Vec::new();
        self.chain(i, &mut chain);
        let mut out = String::new();
        for (k, &j) in chain.iter().enumerate() {
            let name = String::from_utf8_lossy(self.name(self.slot(j)));
            if k > 0 && out != "/" {
                out.push('/');
            }
            out.push_str(&name);
        }
        out
    }

    /// The first byte of the top name of slot `i`'s chain.
    fn top_byte(&self, mut i: u32) -> Option<u8> {
        loop {
            let s = self.slot(i);
            if s.parent == NONE {
                return self.name(s).first().copied();
            }
            i = s.parent;
        }
    }

    fn live(&self) -> impl Iterator<Item = (u32, &Slot)> {
        self.pages.iter().enumerate().flat_map(|(p, page)| {
            page.iter()
                .enumerate()
                .filter(|(_, s)| s.perm_count > 0)
                .map(move |(k, s)| ((p * PAGE_SLOTS + k) as u32, s))
        })
    }
}

/// A committed node, read in place.
#[derive(Clone, Copy)]
pub struct NodeRef<'a> {
    slot: &'a Slot,
    /// Name and permissions, then the value unless it is kept apart.
    run: &'a [u8],
    apart: Option<&'a [u8]>,
}

impl std::fmt::Debug for NodeRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_node().fmt(f)
    }
}

impl<'a> NodeRef<'a> {
    fn perm_bytes(&self) -> &'a [u8] {
        self.run
            .get(usize::from(self.slot.name_len)..)
            .unwrap_or_default()
    }

    /// Generation of the last change.
    pub fn generation(&self) -> u64 {
        self.slot.generation
    }

    /// The child list.
    pub fn children(&self) -> &'a Children {
        &self.slot.children
    }

    /// Child names in creation order.
    pub fn child_names(&self) -> impl Iterator<Item = &'a str> {
        self.slot.children.names()
    }

    /// Number of children.
    pub fn child_count(&self) -> usize {
        self.slot.children.len()
    }

    /// True if `name` is a child.
    pub fn has_child(&self, name: &str) -> bool {
        self.slot.children.contains(name)
    }

    /// The permissions as stored (without [`Db::check_perms`]).
    pub fn perms(&self) -> PermList {
        let fallback = || PermList::owned_by(0, Access::None);
        let b = self.perm_bytes();
        // Nearly every node has one or two entries: no allocation.
        let list = match self.slot.perm_count {
            1 => decode_perm(b, 0).and_then(|(p, _)| PermList::from_slice(&[p])),
            2 => decode_perm(b, 0).and_then(|(p, at)| {
                let (q, _) = decode_perm(b, at)?;
                PermList::from_slice(&[p, q])
            }),
            _ => PermList::from_vec(self.perm_entries().collect()),
        };
        list.unwrap_or_else(fallback)
    }

    /// The permission entries as stored, decoded one by one.
    pub fn perm_entries(&self) -> impl Iterator<Item = Perm> + 'a {
        decode_perms(self.perm_bytes(), self.slot.perm_count)
    }

    /// Number of permission entries.
    pub fn perm_count(&self) -> usize {
        usize::from(self.slot.perm_count)
    }

    /// The owner (first permission entry).
    pub fn owner(&self) -> u32 {
        decode_perms(self.perm_bytes(), 1)
            .next()
            .map_or(0, |p| p.domid)
    }

    /// The value.
    pub fn value(&self) -> &'a [u8] {
        if let Some(v) = self.apart {
            return v;
        }
        let perms = self.perm_bytes();
        perms
            .get(perms_len(perms, self.slot.perm_count)..)
            .unwrap_or_default()
    }

    /// An owned copy.
    pub fn to_node(&self) -> Node {
        Node {
            value: Value::new(self.value()),
            perms: self.perms(),
            children: self.slot.children.clone(),
            generation: self.slot.generation,
        }
    }

    /// [`Node::mem_charge`] of this node at `path`.
    pub fn mem_charge(&self, path: &str) -> usize {
        (NODE_HEADER_SIZE
            + PERM_ENTRY_SIZE * self.perm_count()
            + self.value().len()
            + self.slot.children.wire_len())
        .saturating_add(path.len())
    }
}

/// The committed tree: the arena of nodes, the table that finds them by
/// path, the generation counter, and two reverse indexes kept in step with
/// every change, so that removing a domain costs what it owns and what
/// names it, not the size of the store: the nodes each domain owns, and
/// the nodes whose ACL names it. The domains that are never removed (the
/// privileged and store domains, which own most of a host's nodes) are
/// left out of both.
pub struct Db {
    arena: Arena,
    /// Slot numbers, by full path with std's keyed SipHash (paths come
    /// from guests).
    table: HashTable<u32>,
    hasher: std::hash::RandomState,
    generation: u64,
    by_owner: HashMap<u32, HashSet<u32>>,
    by_acl: HashMap<u32, HashSet<u32>>,
    /// The generation at which each domain record was made (kept by the
    /// store), for the stale-domid check of [`Db::check_perms`].
    domain_gens: HashMap<u32, u64>,
    /// Domains the indexes leave out.
    unindexed: [u32; 2],
    /// A run being built (kept to spare an allocation per change).
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("nodes", &self.table.len())
            .field("generation", &self.generation)
            .finish()
    }
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

fn acl_of(perms: &PermList) -> impl Iterator<Item = u32> + '_ {
    perms.entries()[1..].iter().map(|e| e.domid)
}

impl Db {
    /// An empty tree whose indexes leave out `domids` (domains that are
    /// never removed: [`Db::owned_by`] and [`Db::named_by_acl`] list
    /// nothing for them).
    pub fn unindexing(domids: [u32; 2]) -> Db {
        Db {
            arena: Arena::default(),
            table: HashTable::new(),
            hasher: std::hash::RandomState::new(),
            generation: 0,
            by_owner: HashMap::new(),
            by_acl: HashMap::new(),
            domain_gens: HashMap::new(),
            unindexed: domids,
            scratch: Vec::new(),
        }
    }

    fn indexed(&self, domid: u32) -> bool {
        !self.unindexed.contains(&domid)
    }

    fn find(&self, path: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(path);
        self.table
            .find(hash, |&i| self.arena.path_is(i, path))
            .copied()
    }

    fn node_ref(&self, i: u32) -> NodeRef<'_> {
        let slot = self.arena.slot(i);
        let (run, apart) = self.arena.pieces(slot);
        NodeRef { slot, run, apart }
    }

    /// A committed node.
    pub fn get(&self, path: &str) -> Option<NodeRef<'_>> {
        self.find(path).map(|i| self.node_ref(i))
    }

    /// Number of nodes, special nodes included.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Always false once the root exists.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
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

    fn index(&mut self, i: u32, perms: &PermList) {
        let owner = perms.owner();
        if self.indexed(owner) {
            self.by_owner.entry(owner).or_default().insert(i);
        }
        for d in acl_of(perms) {
            if self.indexed(d) {
                self.by_acl.entry(d).or_default().insert(i);
            }
        }
    }

    fn unindex(&mut self, i: u32) {
        let perms = self.node_ref(i).perms();
        let drop_from = |map: &mut HashMap<u32, HashSet<u32>>, d: u32| {
            if let Some(set) = map.get_mut(&d) {
                set.remove(&i);
                if set.is_empty() {
                    map.remove(&d);
                }
            }
        };
        drop_from(&mut self.by_owner, perms.owner());
        for d in acl_of(&perms) {
            drop_from(&mut self.by_acl, d);
        }
    }

    /// Stores a node under `path`, keeping the indexes.
    fn put(&mut self, path: &str, node: Node) {
        let Node {
            value,
            perms,
            children,
            generation,
        } = node;
        let perm_count = u16::try_from(perms.len()).unwrap_or(u16::MAX);
        let mut run = std::mem::take(&mut self.scratch);
        if let Some(i) = self.find(path) {
            self.unindex(i);
            let head = build_run(
                &mut run,
                self.arena.name(self.arena.slot(i)),
                &perms,
                &value,
            );
            self.arena.free_run(i);
            let s = self.arena.slot_mut(i);
            s.generation = generation;
            s.children = children;
            s.perm_count = perm_count;
            self.arena.set_run(i, &run, head);
            self.scratch = run;
            self.index(i, &perms);
            return;
        }
        let parent = path::parent(path).and_then(|pp| self.find(pp));
        let name = match parent {
            Some(_) => path::basename(path),
            None => path,
        };
        let head = build_run(&mut run, name.as_bytes(), &perms, &value);
        let i = self.arena.new_slot(Slot {
            generation,
            children,
            parent: parent.unwrap_or(NONE),
            kids: 0,
            len: 0,
            name_len: u16::try_from(name.len()).unwrap_or(u16::MAX),
            perm_count,
            inline: [0; INLINE],
        });
        self.arena.set_run(i, &run, head);
        self.scratch = run;
        if let Some(p) = parent {
            let ps = self.arena.slot_mut(p);
            ps.kids = ps.kids.saturating_add(1);
        }
        let hash = self.hasher.hash_one(path);
        let (arena, hasher) = (&self.arena, &self.hasher);
        self.table
            .insert_unique(hash, i, |&j| hasher.hash_one(arena.path_of(j).as_str()));
        self.index(i, &perms);
    }

    /// Removes the node at `path`, keeping the indexes; false if there was
    /// none.
    fn take(&mut self, path: &str) -> bool {
        let hash = self.hasher.hash_one(path);
        let Ok(entry) = self
            .table
            .find_entry(hash, |&i| self.arena.path_is(i, path))
        else {
            return false;
        };
        let (i, _) = entry.remove();
        self.unindex(i);
        if self.arena.slot(i).kids == 0 {
            self.arena.release(i);
        } else {
            // Kept for the paths below it: its name alone.
            let name = self.arena.name(self.arena.slot(i)).to_vec();
            self.arena.free_run(i);
            let s = self.arena.slot_mut(i);
            s.perm_count = 0;
            s.children = Children::default();
            self.arena.set_run(i, &name, name.len());
        }
        true
    }

    /// True if the reverse indexes match the nodes (tests and `check`).
    pub fn indexes_consistent(&self) -> bool {
        let mut owner: HashMap<u32, HashSet<u32>> = HashMap::new();
        let mut acl: HashMap<u32, HashSet<u32>> = HashMap::new();
        for (i, _) in self.arena.live() {
            let perms = self.node_ref(i).perms();
            if self.indexed(perms.owner()) {
                owner.entry(perms.owner()).or_default().insert(i);
            }
            for d in acl_of(&perms).filter(|&d| self.indexed(d)) {
                acl.entry(d).or_default().insert(i);
            }
        }
        owner == self.by_owner && acl == self.by_acl
    }

    /// Paths of the nodes `domid` owns.
    pub fn owned_by(&self, domid: u32) -> impl Iterator<Item = String> + '_ {
        self.by_owner
            .get(&domid)
            .into_iter()
            .flatten()
            .map(|&i| self.arena.path_of(i))
    }

    /// Paths of the nodes whose ACL (entries after the owner) names `domid`.
    pub fn named_by_acl(&self, domid: u32) -> impl Iterator<Item = String> + '_ {
        self.by_acl
            .get(&domid)
            .into_iter()
            .flatten()
            .map(|&i| self.arena.path_of(i))
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
        let mut n = self.get(path)?.to_node();
        let generation = n.generation;
        self.check_perms(&mut n.perms, generation);
        Some(n)
    }

    /// The permissions of `n` (a committed node) as access checks see
    /// them.
    pub fn checked_perms(&self, n: NodeRef<'_>) -> PermList {
        let mut p = n.perms();
        self.check_perms(&mut p, n.generation());
        p
    }

    /// Stores a node as it is (start-up, repairs).
    pub(crate) fn insert_raw(&mut self, path: &str, mut node: Node) {
        node.generation = self.next_generation();
        self.put(path, node);
    }

    /// Stores a restored node under `path` with a fresh generation: a
    /// node stored twice keeps the children the first one got.
    pub(crate) fn restore_put(&mut self, path: &str, mut node: Node) {
        node.generation = self.next_generation();
        if let Some(old) = self.get(path) {
            node.children = old.children().clone();
        }
        self.put(path, node);
    }

    /// Room for `additional` more nodes without growing the table.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let (arena, hasher) = (&self.arena, &self.hasher);
        self.table
            .reserve(additional, |&j| hasher.hash_one(arena.path_of(j).as_str()));
    }

    /// Appends a child name to a node in place (a restore, which inserts
    /// parents before children); false if there is no node at `path`.
    pub(crate) fn add_child_raw(&mut self, path: &str, child: &str) -> bool {
        match self.find(path) {
            Some(i) => {
                self.arena.slot_mut(i).children.add(child);
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

    /// Removes a node as it is (repairs); false if there was none.
    pub(crate) fn remove_raw(&mut self, path: &str) -> bool {
        self.take(path)
    }

    /// Removes a child name from a node in place (`check` repairs; the
    /// indexes do not depend on child lists).
    pub(crate) fn remove_child_raw(&mut self, path: &str, child: &str) {
        if let Some(i) = self.find(path) {
            self.arena.slot_mut(i).children.remove(child);
        }
    }

    /// All nodes with their paths (reports, consistency checks), in no
    /// order; each path is built.
    pub fn iter(&self) -> impl Iterator<Item = (String, NodeRef<'_>)> {
        self.arena
            .live()
            .map(|(i, _)| (self.arena.path_of(i), self.node_ref(i)))
    }

    /// The nodes whose path starts with `@` (the special nodes), in no
    /// order; only their paths are built.
    pub fn special_nodes(&self) -> impl Iterator<Item = (String, NodeRef<'_>)> {
        self.arena
            .live()
            .filter(|(i, _)| self.arena.top_byte(*i) == Some(b'@'))
            .map(|(i, _)| (self.arena.path_of(i), self.node_ref(i)))
    }

    /// Owners of all nodes (unordered, repeated).
    pub fn owners(&self) -> impl Iterator<Item = u32> + '_ {
        self.arena.live().map(|(i, _)| self.node_ref(i).owner())
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
            .any(|(p, e)| db.get(p).map(|n| n.generation()) != e.base_gen)
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
        // Created nodes last and parents first, so that a node created
        // with its parents is stored under its parent's slot.
        let mut created = Vec::new();
        for (path, e) in entries {
            if !e.dirty {
                continue;
            }
            match e.node {
                Some(n) if e.base_gen.is_none() => created.push((path, n)),
                Some(mut n) => {
                    n.generation = db.next_generation();
                    db.put(&path, n);
                }
                None => {
                    db.take(&path);
                }
            }
        }
        created.sort_by_key(|(p, _)| path::depth(p));
        for (path, mut n) in created {
            n.generation = db.next_generation();
            db.put(&path, n);
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
            db.insert_raw(p, Node::new(PermList::owned_by(0, Access::None)));
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
        db.insert_raw("/b", Node::new(PermList::owned_by(0, Access::None)));
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

#[cfg(test)]
mod arena_tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Paths over a small alphabet, so that parents, children and reuse of
    /// removed paths all happen; names long enough for every layout.
    fn arb_path() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("state".to_owned()),
            Just("a-rather-long-component-name-0123456789".to_owned()),
        ];
        prop_oneof![
            1 => Just("@releaseDomain".to_owned()),
            1 => Just("/".to_owned()),
            12 => prop::collection::vec(name, 1..5).prop_map(|v| format!("/{}", v.join("/"))),
        ]
    }

    fn arb_node() -> impl Strategy<Value = Node> {
        let perm = (
            prop_oneof![
                Just(Access::None),
                Just(Access::Read),
                Just(Access::Write),
                Just(Access::Both)
            ],
            prop_oneof![
                0u32..4,
                Just(0xFFFF),
                Just(0x7FF5),
                Just(70_000),
                Just(u32::MAX)
            ],
            any::<bool>(),
        )
            .prop_map(|(access, domid, ignored)| Perm {
                access,
                domid,
                ignored,
            });
        let value = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..6),
            prop::collection::vec(any::<u8>(), 6..40),
            prop::collection::vec(any::<u8>(), 2040..2100),
        ];
        (
            prop::collection::vec(perm, 1..4),
            value,
            prop::collection::vec("[a-z]{1,3}", 0..3),
        )
            .prop_map(|(perms, value, kids)| {
                let mut n = Node::new(
                    PermList::from_vec(perms)
                        .unwrap_or_else(|| PermList::owned_by(0, Access::None)),
                );
                n.value = Value::new(&value);
                for k in kids {
                    n.add_child(&k);
                }
                n
            })
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(String, Node),
        Take(String),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (arb_path(), arb_node()).prop_map(|(p, n)| Op::Put(p, n)),
            2 => arb_path().prop_map(Op::Take),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The arena tree behaves as a map from path to node, whatever the
        /// order of stores and removals (parents removed before children,
        /// paths stored again after removal), with its indexes in step.
        #[test]
        fn the_arena_is_a_map_from_path_to_node(ops in prop::collection::vec(arb_op(), 1..120)) {
            let mut db = Db::unindexing([0, u32::MAX]);
            let mut model: BTreeMap<String, Node> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Put(p, mut n) => {
                        n.generation = db.next_generation();
                        db.put(&p, n.clone());
                        model.insert(p, n);
                    }
                    Op::Take(p) => {
                        prop_assert_eq!(db.take(&p), model.remove(&p).is_some());
                    }
                }
                prop_assert_eq!(db.len(), model.len());
            }
            for (p, n) in &model {
                let got = db.get(p).map(|r| r.to_node());
                prop_assert_eq!(got.as_ref(), Some(n), "{}", p);
                let r = db.get(p).unwrap();
                prop_assert_eq!(r.owner(), n.perms.owner());
                prop_assert_eq!(r.mem_charge(p), n.mem_charge(p));
            }
            let listed: BTreeMap<String, Node> = db.iter().map(|(p, r)| (p, r.to_node())).collect();
            prop_assert_eq!(&listed, &model);
            prop_assert!(db.indexes_consistent());
            for d in [1u32, 2, 3, 0xFFFF, 70_000] {
                let mut owned: Vec<String> = db.owned_by(d).collect();
                owned.sort();
                let want: Vec<String> = model.iter().filter(|(_, n)| n.perms.owner() == d).map(|(p, _)| p.clone()).collect();
                prop_assert_eq!(owned, want);
            }
            // Removing everything gives every slot and run back.
            for p in model.keys() {
                prop_assert!(db.take(p));
            }
            prop_assert_eq!(db.len(), 0);
            prop_assert_eq!(db.arena.live().count(), 0);
            let used: usize = db.arena.pages.iter().map(Vec::len).sum();
            prop_assert_eq!(db.arena.free.len(), used);
        }
    }

    #[test]
    fn a_path_is_not_found_under_a_neighbour_spelling() {
        let mut db = Db::default();
        for p in ["/", "/a", "/a/b", "@x"] {
            db.insert_raw(p, Node::new(PermList::owned_by(0, Access::None)));
        }
        for p in ["/a", "/a/b", "@x", "/"] {
            assert!(db.get(p).is_some(), "{p}");
        }
        for p in ["//a", "/a//b", "a", "/a/", "b", "/b", "@x/", "", "/a/b/c"] {
            assert!(db.get(p).is_none(), "{p}");
        }
    }

    #[test]
    fn a_slot_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 48);
    }
}
