//! The records of a stream as plain data.
//!
//! Every type here maps one to one onto the layout in Xen's
//! `docs/designs/xenstore-migration.md`; the reader and the writer convert
//! between the two. Strings (paths, tokens, quota names) are bytes without
//! their terminating NUL; they may not contain a NUL themselves.

/// Byte order of every field after the 16-byte stream header (the header
/// itself is always big-endian). C xenstored writes its host's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endian {
    /// Flag bit 0 clear.
    Little,
    /// Flag bit 0 set.
    Big,
}

impl Endian {
    /// The byte order of the machine this code runs on, which is what C
    /// xenstored writes and the only order it accepts.
    pub const NATIVE: Endian = if cfg!(target_endian = "big") {
        Endian::Big
    } else {
        Endian::Little
    };

    pub(crate) fn u16_bytes(self, v: u16) -> [u8; 2] {
        match self {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        }
    }

    pub(crate) fn u32_bytes(self, v: u32) -> [u8; 4] {
        match self {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        }
    }

    pub(crate) fn u64_bytes(self, v: u64) -> [u8; 8] {
        match self {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        }
    }

    pub(crate) fn u16_from(self, b: [u8; 2]) -> u16 {
        match self {
            Endian::Little => u16::from_le_bytes(b),
            Endian::Big => u16::from_be_bytes(b),
        }
    }

    pub(crate) fn u32_from(self, b: [u8; 4]) -> u32 {
        match self {
            Endian::Little => u32::from_le_bytes(b),
            Endian::Big => u32::from_be_bytes(b),
        }
    }

    pub(crate) fn u64_from(self, b: [u8; 8]) -> u64 {
        match self {
            Endian::Little => u64::from_le_bytes(b),
            Endian::Big => u64::from_be_bytes(b),
        }
    }
}

/// The version of the format a stream claims to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// Written and read by C xenstored 4.17 to 4.20 (and by 4.21+ with
    /// `live-update -v 1`).
    V1,
    /// Adds `WATCH_DATA_EXTENDED` and the `features` of `DOMAIN_DATA`;
    /// written by default by C xenstored 4.21 and later.
    V2,
}

impl Version {
    /// The number stored in the header.
    pub fn number(self) -> u32 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }

    /// The version with this number, if it is defined.
    pub fn from_number(n: u32) -> Option<Version> {
        match n {
            1 => Some(Version::V1),
            2 => Some(Version::V2),
            _ => None,
        }
    }
}

/// What the 16-byte stream header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamHeader {
    /// Format version.
    pub version: Version,
    /// Byte order of the records.
    pub endian: Endian,
}

/// The record types the document defines, with their numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    /// 0: the last record of a stream; no body.
    End,
    /// 1: `GLOBAL_DATA`.
    Global,
    /// 2: `CONNECTION_DATA`.
    Connection,
    /// 3: `WATCH_DATA`.
    Watch,
    /// 4: `TRANSACTION_DATA`.
    Transaction,
    /// 5: `NODE_DATA`.
    Node,
    /// 6: `GLOBAL_QUOTA_DATA`.
    GlobalQuota,
    /// 7: `DOMAIN_DATA`.
    Domain,
    /// 8: `WATCH_DATA_EXTENDED` (version 2 and later).
    WatchExtended,
}

impl RecordType {
    /// The type number in the record header.
    pub fn code(self) -> u32 {
        match self {
            RecordType::End => 0,
            RecordType::Global => 1,
            RecordType::Connection => 2,
            RecordType::Watch => 3,
            RecordType::Transaction => 4,
            RecordType::Node => 5,
            RecordType::GlobalQuota => 6,
            RecordType::Domain => 7,
            RecordType::WatchExtended => 8,
        }
    }

    /// The type with this number; 9 and above are reserved.
    pub fn from_code(code: u32) -> Option<RecordType> {
        Some(match code {
            0 => RecordType::End,
            1 => RecordType::Global,
            2 => RecordType::Connection,
            3 => RecordType::Watch,
            4 => RecordType::Transaction,
            5 => RecordType::Node,
            6 => RecordType::GlobalQuota,
            7 => RecordType::Domain,
            8 => RecordType::WatchExtended,
            _ => return None,
        })
    }

    /// The name the document uses.
    pub fn name(self) -> &'static str {
        match self {
            RecordType::End => "END",
            RecordType::Global => "GLOBAL_DATA",
            RecordType::Connection => "CONNECTION_DATA",
            RecordType::Watch => "WATCH_DATA",
            RecordType::Transaction => "TRANSACTION_DATA",
            RecordType::Node => "NODE_DATA",
            RecordType::GlobalQuota => "GLOBAL_QUOTA_DATA",
            RecordType::Domain => "DOMAIN_DATA",
            RecordType::WatchExtended => "WATCH_DATA_EXTENDED",
        }
    }

    /// The first version in which the type is valid.
    pub fn since(self) -> Version {
        match self {
            RecordType::WatchExtended => Version::V2,
            _ => Version::V1,
        }
    }
}

