//! A node record: value, permissions, child list, generation.
//!
//! The child list keeps names in creation order (DIRECTORY lists them so):
//! up to 8 in a small vector, beyond that in persistent maps, so adding or
//! removing a child costs O(log n) whatever the number of siblings
//! (`/local/domain` may have 32751), and copying a node into a transaction
//! costs a few reference increments. The wire form
//! (each name NUL-terminated) is made only for DIRECTORY and
//! DIRECTORY_PART, whose replies are that size anyway; its length is kept,
//! for the node-size quota and E2BIG.

use std::sync::Arc;
use xenstore_proto::PermList;

/// Size of C xenstored's node header (generation, perm count, data and
/// child-list lengths), counted in a node's accounted size.
pub const NODE_HEADER_SIZE: usize = 16;
/// Size of one permission entry in a C node record.
pub const PERM_ENTRY_SIZE: usize = 8;

/// Up to this many children are kept in a plain vector (searched
/// linearly); beyond, in persistent maps. Most nodes have none or a few,
/// and a persistent map costs kilobytes even for one entry.
const SMALL_CHILDREN: usize = 8;

/// Child names in creation order.
#[derive(Debug, Clone, Default)]
pub struct Children {
    list: ChildList,
    wire_len: usize,
}

#[derive(Debug, Clone)]
enum ChildList {
    /// Few children, in creation order.
    Small(Vec<Arc<str>>),
    /// Many: by sequence number (creation order) and by name; boxed, so
    /// that the many nodes with few children stay small.
    Large(Box<LargeList>),
}

#[derive(Debug, Clone)]
struct LargeList {
    by_seq: imbl::OrdMap<u64, Arc<str>>,
    seq_of: imbl::HashMap<Arc<str>, u64>,
    next: u64,
}

impl Default for ChildList {
    fn default() -> ChildList {
        ChildList::Small(Vec::new())
    }
}

/// Equal when the same names are listed in the same order, however kept.
impl PartialEq for Children {
    fn eq(&self, other: &Children) -> bool {
        self.wire_len == other.wire_len && self.names().eq(other.names())
    }
}

impl Eq for Children {}

impl Children {
    /// Number of children.
    pub fn len(&self) -> usize {
        match &self.list {
            ChildList::Small(v) => v.len(),
            ChildList::Large(l) => l.by_seq.len(),
        }
    }

    /// True without children.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the wire form (names plus a NUL each).
    pub fn wire_len(&self) -> usize {
        self.wire_len
    }

    /// The names, in creation order.
    pub fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match &self.list {
            ChildList::Small(v) => Box::new(v.iter().map(|s| &**s)),
            ChildList::Large(l) => Box::new(l.by_seq.values().map(|s| &**s)),
        }
    }

    /// The names from position `key` on (see [`Children::keyed`]), each
    /// with its key, in creation order.
    pub fn keyed_from(&self, key: u64) -> Box<dyn Iterator<Item = (u64, &str)> + '_> {
        match &self.list {
            ChildList::Small(v) => Box::new(
                v.iter()
                    .enumerate()
                    .skip(usize::try_from(key).unwrap_or(usize::MAX))
                    .map(|(i, s)| (i as u64, &**s)),
            ),
            ChildList::Large(l) => Box::new(l.by_seq.range(key..).map(|(k, s)| (*k, &**s))),
        }
    }

    /// The names with a key each: increasing in creation order, stable
    /// while the list does not change, so that a listing can go on from a
    /// name in O(log n) ([`Children::keyed_from`]).
    pub fn keyed(&self) -> Box<dyn Iterator<Item = (u64, &str)> + '_> {
        self.keyed_from(0)
    }

    /// True if `name` is a child.
    pub fn contains(&self, name: &str) -> bool {
        match &self.list {
            ChildList::Small(v) => v.iter().any(|c| &**c == name),
            ChildList::Large(l) => l.seq_of.contains_key(name),
        }
    }

    /// Appends `name` (nothing if already there).
    pub fn add(&mut self, name: &str) {
        if self.contains(name) {
            return;
        }
        let n: Arc<str> = Arc::from(name);
        self.wire_len += name.len() + 1;
        match &mut self.list {
            ChildList::Small(v) if v.len() < SMALL_CHILDREN => v.push(n),
            ChildList::Small(v) => {
                let mut by_seq = imbl::OrdMap::new();
                let mut seq_of = imbl::HashMap::new();
                for (i, c) in v.drain(..).chain(std::iter::once(n)).enumerate() {
                    by_seq.insert(i as u64, c.clone());
                    seq_of.insert(c, i as u64);
                }
                let next = by_seq.len() as u64;
                self.list = ChildList::Large(Box::new(LargeList {
                    by_seq,
                    seq_of,
                    next,
                }));
            }
            ChildList::Large(l) => {
                l.by_seq.insert(l.next, n.clone());
                l.seq_of.insert(n, l.next);
                l.next += 1;
            }
        }
    }

    /// Removes `name`; false if it was not there.
    pub fn remove(&mut self, name: &str) -> bool {
        let removed = match &mut self.list {
            ChildList::Small(v) => match v.iter().position(|c| &**c == name) {
                Some(i) => {
                    v.remove(i);
                    true
                }
                None => false,
            },
            ChildList::Large(l) => match l.seq_of.remove(name) {
                Some(seq) => {
                    l.by_seq.remove(&seq);
                    true
                }
                None => false,
            },
        };
        if removed {
            self.wire_len -= name.len() + 1;
        }
        removed
    }

    /// The wire form: every name followed by a NUL, in creation order.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.wire_len);
        for n in self.names() {
            v.extend_from_slice(n.as_bytes());
            v.push(0);
        }
        v
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
}
