//! A node record: value, permissions, child list, generation.
//!
//! The child list is kept the way it goes on the wire: names in creation
//! order, each followed by a NUL. DIRECTORY replies with it as it is, and
//! DIRECTORY_PART slices it by byte offset, exactly as C xenstored does.
//! Values and child lists are reference-counted ([`Bytes`]), so copying a
//! node into a transaction costs a few reference increments.

use bytes::Bytes;
use xenstore_proto::PermList;

/// Size of C xenstored's node header (generation, perm count, data and
/// child-list lengths), counted in a node's accounted size.
pub const NODE_HEADER_SIZE: usize = 16;
/// Size of one permission entry in a C node record.
pub const PERM_ENTRY_SIZE: usize = 8;

/// One node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The value, arbitrary bytes.
    pub value: Bytes,
    /// Owner first, then the ACL.
    pub perms: PermList,
    /// Child names in creation order, each NUL-terminated.
    pub children: Bytes,
    /// Global generation of the last change to this node (value, perms or
    /// child list).
    pub generation: u64,
}

impl Node {
    /// A node with no value and no children.
    pub fn new(perms: PermList) -> Node {
        Node {
            value: Bytes::new(),
            perms,
            children: Bytes::new(),
            generation: 0,
        }
    }

    /// The child names, in creation order.
    pub fn child_names(&self) -> impl Iterator<Item = &str> {
        self.children
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            // Child names were validated paths components: ASCII.
            .map(|s| std::str::from_utf8(s).unwrap_or(""))
    }

    /// Number of children.
    pub fn child_count(&self) -> usize {
        self.children.iter().filter(|&&b| b == 0).count()
    }

    /// True if `name` is a child.
    pub fn has_child(&self, name: &str) -> bool {
        self.child_names().any(|c| c == name)
    }

    /// Appends a child name.
    pub fn add_child(&mut self, name: &str) {
        let mut v = Vec::with_capacity(self.children.len() + name.len() + 1);
        v.extend_from_slice(&self.children);
        v.extend_from_slice(name.as_bytes());
        v.push(0);
        self.children = Bytes::from(v);
    }

    /// Removes a child name; false if it was not there.
    pub fn remove_child(&mut self, name: &str) -> bool {
        let mut off = 0;
        for c in self.children.split(|&b| b == 0) {
            if c == name.as_bytes() && off + c.len() < self.children.len() {
                let mut v = Vec::with_capacity(self.children.len() - c.len() - 1);
                v.extend_from_slice(&self.children[..off]);
                v.extend_from_slice(&self.children[off + c.len() + 1..]);
                self.children = Bytes::from(v);
                return true;
            }
            off += c.len() + 1;
        }
        false
    }

    /// The size C xenstored accounts for this record (node-size quota and
    /// memory accounting): header, permission entries, value, child list.
    pub fn acc_size(&self) -> usize {
        NODE_HEADER_SIZE
            + PERM_ENTRY_SIZE * self.perms.len()
            + self.value.len()
            + self.children.len()
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
        assert_eq!(&n.children[..], b"b\0a\0c\0");
        assert!(n.remove_child("a"));
        assert!(!n.remove_child("a"));
        assert!(!n.remove_child(""));
        assert_eq!(&n.children[..], b"b\0c\0");
        n.add_child("a");
        assert_eq!(n.child_names().collect::<Vec<_>>(), ["b", "c", "a"]);
        assert_eq!(n.child_count(), 3);
        assert_eq!(n.acc_size(), 16 + 8 + 6);
    }
}
