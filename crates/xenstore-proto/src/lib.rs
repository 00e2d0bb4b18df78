//! The Xenstore wire protocol, with no I/O.
//!
//! This crate owns everything that is a pure function of bytes on the wire:
//!
//! * [`header`]: the 16-byte message header and the message types;
//! * [`error`]: the error names a server may send ([`XsError`]);
//! * [`frame`]: an incremental decoder that cuts a byte stream into
//!   messages, and the encoders for replies and watch events;
//! * [`args`]: splitting a payload into its NUL-terminated arguments, with
//!   the exact strictness C xenstored applies per operation;
//! * [`path`]: validation and resolution of node paths (absolute, relative,
//!   special `@` paths);
//! * [`perms`]: permission entries (`r5`, `n0`, ...) and their parsing;
//! * [`number`]: the number parsers (domids, ports, depths, quota values).
//!
//! It is usable by clients as well as servers and is fuzzed (see `fuzz/`).

pub mod args;
pub mod error;
pub mod frame;
pub mod header;
pub mod number;
pub mod path;
pub mod perms;
pub mod ring;

pub use error::XsError;
pub use frame::{Decoder, FrameError, Message};
pub use header::{Header, MsgType, HEADER_SIZE, PAYLOAD_MAX};
pub use path::Resolved;
pub use perms::{Access, Perm, PermList};

/// The reserved domid meaning "the caller's own domain".
pub const DOMID_SELF: u32 = 0x7FF0;
/// The first reserved domid; ordinary domids are below it.
pub const DOMID_FIRST_RESERVED: u32 = 0x7FF0;
/// "No domain".
pub const DOMID_INVALID: u32 = 0x7FF4;
/// A permission entry with this domid applies to every domain.
pub const DOMID_ANY: u32 = 0x7FF5;
/// The idle domain.
pub const DOMID_IDLE: u32 = 0x7FFF;

/// Server feature bits, as in `server_features` of the ring page and in
/// GET_FEATURE / SET_FEATURE.
pub mod feature {
    /// The server implements the ring reconnection handshake.
    pub const RECONNECTION: u32 = 1;
    /// The server writes the ring error field before it stops serving.
    pub const ERROR: u32 = 2;
    /// WATCH accepts a depth argument.
    pub const WATCH_DEPTH: u32 = 4;
    /// Permission entries may name `DOMID_ANY`.
    pub const DOMID_ANY: u32 = 8;
}
