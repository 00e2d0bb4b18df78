//! A node record: value, permissions, child list, generation.
//!
//! The child list keeps names in creation order (DIRECTORY lists them so),
//! packed as the wire form itself (each name NUL-terminated): a short list
//! is one block; a long one is cut into chunks of at most
//! [`CHUNK_BYTES`] with an index from each name's hash to its chunk, so
//! adding or removing a child costs O(1) expected plus one chunk's bytes,
//! whatever the number of siblings (`/local/domain` may have 32751), at a
//! few bytes per child beyond the name. A long list is shared between the
//! committed tree and the transactions that read it: copying a node costs
//! a reference increment, and the first change in a transaction copies the
//! index and the chunk table (not the names). The wire form is made only for
//! DIRECTORY, whose reply is that size anyway; its length is kept, for the
//! node-size quota and E2BIG.

use hashbrown::HashTable;
use std::hash::BuildHasher;
use std::sync::Arc;
use xenstore_proto::PermList;

/// Size of C xenstored's node header (generation, perm count, data and
/// child-list lengths), counted in a node's accounted size.
pub const NODE_HEADER_SIZE: usize = 16;
/// Size of one permission entry in a C node record.
pub const PERM_ENTRY_SIZE: usize = 8;

/// A child list whose wire form is at most this long is one block,
/// searched linearly; a longer one is chunked and indexed.
const SMALL_BYTES: usize = 256;
/// Most bytes of one chunk of a long child list (a name longer than this
/// has a chunk of its own).
pub const CHUNK_BYTES: usize = 512;

/// Child names in creation order: nothing for a node without children
/// (most nodes), else a list shared until changed.
#[derive(Debug, Clone, Default)]
pub struct Children(Option<Arc<ChildList>>);

#[derive(Debug, Clone)]
enum ChildList {
    /// A short list: its wire form (never empty).
    Small(Box<str>),
    /// A long one.
    Large(LargeList),
}

/// A long child list: the wire form in chunks (appended to the last one;
/// a removal rewrites the chunk that held the name), and, for each name, a
/// 32-bit hash of it with the number of its chunk, in shards chosen by the
/// hash's top bits. Chunks and shards are shared between copies of the list
/// (a transaction's and the tree's), so a change copies the tables of
/// pointers, one chunk and one shard: O(n/64) bytes moved for n children
/// beyond 4096, not the whole index. Empty chunks are left in place (chunk
/// numbers are what the index holds) until they are as many as the full
/// ones, when the list is packed again.
#[derive(Clone)]
struct LargeList {
    chunks: Vec<Arc<str>>,
    /// A power of two of shards, at most [`MAX_SHARDS`], grown (and the
    /// index rebuilt) as the list grows past [`SHARD_NAMES`] a shard.
    index: Vec<Arc<HashTable<(u32, u32)>>>,
    /// Keyed per list, so that names chosen to collide in one list do not
    /// collide in another.
    hasher: std::collections::hash_map::RandomState,
    len: usize,
    wire_len: usize,
    empty_chunks: usize,
}

/// Most shards of a long list's index.
const MAX_SHARDS: usize = 64;
/// Names a shard holds before the shards double (up to [`MAX_SHARDS`]).
const SHARD_NAMES: usize = 64;

impl std::fmt::Debug for LargeList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LargeList")
            .field("len", &self.len)
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

/// The names of a wire form (each NUL-terminated), with their offsets.
fn split(wire: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let rest = wire.get(at..).filter(|r| !r.is_empty())?;
        let n = rest.find('\0').unwrap_or(rest.len());
        // A NUL is one byte and never inside a character: the cut is on a
        // character boundary.
        let name = rest.get(..n).unwrap_or_default();
        let here = at;
        at += n + 1;
        Some((here, name))
    })
}

/// Where `name` is in a wire form (byte offset), if it is.
fn find_in(wire: &str, name: &str) -> Option<usize> {
    split(wire).find(|(_, n)| *n == name).map(|(at, _)| at)
}

/// `wire` with `name` appended.
fn appended(wire: &str, name: &str) -> String {
    let mut v = String::with_capacity(wire.len() + name.len() + 1);
    v.push_str(wire);
    v.push_str(name);
    v.push('\0');
    v
}

/// `wire` without the name at byte `at` (of `len` bytes).
fn without(wire: &str, at: usize, len: usize) -> String {
    let end = (at + len + 1).min(wire.len());
    let mut v = String::with_capacity(wire.len().saturating_sub(len + 1));
    v.push_str(wire.get(..at).unwrap_or_default());
    v.push_str(wire.get(end..).unwrap_or_default());
    v
}

