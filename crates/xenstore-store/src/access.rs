//! Who may do what to a node (C xenstored's `perm_for_conn`).

use xenstore_proto::{PermList, DOMID_ANY};

/// Read access.
pub const PERM_READ: u8 = 1;
/// Write access.
pub const PERM_WRITE: u8 = 2;
/// Owner rights: change permissions.
pub const PERM_OWNER: u8 = 4;
/// Everything.
pub const PERM_ALL: u8 = PERM_READ | PERM_WRITE | PERM_OWNER;

/// The identity a request is checked with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The connection's domid (the store domain for sockets).
    pub domid: u32,
    /// The domain this one acts for (SET_TARGET), if any.
    pub target: Option<u32>,
    /// Privileged connections have every right on every node.
    pub privileged: bool,
}

impl Caller {
    fn names(&self, domid: u32) -> bool {
        domid == self.domid || Some(domid) == self.target || domid == DOMID_ANY
    }

    /// The access bits this caller has on a node with `perms`:
    /// privileged callers and owners (or their stub domains) get all;
    /// otherwise the first non-ignored ACL entry naming the caller (or its
    /// target, or `DOMID_ANY`) decides; otherwise the default letter.
    pub fn perm_for(&self, perms: &PermList) -> u8 {
        if self.privileged || self.names(perms.owner()) {
            return PERM_ALL;
        }
        let access = perms.entries()[1..]
            .iter()
            .find(|p| !p.ignored && self.names(p.domid))
            .map_or(perms.default_access(), |p| p.access);
        let mut bits = 0;
        if access.can_read() {
            bits |= PERM_READ;
        }
        if access.can_write() {
            bits |= PERM_WRITE;
        }
        bits
    }

    /// Shorthand: may read.
    pub fn can_read(&self, perms: &PermList) -> bool {
        self.perm_for(perms) & PERM_READ != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(s: &[&str]) -> PermList {
        PermList::parse(s.iter().map(|x| x.as_bytes())).unwrap()
    }

    fn dom(domid: u32, target: Option<u32>) -> Caller {
        Caller {
            domid,
            target,
            privileged: false,
        }
    }

    #[test]
    fn owner_default_and_acl() {
        let p = perms(&["n5", "r7", "w8", "b9"]);
        assert_eq!(dom(5, None).perm_for(&p), PERM_ALL);
        assert_eq!(dom(7, None).perm_for(&p), PERM_READ);
        assert_eq!(dom(8, None).perm_for(&p), PERM_WRITE);
        assert_eq!(dom(9, None).perm_for(&p), PERM_READ | PERM_WRITE);
        assert_eq!(dom(4, None).perm_for(&p), 0);
        let privileged = Caller {
            domid: 0,
            target: None,
            privileged: true,
        };
        assert_eq!(privileged.perm_for(&p), PERM_ALL);
    }

    #[test]
    fn first_match_in_list_order_with_target() {
        // Own entry denies before the target's grant: C takes the first.
        let p = perms(&["n1", "n7", "r5"]);
        assert_eq!(dom(7, Some(5)).perm_for(&p), 0);
        let p = perms(&["n5"]);
        assert_eq!(dom(7, Some(5)).perm_for(&p), PERM_ALL);
    }

    #[test]
    fn domid_any_and_ignored() {
        let p = perms(&["n0", "r32757"]);
        assert_eq!(dom(3, None).perm_for(&p), PERM_READ);
        let mut p = perms(&["n0", "r3"]);
        p.entries_mut()[1].ignored = true;
        assert_eq!(dom(3, None).perm_for(&p), 0);
    }
}
