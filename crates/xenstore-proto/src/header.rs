//! The 16-byte message header and the message types (`xsd_sockmsg_type`).

use std::fmt;

/// Size of the header that precedes every payload.
pub const HEADER_SIZE: usize = 16;
/// Largest payload a message may carry, in either direction
/// (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;

/// A message header. Fields are in the host's byte order, as both ends
/// share one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Raw message type; see [`MsgType`].
    pub msg_type: u32,
    /// Chosen by the client, echoed in the reply.
    pub req_id: u32,
    /// Transaction id, 0 outside a transaction.
    pub tx_id: u32,
    /// Payload length in bytes.
    pub len: u32,
}

impl Header {
    /// Decodes a header from its 16 bytes.
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Header {
        let word = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            msg_type: word(0),
            req_id: word(4),
            tx_id: word(8),
            len: word(12),
        }
    }

    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0u8; HEADER_SIZE];
        out[0..4].copy_from_slice(&self.msg_type.to_ne_bytes());
        out[4..8].copy_from_slice(&self.req_id.to_ne_bytes());
        out[8..12].copy_from_slice(&self.tx_id.to_ne_bytes());
        out[12..16].copy_from_slice(&self.len.to_ne_bytes());
        out
    }

    /// The decoded message type, if it is one this protocol defines.
    pub fn kind(&self) -> Option<MsgType> {
        MsgType::from_u32(self.msg_type)
    }
}

macro_rules! msg_types {
    ($($(#[$doc:meta])* $name:ident = $val:expr, $wire:literal;)*) => {
        /// A message type. Type 20 (the removed RESTRICT) and anything at or
        /// above 27 are not message types; servers answer them `ENOSYS`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum MsgType {
            $($(#[$doc])* $name = $val,)*
        }

        impl MsgType {
            /// Every defined type.
            pub const ALL: &'static [MsgType] = &[$(MsgType::$name,)*];

            /// Maps a raw type number to a message type.
            pub fn from_u32(v: u32) -> Option<MsgType> {
                match v {
                    $($val => Some(MsgType::$name),)*
                    _ => None,
                }
            }

            /// The protocol's name for this type, as in `XS_READ` without
            /// the prefix.
            pub const fn name(self) -> &'static str {
                match self {
                    $(MsgType::$name => $wire,)*
                }
            }
        }
    };
}

msg_types! {
    /// Implementation-specific control commands (formerly DEBUG).
    Control = 0, "CONTROL";
    /// List a node's children.
    Directory = 1, "DIRECTORY";
    /// Read a node's value.
    Read = 2, "READ";
    /// Read a node's permissions.
    GetPerms = 3, "GET_PERMS";
    /// Register a watch.
    Watch = 4, "WATCH";
    /// Remove a watch.
    Unwatch = 5, "UNWATCH";
    /// Start a transaction.
    TransactionStart = 6, "TRANSACTION_START";
    /// Commit or abort a transaction.
    TransactionEnd = 7, "TRANSACTION_END";
    /// Introduce a domain (toolstack).
    Introduce = 8, "INTRODUCE";
    /// Release a domain (toolstack).
    Release = 9, "RELEASE";
    /// The home path of a domain.
    GetDomainPath = 10, "GET_DOMAIN_PATH";
    /// Write a node's value.
    Write = 11, "WRITE";
    /// Create a node.
    Mkdir = 12, "MKDIR";
    /// Remove a node and its subtree.
    Rm = 13, "RM";
    /// Set a node's permissions.
    SetPerms = 14, "SET_PERMS";
    /// Server to client: a watch fired.
    WatchEvent = 15, "WATCH_EVENT";
    /// Server to client: an error reply.
    Error = 16, "ERROR";
    /// Is a domain introduced?
    IsDomainIntroduced = 17, "IS_DOMAIN_INTRODUCED";
    /// Re-arm the shutdown notification of a domain.
    Resume = 18, "RESUME";
    /// Let a (stub) domain act for another.
    SetTarget = 19, "SET_TARGET";
    /// Drop all watches and transactions of the connection.
    ResetWatches = 21, "RESET_WATCHES";
    /// List a chunk of a node's children.
    DirectoryPart = 22, "DIRECTORY_PART";
    /// Read a domain's feature mask.
    GetFeature = 23, "GET_FEATURE";
    /// Set a domain's feature mask before introduction.
    SetFeature = 24, "SET_FEATURE";
    /// Read a quota.
    GetQuota = 25, "GET_QUOTA";
    /// Set a quota.
    SetQuota = 26, "SET_QUOTA";
}

impl fmt::Display for MsgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            msg_type: 2,
            req_id: 0xDEAD_BEEF,
            tx_id: 7,
            len: 4096,
        };
        assert_eq!(Header::from_bytes(&h.to_bytes()), h);
    }

    #[test]
    fn type_numbers() {
        assert_eq!(MsgType::from_u32(20), None);
        assert_eq!(MsgType::from_u32(27), None);
        assert_eq!(MsgType::from_u32(0xFFFF), None);
        for t in MsgType::ALL {
            assert_eq!(MsgType::from_u32(*t as u32), Some(*t));
        }
        assert_eq!(MsgType::ALL.len(), 26);
    }
}
