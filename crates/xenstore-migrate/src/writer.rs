//! Writing a stream to any [`std::io::Write`].

use std::io::Write;

use crate::codec::{check_record, encode, encode_node_ref, Refs};
use crate::error::{Error, Result};
use crate::reader::{HEADER_LEN, IDENT, RECORD_HEADER_LEN};
use crate::record::{Endian, Perm, Record, RecordType, StreamHeader};

/// Writes a stream: the header at creation, then records, then `END` in
/// [`Writer::finish`].
///
/// Each record is checked before any of its bytes are written (the same
/// rules the [`crate::Reader`] applies, including the order between
/// records), so a refused record leaves the stream as it was. `len` is
/// written padded to a multiple of 8, as C xenstored writes and reads it.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    header: StreamHeader,
    pos: usize,
    refs: Refs,
    /// The body being encoded by [`Writer::write_node`], kept between
    /// nodes.
    scratch: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// Writes the 16-byte header (big-endian, whatever the records' order).
    pub fn new(mut out: W, header: StreamHeader) -> Result<Writer<W>> {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(&IDENT);
        h[8..12].copy_from_slice(&header.version.number().to_be_bytes());
        let flags: u32 = match header.endian {
            Endian::Little => 0,
            Endian::Big => 1,
        };
        h[12..].copy_from_slice(&flags.to_be_bytes());
        out.write_all(&h)?;
        Ok(Writer {
            out,
            header,
            pos: HEADER_LEN,
            refs: Refs::default(),
            scratch: Vec::new(),
        })
    }

    /// The version and byte order being written.
    pub fn header(&self) -> StreamHeader {
        self.header
    }

    /// Bytes written so far.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Checks and writes one record.
    pub fn write_record(&mut self, rec: &Record) -> Result<()> {
        let offset = self.pos;
        let ty = rec.record_type();
        let version = self.header.version;
        check_record(rec, version).map_err(|f| f.at(offset, ty, version))?;
        self.refs.check(rec, offset)?;
        let body = encode(rec, self.header);
        let len = u32::try_from(body.len()).map_err(|_| Error::Invalid {
            offset,
            record: ty,
            reason: "record longer than 2^32-1 bytes",
        })?;
        self.record_header(ty, len)?;
        self.out.write_all(&body)?;
        self.refs.add(rec);
        self.pos = self.pos.saturating_add(body.len());
        Ok(())
    }

    /// Checks and writes a committed node (`NODE_DATA` with `conn-id` 0)
    /// from borrowed parts: the same bytes as [`Writer::write_record`]
    /// with a [`crate::Node`] of no transaction, without building one.
    pub fn write_node(&mut self, path: &[u8], value: &[u8], perms: &[Perm]) -> Result<()> {
        let offset = self.pos;
        let e = self.header.endian;
        let mut body = std::mem::take(&mut self.scratch);
        let encoded = encode_node_ref(&mut body, path, value, perms, e)
            .map_err(|f| f.at(offset, RecordType::Node, self.header.version));
        let written = encoded.and_then(|()| {
            // At most 16 + 4 * 65535 + 2 * 65536 bytes: fits in u32.
            self.record_header(RecordType::Node, body.len() as u32)?;
            self.out.write_all(&body)?;
            self.pos = self.pos.saturating_add(body.len());
            Ok(())
        });
        self.scratch = body;
        written
    }

    fn record_header(&mut self, ty: RecordType, len: u32) -> Result<()> {
        let e = self.header.endian;
        let mut h = [0u8; RECORD_HEADER_LEN];
        h[..4].copy_from_slice(&e.u32_bytes(ty.code()));
        h[4..].copy_from_slice(&e.u32_bytes(len));
        self.out.write_all(&h)?;
        self.pos = self.pos.saturating_add(RECORD_HEADER_LEN);
        Ok(())
    }

    /// Writes `END`, flushes, and hands the output back.
    pub fn finish(mut self) -> Result<W> {
        self.record_header(RecordType::End, 0)?;
        self.out.flush()?;
        Ok(self.out)
    }
}
