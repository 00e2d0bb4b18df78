//! Reading a stream from a byte slice.

use crate::codec::{check_record, decode, decode_node_ref, round8, Refs};
use crate::error::{Error, Result};
use crate::record::{Endian, Item, Record, RecordType, StreamHeader, Version};

/// Size of the stream header.
pub const HEADER_LEN: usize = 16;
/// The ident the stream starts with (no NUL).
pub const IDENT: [u8; 8] = *b"xenstore";
/// Size of a record header (`type`, `len`).
pub const RECORD_HEADER_LEN: usize = 8;

/// Parses the 16-byte stream header.
pub fn read_header(data: &[u8]) -> Result<StreamHeader> {
    let Some(h) = data.get(..HEADER_LEN) else {
        return Err(Error::Truncated {
            offset: 0,
            what: "the stream header",
            needed: HEADER_LEN as u64,
            available: data.len(),
        });
    };
    if h[..8] != IDENT {
        return Err(Error::BadIdent);
    }
    // The header is big-endian whatever the endianness flag says.
    let version = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    let flags = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
    let version = Version::from_number(version).ok_or(Error::UnsupportedVersion(version))?;
    if flags & !1 != 0 {
        return Err(Error::ReservedFlags(flags));
    }
    let endian = if flags & 1 != 0 {
        Endian::Big
    } else {
        Endian::Little
    };
    Ok(StreamHeader { version, endian })
}

/// How many records of type `ty` a stream holds, from the record headers
/// alone: bodies are not checked, and counting stops at `END` or at the
/// first header or body that does not fit. A capacity hint before a full
/// read (never more than `data.len() / 8`).
pub fn count_records(data: &[u8], ty: RecordType) -> usize {
    let Ok(h) = read_header(data) else {
        return 0;
    };
    let mut pos = HEADER_LEN;
    let mut n = 0;
    while let Some(rh) = data.get(pos..pos.saturating_add(RECORD_HEADER_LEN)) {
        let code = h.endian.u32_from([rh[0], rh[1], rh[2], rh[3]]);
        let len = h.endian.u32_from([rh[4], rh[5], rh[6], rh[7]]);
        match RecordType::from_code(code) {
            Some(RecordType::End) | None => break,
            Some(t) => n += usize::from(t == ty),
        }
        // round8 of a u32 fits in usize on the targets Xen runs on.
        pos = pos
            .saturating_add(RECORD_HEADER_LEN)
            .saturating_add(round8(u64::from(len)) as usize);
        if pos > data.len() {
            break;
        }
    }
    n
}

/// A record's offset, type, body and length padded to 8.
type Frame<'a> = (usize, RecordType, &'a [u8], usize);

/// Reads the records of a stream held in memory, one at a time, checking
/// each against the document before handing it out.
///
/// Nothing is allocated beyond what the input holds: every length is
/// checked against the bytes that remain first. After an error or the
/// `END` record the reader yields nothing more.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    header: StreamHeader,
    refs: Refs,
    done: bool,
    ended: bool,
}

impl<'a> Reader<'a> {
    /// Checks the stream header and positions the reader on the first
    /// record.
    pub fn new(data: &'a [u8]) -> Result<Reader<'a>> {
        let header = read_header(data)?;
        Ok(Reader {
            data,
            pos: HEADER_LEN,
            header,
            refs: Refs::default(),
            done: false,
            ended: false,
        })
    }

    /// The stream's version and byte order.
    pub fn header(&self) -> StreamHeader {
        self.header
    }

    /// The offset of the next record (or of the bytes after `END`).
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Whether the `END` record was read.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The bytes after the `END` record (empty before it is read).
    pub fn rest(&self) -> &'a [u8] {
        if self.ended {
            &self.data[self.pos..]
        } else {
            &[]
        }
    }

