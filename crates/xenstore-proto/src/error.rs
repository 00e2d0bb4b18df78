//! Error names of the protocol (`xsd_errors` in `xs_wire.h`).
//!
//! A server sends the *name*, never a number. Only the names in this table
//! may go on the wire; anything else a server meets internally has to be
//! mapped to one of these (C xenstored maps to `EINVAL`).

use std::fmt;

/// An error a Xenstore server may send, in the order of `xs_wire.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum XsError {
    /// Malformed request, bad path or argument.
    Einval,
    /// Permission denied.
    Eacces,
    /// Duplicate watch.
    Eexist,
    /// Unused by current servers.
    Eisdir,
    /// Node, transaction, watch or domain not found.
    Enoent,
    /// Out of memory, memory quota, or a doomed transaction.
    Enomem,
    /// A quota was exceeded.
    Enospc,
    /// Internal error; a write refused by the memory quota.
    Eio,
    /// Unused.
    Enotempty,
    /// Unknown or unsupported message type or command.
    Enosys,
    /// Unused (historically the read-only socket).
    Erofs,
    /// Nested transaction, or a feature change after introduction.
    Ebusy,
    /// Transaction conflict: retry.
    Eagain,
    /// Unused.
    Eisconn,
    /// Reply too large.
    E2big,
    /// Not allowed to change a node's owner.
    Eperm,
}

impl XsError {
    /// Every error, in wire-table order.
    pub const ALL: [XsError; 16] = [
        XsError::Einval,
        XsError::Eacces,
        XsError::Eexist,
        XsError::Eisdir,
        XsError::Enoent,
        XsError::Enomem,
        XsError::Enospc,
        XsError::Eio,
        XsError::Enotempty,
        XsError::Enosys,
        XsError::Erofs,
        XsError::Ebusy,
        XsError::Eagain,
        XsError::Eisconn,
        XsError::E2big,
        XsError::Eperm,
    ];

    /// The name sent on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            XsError::Einval => "EINVAL",
            XsError::Eacces => "EACCES",
            XsError::Eexist => "EEXIST",
            XsError::Eisdir => "EISDIR",
            XsError::Enoent => "ENOENT",
            XsError::Enomem => "ENOMEM",
            XsError::Enospc => "ENOSPC",
            XsError::Eio => "EIO",
            XsError::Enotempty => "ENOTEMPTY",
            XsError::Enosys => "ENOSYS",
            XsError::Erofs => "EROFS",
            XsError::Ebusy => "EBUSY",
            XsError::Eagain => "EAGAIN",
            XsError::Eisconn => "EISCONN",
            XsError::E2big => "E2BIG",
            XsError::Eperm => "EPERM",
        }
    }

    /// Parses a wire name; unknown names give `None` (clients treat them
    /// as `EINVAL`).
    pub fn from_name(name: &[u8]) -> Option<XsError> {
        XsError::ALL
            .iter()
            .copied()
            .find(|e| e.name().as_bytes() == name)
    }
}

impl fmt::Display for XsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for e in XsError::ALL {
            assert_eq!(XsError::from_name(e.name().as_bytes()), Some(e));
        }
        assert_eq!(XsError::from_name(b"EQUOTA"), None);
    }
}