/// The table's hash of a stored 32-bit name hash (spread over 64 bits, as
/// the table takes its bucket from the low bits and a tag from the high).
fn spread(h: u32) -> u64 {
    u64::from(h).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl LargeList {
    fn from_names<'a>(names: impl Iterator<Item = &'a str>) -> LargeList {
        let mut l = LargeList {
            chunks: Vec::new(),
            index: vec![Arc::new(HashTable::new())],
            hasher: Default::default(),
            len: 0,
            wire_len: 0,
            empty_chunks: 0,
        };
        for n in names {
            l.push(n);
        }
        l
    }

    fn hash(&self, name: &str) -> u32 {
        // The low half of a keyed 64-bit hash.
        self.hasher.hash_one(name) as u32
    }

    /// The shard of a hash (its top bits).
    fn shard(&self, h: u32) -> usize {
        let bits = self.index.len().trailing_zeros();
        if bits == 0 {
            0
        } else {
            (h >> (32 - bits)) as usize
        }
    }

    fn chunk(&self, c: u32) -> &str {
        self.chunks.get(c as usize).map_or("", |b| &b[..])
    }

    /// The chunk holding `name`, if it is a child.
    fn find(&self, name: &str) -> Option<u32> {
        let h = self.hash(name);
        self.index
            .get(self.shard(h))?
            .find(spread(h), |&(eh, c)| {
                eh == h && find_in(self.chunk(c), name).is_some()
            })
            .map(|&(_, c)| c)
    }

    /// Records `name` (hash `h`) as held by chunk `c`.
    fn index_name(&mut self, h: u32, c: u32) {
        let s = self.shard(h);
        if let Some(shard) = self.index.get_mut(s) {
            Arc::make_mut(shard).insert_unique(spread(h), (h, c), |&(eh, _)| spread(eh));
        }
    }

    /// Doubles the shards while they hold more than [`SHARD_NAMES`] each
    /// (up to [`MAX_SHARDS`]), rebuilding the index.
    fn grow_shards(&mut self) {
        let mut shards = self.index.len();
        while shards < MAX_SHARDS && self.len > shards * SHARD_NAMES {
            shards *= 2;
        }
        if shards == self.index.len() {
            return;
        }
        self.index = (0..shards).map(|_| Arc::new(HashTable::new())).collect();
        let entries: Vec<(u32, u32)> = self
            .chunks
            .iter()
            .enumerate()
            .flat_map(|(c, chunk)| split(chunk).map(move |(_, n)| (n, c as u32)))
            .map(|(n, c)| (self.hash(n), c))
            .collect();
        for (h, c) in entries {
            self.index_name(h, c);
        }
    }

    /// Appends a name known not to be there.
    fn push(&mut self, name: &str) {
        let fits = self
            .chunks
            .last()
            .is_some_and(|l| l.len() + name.len() < CHUNK_BYTES);
        let grown = match self.chunks.last() {
            Some(last) if fits => appended(last, name),
            _ => {
                self.chunks.push(Arc::from(""));
                appended("", name)
            }
        };
        let c = self.chunks.len() - 1;
        if let Some(last) = self.chunks.last_mut() {
            *last = Arc::from(grown);
        }
        self.len += 1;
        self.wire_len += name.len() + 1;
        let h = self.hash(name);
        self.index_name(h, c as u32);
        if self.len > self.index.len() * SHARD_NAMES && self.index.len() < MAX_SHARDS {
            self.grow_shards();
        }
    }

    fn remove(&mut self, name: &str) -> bool {
        let h = self.hash(name);
        let s = self.shard(h);
        let chunks = &self.chunks;
        let Some(shard) = self.index.get_mut(s) else {
            return false;
        };
        let Ok(entry) = Arc::make_mut(shard).find_entry(spread(h), |&(eh, c)| {
            eh == h
                && chunks
                    .get(c as usize)
                    .is_some_and(|b| find_in(b, name).is_some())
        }) else {
            return false;
        };
        let ((_, c), _) = entry.remove();
        let Some(chunk) = self.chunks.get_mut(c as usize) else {
            return false;
        };
        let Some(at) = find_in(chunk, name) else {
            return false;
        };
        *chunk = Arc::from(without(chunk, at, name.len()));
        self.len -= 1;
        self.wire_len -= name.len() + 1;
        if chunk.is_empty() {
            self.empty_chunks += 1;
            if self.empty_chunks * 2 > self.chunks.len() {
                *self = LargeList::from_names(self.names());
            }
        }
        true
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.chunks.iter().flat_map(|c| split(c).map(|(_, n)| n))
    }
}

