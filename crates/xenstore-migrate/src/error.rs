//! What can go wrong reading or writing a stream.

use crate::record::RecordType;

/// An error of the reader (malformed or truncated input) or of the writer
/// (a record that cannot be written, or an I/O error). `offset` is the
/// position in the stream of the record concerned (of its 8-byte record
/// header), or where the reader stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The first 8 bytes are not `xenstore`.
    #[error("not a Xenstore migration stream (the ident is not \"xenstore\")")]
    BadIdent,
    /// The header's version is neither 1 nor 2.
    #[error("unsupported stream version {0} (versions 1 and 2 are defined)")]
    UnsupportedVersion(u32),
    /// Header flag bits 1-31 are reserved and must be zero.
    #[error("reserved header flag bits set: {0:#010x}")]
    ReservedFlags(u32),
    /// The input ends before the stream does.
    #[error("stream truncated at offset {offset}: {what} needs {needed} bytes, {available} left")]
    Truncated {
        /// Where the missing part starts.
        offset: usize,
        /// What was being read.
        what: &'static str,
        /// Bytes needed from `offset` on.
        needed: u64,
        /// Bytes left from `offset` on.
        available: usize,
    },
    /// A record type the document reserves (9 and above); the document
    /// does not let a reader skip it.
    #[error("reserved record type {code:#x} at offset {offset}")]
    UnknownRecordType {
        /// Record position.
        offset: usize,
        /// Its type number.
        code: u32,
    },
    /// A record or field the stream's version does not have.
    #[error("{record} at offset {offset}: {what} is not valid in a version-{version} stream")]
    NotInVersion {
        /// Record position.
        offset: usize,
        /// The record's type.
        record: RecordType,
        /// What is missing from the version.
        what: &'static str,
        /// The stream's version number.
        version: u32,
    },
    /// A record whose content breaks the format (lengths that do not add
    /// up, a string without its NUL, a reserved value...). The writer
    /// reports the same for a record it cannot represent.
    #[error("{record} at offset {offset}: {reason}")]
    Invalid {
        /// Record position.
        offset: usize,
        /// The record's type.
        record: RecordType,
        /// What is wrong.
        reason: &'static str,
    },
    /// A record refers to a connection no earlier record introduced.
    #[error("{record} at offset {offset}: connection {conn_id} not defined earlier in the stream")]
    UnknownConnection {
        /// Record position.
        offset: usize,
        /// The record's type.
        record: RecordType,
        /// The connection id it names.
        conn_id: u32,
    },
    /// Two connection records with the same id.
    #[error("CONNECTION_DATA at offset {offset}: connection id {conn_id} used twice")]
    DuplicateConnection {
        /// Record position.
        offset: usize,
        /// The id.
        conn_id: u32,
    },
    /// A transaction node names a transaction no earlier record introduced.
    #[error("NODE_DATA at offset {offset}: transaction {tx_id} of connection {conn_id} not defined earlier in the stream")]
    UnknownTransaction {
        /// Record position.
        offset: usize,
        /// Its connection.
        conn_id: u32,
        /// Its id.
        tx_id: u32,
    },
    /// Two transaction records for the same connection and id.
    #[error("TRANSACTION_DATA at offset {offset}: transaction {tx_id} of connection {conn_id} defined twice")]
    DuplicateTransaction {
        /// Record position.
        offset: usize,
        /// Its connection.
        conn_id: u32,
        /// Its id.
        tx_id: u32,
    },
    /// Two domain records for the same domain.
    #[error("DOMAIN_DATA at offset {offset}: domain {domid} has a record already")]
    DuplicateDomain {
        /// Record position.
        offset: usize,
        /// The domain.
        domid: u16,
    },
    /// Bytes follow the `END` record.
    #[error("{len} bytes after the END record at offset {offset}")]
    TrailingData {
        /// Where they start.
        offset: usize,
        /// How many.
        len: usize,
    },
    /// The writer's output failed.
    #[error("writing the stream: {0}")]
    Io(#[from] std::io::Error),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