    /// The next record; `Ok(None)` once `END` has been read. A stream
    /// without `END` is truncated.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        if self.done {
            return Ok(None);
        }
        let r = self.step();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r
    }

    /// The next record like [`Reader::next_record`], except that a
    /// committed node is handed out borrowed from the stream's bytes
    /// ([`Item::Node`]) instead of copied into a [`Record::Node`]: a
    /// restore of a large tree then allocates nothing per node here.
    pub fn next_item(&mut self) -> Result<Option<Item<'a>>> {
        if self.done {
            return Ok(None);
        }
        let r = self.step_item();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r
    }

    fn step_item(&mut self) -> Result<Option<Item<'a>>> {
        let Some((offset, ty, body, padded)) = self.frame()? else {
            return Ok(None);
        };
        if ty == RecordType::Node {
            let version = self.header.version;
            if let Some(n) =
                decode_node_ref(body, self.header.endian).map_err(|f| f.at(offset, ty, version))?
            {
                // A committed node names nothing for Refs to check.
                self.pos = offset + RECORD_HEADER_LEN + padded;
                return Ok(Some(Item::Node(n)));
            }
        }
        self.finish_record(offset, ty, body, padded)
            .map(|r| Some(Item::Record(r)))
    }

    fn step(&mut self) -> Result<Option<Record>> {
        let Some((offset, ty, body, padded)) = self.frame()? else {
            return Ok(None);
        };
        self.finish_record(offset, ty, body, padded).map(Some)
    }

    fn finish_record(
        &mut self,
        offset: usize,
        ty: RecordType,
        body: &[u8],
        padded: usize,
    ) -> Result<Record> {
        let version = self.header.version;
        let rec = decode(ty, body, self.header).map_err(|f| f.at(offset, ty, version))?;
        check_record(&rec, version).map_err(|f| f.at(offset, ty, version))?;
        self.refs.check(&rec, offset)?;
        self.refs.add(&rec);
        self.pos = offset + RECORD_HEADER_LEN + padded;
        Ok(rec)
    }

    /// The next record's offset, type, body and padded length, checked
    /// against the bytes that remain; `None` at `END` (then consumed).
    fn frame(&mut self) -> Result<Option<Frame<'a>>> {
        let offset = self.pos;
        let data: &'a [u8] = self.data;
        let rest = &data[offset..];
        let Some(rh) = rest.get(..RECORD_HEADER_LEN) else {
            return Err(Error::Truncated {
                offset,
                what: "a record header",
                needed: RECORD_HEADER_LEN as u64,
                available: rest.len(),
            });
        };
        let e = self.header.endian;
        let code = e.u32_from([rh[0], rh[1], rh[2], rh[3]]);
        let len = e.u32_from([rh[4], rh[5], rh[6], rh[7]]);
        let ty = RecordType::from_code(code).ok_or(Error::UnknownRecordType { offset, code })?;
        if ty == RecordType::End {
            if len != 0 {
                return Err(Error::Invalid {
                    offset,
                    record: ty,
                    reason: "END with a non-zero length",
                });
            }
            self.pos += RECORD_HEADER_LEN;
            self.ended = true;
            return Ok(None);
        }
        if ty.since() > self.header.version {
            return Err(Error::NotInVersion {
                offset,
                record: ty,
                what: "the record type",
                version: self.header.version.number(),
            });
        }
        // The body and its padding to the next 8-byte boundary.
        let padded = round8(u64::from(len));
        let body_rest = &rest[RECORD_HEADER_LEN..];
        if padded > body_rest.len() as u64 {
            return Err(Error::Truncated {
                offset: offset + RECORD_HEADER_LEN,
                what: "a record body",
                needed: padded,
                available: body_rest.len(),
            });
        }
        // Both fit in usize: they are at most body_rest.len().
        let body = &body_rest[..len as usize];
        Ok(Some((offset, ty, body, padded as usize)))
    }
}

impl Iterator for Reader<'_> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        self.next_record().transpose()
    }
}

/// A whole stream in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// Version and byte order.
    pub header: StreamHeader,
    /// The records, `END` excluded.
    pub records: Vec<Record>,
}

impl Stream {
    /// Reads a whole stream: every record, the `END` record, and nothing
    /// after it.
    pub fn read(data: &[u8]) -> Result<Stream> {
        let mut reader = Reader::new(data)?;
        let mut records = Vec::new();
        while let Some(rec) = reader.next_record()? {
            records.push(rec);
        }
        let rest = reader.rest();
        if !rest.is_empty() {
            return Err(Error::TrailingData {
                offset: reader.offset(),
                len: rest.len(),
            });
        }
        Ok(Stream {
            header: reader.header(),
            records,
        })
    }

    /// Encodes the stream, `END` included.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut w = crate::Writer::new(Vec::new(), self.header)?;
        for rec in &self.records {
            w.write_record(rec)?;
        }
        w.finish()
    }
}