impl std::fmt::Display for RecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One record other than `END` (which the reader reports as the end of the
/// records and the writer emits in [`crate::Writer::finish`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `GLOBAL_DATA`.
    Global(Global),
    /// `CONNECTION_DATA`.
    Connection(Connection),
    /// `WATCH_DATA`, or `WATCH_DATA_EXTENDED` when the watch has a depth.
    Watch(Watch),
    /// `TRANSACTION_DATA`.
    Transaction(Transaction),
    /// `NODE_DATA`.
    Node(Node),
    /// `GLOBAL_QUOTA_DATA`.
    GlobalQuota(GlobalQuota),
    /// `DOMAIN_DATA`.
    Domain(Domain),
}

impl Record {
    /// The record type this record is written as.
    pub fn record_type(&self) -> RecordType {
        match self {
            Record::Global(_) => RecordType::Global,
            Record::Connection(_) => RecordType::Connection,
            Record::Watch(w) if w.depth.is_some() => RecordType::WatchExtended,
            Record::Watch(_) => RecordType::Watch,
            Record::Transaction(_) => RecordType::Transaction,
            Record::Node(_) => RecordType::Node,
            Record::GlobalQuota(_) => RecordType::GlobalQuota,
            Record::Domain(_) => RecordType::Domain,
        }
    }
}

/// `GLOBAL_DATA`: descriptors that survive the exec of a live update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Global {
    /// The listening socket's descriptor, or [`NO_SOCKET`].
    pub socket_fd: i32,
    /// The descriptor of the event-channel device (`/dev/xen/evtchn`).
    pub evtchn_fd: i32,
}

/// `rw-socket-fd` when xenstored has no listening socket.
pub const NO_SOCKET: i32 = -1;

/// `DOMID_INVALID` (`xen/include/public/xen.h`): the `tdomid` of a ring
/// connection without a target.
pub const DOMID_INVALID: u16 = 0x7FF4;

/// `CONNECTION_DATA`: one client connection and the bytes in flight on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Non-zero identifier, referred to by later `WATCH_DATA`,
    /// `TRANSACTION_DATA` and transaction `NODE_DATA` records.
    pub conn_id: u32,
    /// Shared ring or socket.
    pub kind: ConnKind,
    /// Received bytes not yet processed (`in-data-len`, at most 65535).
    pub input: Input,
    /// Bytes not yet sent (`out-data-len`).
    pub output: Output,
    /// The domain's unique id (`fields` bit 0); C 4.21+ writes it for
    /// every ring connection.
    pub unique_id: Option<u64>,
}

/// `conn-type` and `conn-spec` of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnKind {
    /// `conn-type` 0.
    Ring {
        /// The domain owning the ring page (grant entry 1 of its table).
        domid: u16,
        /// The domain it acts for after `SET_TARGET`; `None` is written
        /// as [`DOMID_INVALID`].
        target: Option<u16>,
        /// The event-channel port, as xenstored's *local* port (C writes
        /// `domain->port`, the result of the interdomain bind).
        evtchn: u32,
    },
    /// `conn-type` 1: an accepted Unix socket, by descriptor.
    Socket {
        /// Descriptor in the live-updated process.
        fd: i32,
    },
}

/// Size of a wire message header (`struct xsd_sockmsg`).
pub const MSG_HEADER_LEN: usize = 16;

/// A whole Xenstore message as it travels on a connection. Its header is
/// written in the stream's byte order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `type` field of the header.
    pub msg_type: u32,
    /// `req_id` field.
    pub req_id: u32,
    /// `tx_id` field.
    pub tx_id: u32,
    /// The payload; the header's `len` is its length.
    pub payload: Vec<u8>,
}

/// The received but unprocessed input of a connection: whole requests,
/// then at most one message of which only the beginning arrived. This is
/// the only split a reader can make of `in-data` (C's reader makes the
/// same one).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Input {
    /// Complete requests, oldest first.
    pub requests: Vec<Message>,
    /// The message being received.
    pub partial: Option<PartialInput>,
}

/// The message a connection was in the middle of receiving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartialInput {
    /// 1 to 15 bytes of a header, as received (in the stream's byte order).
    Header(Vec<u8>),
    /// A complete header and fewer payload bytes than it announces.
    Payload {
        /// `type` field.
        msg_type: u32,
        /// `req_id` field.
        req_id: u32,
        /// `tx_id` field.
        tx_id: u32,
        /// `len` field: the announced payload length.
        len: u32,
        /// The payload bytes received so far (fewer than `len`).
        received: Vec<u8>,
    },
}

/// The pending output of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// The unsent tail of a message of which the beginning was already
    /// sent (`out-resp-len` bytes, at most 65535, no header repeated).
    pub partial: Vec<u8>,
    /// Whole messages queued after it. A live-update stream carries the
    /// reply to the live-update command last on the connection that sent
    /// it.
    pub messages: Vec<Message>,
}