/// Equal when the same names are listed in the same order, however kept.
impl PartialEq for Children {
    fn eq(&self, other: &Children) -> bool {
        self.wire_len() == other.wire_len() && self.names().eq(other.names())
    }
}

impl Eq for Children {}

impl Children {
    fn list(&self) -> Option<&ChildList> {
        self.0.as_deref()
    }

    /// Number of children.
    pub fn len(&self) -> usize {
        match self.list() {
            None => 0,
            Some(ChildList::Small(v)) => split(v).count(),
            Some(ChildList::Large(l)) => l.len,
        }
    }

    /// True without children.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Bytes of the wire form (names plus a NUL each).
    pub fn wire_len(&self) -> usize {
        match self.list() {
            None => 0,
            Some(ChildList::Small(v)) => v.len(),
            Some(ChildList::Large(l)) => l.wire_len,
        }
    }

    /// The names, in creation order.
    pub fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self.list() {
            None => Box::new(std::iter::empty()),
            Some(ChildList::Small(v)) => Box::new(split(v).map(|(_, n)| n)),
            Some(ChildList::Large(l)) => Box::new(l.names()),
        }
    }

    /// The names from position `key` on (see [`Children::keyed`]), each
    /// with its key, in creation order.
    pub fn keyed_from(&self, key: u64) -> Box<dyn Iterator<Item = (u64, &str)> + '_> {
        let first = (key >> 32) as usize;
        let offset = (key & u64::from(u32::MAX)) as usize;
        match self.list() {
            None => Box::new(std::iter::empty()),
            Some(ChildList::Small(v)) => Box::new(
                split(v.get(offset..).unwrap_or_default())
                    .map(move |(at, n)| ((at + offset) as u64, n)),
            ),
            Some(ChildList::Large(l)) => Box::new(
                l.chunks
                    .iter()
                    .enumerate()
                    .skip(first)
                    .flat_map(move |(c, chunk)| {
                        let from = if c == first { offset } else { 0 };
                        split(chunk.get(from..).unwrap_or_default())
                            .map(move |(at, n)| (((c as u64) << 32) | (at + from) as u64, n))
                    }),
            ),
        }
    }

    /// The names with a key each: increasing in creation order, stable
    /// while the list does not change, so that a listing can go on from a
    /// name in O(1) ([`Children::keyed_from`]).
    pub fn keyed(&self) -> Box<dyn Iterator<Item = (u64, &str)> + '_> {
        self.keyed_from(0)
    }

    /// True if `name` is a child.
    pub fn contains(&self, name: &str) -> bool {
        match self.list() {
            None => false,
            Some(ChildList::Small(v)) => find_in(v, name).is_some(),
            Some(ChildList::Large(l)) => l.find(name).is_some(),
        }
    }

    /// Appends `name` (nothing if already there).
    pub fn add(&mut self, name: &str) {
        if self.contains(name) {
            return;
        }
        let Some(list) = &mut self.0 else {
            self.0 = Some(Arc::new(ChildList::Small(
                appended("", name).into_boxed_str(),
            )));
            return;
        };
        let list = Arc::make_mut(list);
        match list {
            ChildList::Small(v) if v.len() + name.len() < SMALL_BYTES => {
                *v = appended(v, name).into_boxed_str()
            }
            ChildList::Small(v) => {
                *list = ChildList::Large(LargeList::from_names(
                    split(v).map(|(_, n)| n).chain([name]),
                ));
            }
            ChildList::Large(l) => l.push(name),
        }
    }

    /// Removes `name`; false if it was not there.
    pub fn remove(&mut self, name: &str) -> bool {
        if !self.contains(name) {
            return false;
        }
        let Some(list) = &mut self.0 else {
            return false;
        };
        let list = Arc::make_mut(list);
        let (removed, empty) = match list {
            ChildList::Small(v) => match find_in(v, name) {
                Some(at) => {
                    *v = without(v, at, name.len()).into_boxed_str();
                    (true, v.is_empty())
                }
                None => (false, false),
            },
            ChildList::Large(l) => (l.remove(name), l.len == 0),
        };
        if empty {
            self.0 = None;
        }
        removed
    }

    /// The wire form: every name followed by a NUL, in creation order.
    pub fn to_wire(&self) -> Vec<u8> {
        match self.list() {
            None => Vec::new(),
            Some(ChildList::Small(v)) => v.as_bytes().to_vec(),
            Some(ChildList::Large(l)) => l.chunks.iter().flat_map(|c| c.bytes()).collect(),
        }
    }
}

/// Values up to this many bytes are kept inside the node.
const INLINE_VALUE: usize = 22;

