//! Xenstore's migration and live-update stream, as Xen's
//! `docs/designs/xenstore-migration.md` defines it, with no I/O.
//!
//! A stream is a 16-byte header (`xenstore`, version, endianness flag)
//! followed by records, each an 8-byte header (`type`, `len`), a body and
//! zero padding to the next 8-byte boundary, and ends with an `END`
//! record. C xenstored writes one when it live-updates itself and reads it
//! back in the new binary.
//!
//! * [`Record`] and the types it holds are the records as plain data;
//! * [`Reader`] reads a stream from a byte slice, record by record, and
//!   rejects anything the document does not allow (with an [`Error`],
//!   never a panic, and never allocating more than the input holds);
//!   [`Stream::read`] reads a whole stream;
//! * [`Writer`] writes a stream of version 1 or 2 to any
//!   [`std::io::Write`], refusing records the chosen version cannot carry.
//!
//! Both apply the same rules, including those between records (a watch,
//! transaction or transaction node comes after the connection or
//! transaction it names; ids are unique). What the records *mean* to a
//! daemon (descriptors to adopt, ports to rebind, nodes to restore) is the
//! daemon's business; the crate's README lists what C xenstored expects.
//!
//! ```
//! use xenstore_migrate::*;
//!
//! let header = StreamHeader { version: Version::V2, endian: Endian::Little };
//! let mut w = Writer::new(Vec::new(), header).unwrap();
//! w.write_record(&Record::Global(Global { socket_fd: 3, evtchn_fd: 4 })).unwrap();
//! w.write_record(&Record::Node(Node {
//!     path: b"/".to_vec(),
//!     transaction: None,
//!     value: Vec::new(),
//!     perms: vec![Perm { access: PermAccess::None, stale: false, domid: 0 }],
//! }))
//! .unwrap();
//! let bytes = w.finish().unwrap();
//!
//! let stream = Stream::read(&bytes).unwrap();
//! assert_eq!(stream.header, header);
//! assert_eq!(stream.records.len(), 2);
//! ```

mod codec;
pub mod error;
mod reader;
pub mod record;
mod writer;

pub use error::{Error, Result};
pub use reader::{
    count_records, read_header, Reader, Stream, HEADER_LEN, IDENT, RECORD_HEADER_LEN,
};
pub use record::*;
pub use writer::Writer;