/// A watch (`WATCH_DATA`, or `WATCH_DATA_EXTENDED` with a depth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The connection that set the watch.
    pub conn_id: u32,
    /// The path as given to `WATCH` (relative paths stay relative).
    pub path: Vec<u8>,
    /// The token as given to `WATCH`.
    pub token: Vec<u8>,
    /// `None`: a `WATCH_DATA` record (no depth). `Some(d)`: a
    /// `WATCH_DATA_EXTENDED` record (version 2 only) matching `d` levels
    /// below the path; [`DEPTH_UNLIMITED`] means any depth.
    pub depth: Option<u16>,
}

/// The `depth` of a `WATCH_DATA_EXTENDED` record meaning "unlimited".
pub const DEPTH_UNLIMITED: u16 = 0xFFFF;

/// `TRANSACTION_DATA`: a transaction open on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transaction {
    /// The connection that started it.
    pub conn_id: u32,
    /// The id `TRANSACTION_START` returned.
    pub tx_id: u32,
}

/// `NODE_DATA`: a node of the committed tree, or a node as a pending
/// transaction sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Absolute path (`/...`) or a special node (`@...`).
    pub path: Vec<u8>,
    /// `None` for a committed node (`conn-id` 0).
    pub transaction: Option<NodeTx>,
    /// The value (any bytes; empty for a deleted node).
    pub value: Vec<u8>,
    /// Permissions, owner first; empty only for a node deleted in a
    /// transaction.
    pub perms: Vec<Perm>,
}

/// The transaction a `NODE_DATA` record belongs to and what it did to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeTx {
    /// Non-zero connection id.
    pub conn_id: u32,
    /// The transaction's id.
    pub tx_id: u32,
    /// `access` bit 0x0001.
    pub read: bool,
    /// `access` bit 0x0002.
    pub written: bool,
}

impl NodeTx {
    /// `access` 0: the transaction deleted the node.
    pub fn is_deleted(&self) -> bool {
        !self.read && !self.written
    }
}

/// A committed node (`NODE_DATA` with `conn-id` 0) borrowed from the bytes
/// of a stream: what [`crate::Reader::next_item`] hands out without
/// copying, checked as [`crate::Reader::next_record`] checks a [`Node`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRef<'a> {
    /// Absolute path (`/...`) or a special node (`@...`), without its NUL.
    pub path: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// Permissions, owner first; never empty.
    pub perms: PermsRef<'a>,
}

/// The permission specifiers of a [`NodeRef`], as the stream holds them
/// (checked when read: every letter and flag is defined).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermsRef<'a> {
    pub(crate) raw: &'a [u8],
    pub(crate) endian: Endian,
}

impl<'a> PermsRef<'a> {
    /// Number of specifiers.
    pub fn len(&self) -> usize {
        self.raw.len() / 4
    }

    /// True if there are none (never for a record read).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The specifiers, owner first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Perm> + 'a {
        let e = self.endian;
        self.raw.chunks_exact(4).map(move |p| Perm {
            // Checked when read.
            access: PermAccess::from_letter(p[0]).unwrap_or(PermAccess::None),
            stale: p[1] & 0x01 != 0,
            domid: e.u16_from([p[2], p[3]]),
        })
    }
}

/// What [`crate::Reader::next_item`] hands out: a committed node borrowed
/// from the stream, or any other record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<'a> {
    /// A committed node.
    Node(NodeRef<'a>),
    /// Any other record (transaction nodes included).
    Record(Record),
}

/// One node permission specifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The access granted.
    pub access: PermAccess,
    /// Flag 0x01: stale (the domain is gone); ignored when checking.
    pub stale: bool,
    /// The domain it applies to.
    pub domid: u16,
}

/// The `perm` octet of a permission specifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PermAccess {
    /// `n`.
    None,
    /// `r`.
    Read,
    /// `w`.
    Write,
    /// `b`: read and write.
    Both,
}

impl PermAccess {
    /// The ASCII letter stored in the stream.
    pub fn letter(self) -> u8 {
        match self {
            PermAccess::None => b'n',
            PermAccess::Read => b'r',
            PermAccess::Write => b'w',
            PermAccess::Both => b'b',
        }
    }

    /// The access a letter stands for.
    pub fn from_letter(c: u8) -> Option<PermAccess> {
        Some(match c {
            b'n' => PermAccess::None,
            b'r' => PermAccess::Read,
            b'w' => PermAccess::Write,
            b'b' => PermAccess::Both,
            _ => return None,
        })
    }
}

/// A named quota value (0 means unlimited).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Name as in `GET_QUOTA`/`SET_QUOTA`, or implementation specific
    /// (C: `soft-` prefix for soft limits).
    pub name: Vec<u8>,
    /// The value.
    pub value: u32,
}

/// `GLOBAL_QUOTA_DATA`: the daemon's quota settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GlobalQuota {
    /// Defaults given to each new domain (`n-dom-quota` values).
    pub per_domain: Vec<Quota>,
    /// Limits that apply only globally (`n-glob-quota` values).
    pub global: Vec<Quota>,
}

/// `DOMAIN_DATA`: per-domain settings; at most one record per domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Domain {
    /// The domain.
    pub domid: u16,
    /// The server features offered to it (ring offset 2064). Version 2
    /// only: a version-1 stream carries 0.
    pub features: u32,
    /// The domain's quota values.
    pub quotas: Vec<Quota>,
}