/// A node's value: short ones (most of Xenstore's: states, numbers,
/// names) inside the node, longer ones in one allocation of their size.
#[derive(Clone)]
pub struct Value(ValueRepr);

#[derive(Clone)]
enum ValueRepr {
    Inline { len: u8, bytes: [u8; INLINE_VALUE] },
    Heap(Box<[u8]>),
}

impl Value {
    /// A copy of `v`.
    pub fn new(v: &[u8]) -> Value {
        if v.len() <= INLINE_VALUE {
            let mut bytes = [0u8; INLINE_VALUE];
            bytes[..v.len()].copy_from_slice(v);
            Value(ValueRepr::Inline {
                len: v.len() as u8,
                bytes,
            })
        } else {
            Value(ValueRepr::Heap(v.into()))
        }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            ValueRepr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            ValueRepr::Heap(b) => b,
        }
    }
}

impl Default for Value {
    fn default() -> Value {
        Value::new(&[])
    }
}

impl std::ops::Deref for Value {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Value {}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The value, arbitrary bytes.
    pub value: Value,
    /// Owner first, then the ACL.
    pub perms: PermList,
    /// Child names in creation order.
    pub children: Children,
    /// Global generation of the last change to this node (value, perms or
    /// child list).
    pub generation: u64,
}

impl Node {
    /// A node with no value and no children.
    pub fn new(perms: PermList) -> Node {
        Node {
            value: Value::default(),
            perms,
            children: Children::default(),
            generation: 0,
        }
    }

    /// The child names, in creation order.
    pub fn child_names(&self) -> impl Iterator<Item = &str> {
        self.children.names()
    }

    /// Number of children.
    pub fn child_count(&self) -> usize {
        self.children.len()
    }

    /// True if `name` is a child.
    pub fn has_child(&self, name: &str) -> bool {
        self.children.contains(name)
    }

    /// Appends a child name.
    pub fn add_child(&mut self, name: &str) {
        self.children.add(name);
    }

    /// Removes a child name; false if it was not there.
    pub fn remove_child(&mut self, name: &str) -> bool {
        self.children.remove(name)
    }

    /// The size C xenstored accounts for this record (node-size quota and
    /// memory accounting): header, permission entries, value, child list.
    pub fn acc_size(&self) -> usize {
        NODE_HEADER_SIZE
            + PERM_ENTRY_SIZE * self.perms.len()
            + self.value.len()
            + self.children.wire_len()
    }

    /// The bytes this node at `path` is charged to its owner's memory
    /// quota: the accounted record plus the full path (C charges the key
    /// too). The node-size quota uses [`Node::acc_size`] alone.
    pub fn mem_charge(&self, path: &str) -> usize {
        self.acc_size().saturating_add(path.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenstore_proto::Access;

    #[test]
    fn children_in_creation_order() {
        let mut n = Node::new(PermList::owned_by(0, Access::None));
        n.add_child("b");
        n.add_child("a");
        n.add_child("c");
        n.add_child("a");
        assert_eq!(n.children.to_wire(), b"b\0a\0c\0");
        assert!(n.remove_child("a"));
        assert!(!n.remove_child("a"));
        assert!(!n.remove_child(""));
        assert_eq!(n.children.to_wire(), b"b\0c\0");
        n.add_child("a");
        assert_eq!(n.child_names().collect::<Vec<_>>(), ["b", "c", "a"]);
        assert_eq!(n.child_count(), 3);
        assert_eq!(n.children.wire_len(), 6);
        assert_eq!(n.acc_size(), 16 + 8 + 6);
        // Past eight children the list changes form, not order.
        let mut big = Node::new(PermList::owned_by(0, Access::None));
        for i in 0..20 {
            big.add_child(&format!("c{i}"));
        }
        assert!(big.remove_child("c3"));
        big.add_child("c3");
        let want: Vec<String> = (0..20)
            .filter(|&i| i != 3)
            .map(|i| format!("c{i}"))
            .chain(["c3".to_owned()])
            .collect();
        assert_eq!(big.child_names().collect::<Vec<_>>(), want);
        assert_eq!(big.child_count(), 20);
        assert!(big.has_child("c19") && !big.has_child("c20"));
        // A copy is independent.
        let mut m = n.clone();
        m.remove_child("b");
        assert!(n.has_child("b") && !m.has_child("b"));
    }

    #[test]
    fn a_node_record_is_64_bytes_and_a_leaf_holds_no_child_list() {
        // Every node of the tree is one of these in the node map's table.
        assert_eq!(std::mem::size_of::<Node>(), 64);
        assert_eq!(std::mem::size_of::<Children>(), 8);
        let mut c = Children::default();
        c.add("a");
        assert!(c.remove("a"));
        assert!(c.0.is_none(), "an emptied list is dropped");
    }

    /// Checks `c` against the plain list `model` in every way it is read.
    fn agrees(c: &Children, model: &[String]) {
        let names: Vec<&str> = c.names().collect();
        assert_eq!(names, model);
        assert_eq!(c.len(), model.len());
        let wire: Vec<u8> = model.iter().flat_map(|n| n.bytes().chain([0])).collect();
        assert_eq!(c.to_wire(), wire);
        assert_eq!(c.wire_len(), wire.len());
        // Going on from any name's key lists the rest.
        let keyed: Vec<(u64, &str)> = c.keyed().collect();
        assert!(keyed.windows(2).all(|w| w[0].0 < w[1].0), "keys increase");
        for (i, (k, _)) in keyed.iter().enumerate() {
            let rest: Vec<&str> = c.keyed_from(*k).map(|(_, n)| n).collect();
            assert_eq!(rest, model[i..]);
        }
    }

    #[test]
    fn a_long_list_is_chunked_indexed_and_packed_again() {
        let mut c = Children::default();
        let mut model: Vec<String> = Vec::new();
        for i in 0..3000 {
            let n = format!("child-{i}");
            c.add(&n);
            model.push(n);
        }
        c.add("child-7");
        agrees(&c, &model);
        let Some(ChildList::Large(l)) = c.list() else {
            panic!("a 3000-name list is chunked")
        };
        assert!(l.chunks.len() > 10 && l.chunks.iter().all(|k| k.len() <= CHUNK_BYTES));
        assert_eq!(l.index.len(), MAX_SHARDS);
        // A transaction's copy shares the list until it changes it; then it
        // copies one chunk and one shard, and shares the rest.
        let snapshot = c.clone();
        let mut one = c.clone();
        assert!(one.remove("child-1500"));
        let (Some(ChildList::Large(a)), Some(ChildList::Large(b))) = (c.list(), one.list()) else {
            panic!("both long-form")
        };
        let shared_chunks = a
            .chunks
            .iter()
            .zip(&b.chunks)
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        let shared_shards = a
            .index
            .iter()
            .zip(&b.index)
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert_eq!(shared_chunks, a.chunks.len() - 1);
        assert_eq!(shared_shards, MAX_SHARDS - 1);
        assert!(c.contains("child-1500") && !one.contains("child-1500"));
        for i in (0..3000).step_by(3) {
            assert!(c.remove(&format!("child-{i}")));
        }
        model.retain(|n| n.trim_start_matches("child-").parse::<usize>().unwrap() % 3 != 0);
        agrees(&c, &model);
        assert_eq!(snapshot.len(), 3000);
        // Removing most names packs the chunks again.
        for i in 0..2990 {
            c.remove(&format!("child-{i}"));
        }
        model.retain(|n| n.trim_start_matches("child-").parse::<usize>().unwrap() >= 2990);
        agrees(&c, &model);
        let Some(ChildList::Large(l)) = c.list() else {
            panic!("still long-form")
        };
        assert!(
            l.chunks.len() <= 2,
            "{} chunks for {} names",
            l.chunks.len(),
            l.len
        );
        assert!(!c.contains("child-5") && c.contains("child-2995"));
        // A name longer than a chunk gets a chunk of its own.
        let long = "x".repeat(CHUNK_BYTES + 10);
        c.add(&long);
        model.push(long.clone());
        agrees(&c, &model);
        assert!(c.remove(&long));
        model.pop();
        agrees(&c, &model);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any sequence of additions and removals, over names that often
        /// repeat, reads as the plain list would.
        #[test]
        fn children_behave_as_a_plain_list(
            ops in proptest::collection::vec((proptest::bool::weighted(0.7), 0u32..400, 0usize..3), 0..1500)
        ) {
            let mut c = Children::default();
            let mut model: Vec<String> = Vec::new();
            for (add, k, pad) in ops {
                let n = format!("{k}{}", "-".repeat(pad * 40));
                if add {
                    c.add(&n);
                    if !model.contains(&n) {
                        model.push(n.clone());
                    }
                } else {
                    let had = model.iter().position(|m| *m == n);
                    proptest::prop_assert_eq!(c.remove(&n), had.is_some());
                    if let Some(i) = had {
                        model.remove(i);
                    }
                }
                proptest::prop_assert_eq!(c.contains(&n), model.contains(&n));
            }
            agrees(&c, &model);
        }
    }
}
