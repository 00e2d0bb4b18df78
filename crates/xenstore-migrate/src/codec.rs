//! Record bodies: the rules every record must obey, the decoder and the
//! encoder. Shared by the reader and the writer so that both accept
//! exactly the same records.

use std::collections::HashSet;

use crate::error::Error;
use crate::record::*;

/// A problem with one record, turned into an [`Error`] by the caller, who
/// knows where the record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Invalid(&'static str),
    NotInVersion(&'static str),
}

impl Fault {
    pub(crate) fn at(self, offset: usize, record: RecordType, version: Version) -> Error {
        match self {
            Fault::Invalid(reason) => Error::Invalid {
                offset,
                record,
                reason,
            },
            Fault::NotInVersion(what) => Error::NotInVersion {
                offset,
                record,
                what,
                version: version.number(),
            },
        }
    }
}

type FResult<T> = Result<T, Fault>;

/// Largest string whose length, NUL included, fits a 16-bit field.
const MAX_STR16: usize = u16::MAX as usize - 1;

pub(crate) fn round8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

fn check_string(s: &[u8], what: &'static str) -> FResult<()> {
    if s.contains(&0) {
        return Err(Fault::Invalid(what));
    }
    if s.len() > MAX_STR16 {
        return Err(Fault::Invalid(
            "string too long for its 16-bit length field",
        ));
    }
    Ok(())
}

fn input_len(input: &Input) -> u64 {
    let mut n: u64 = 0;
    for m in &input.requests {
        n += MSG_HEADER_LEN as u64 + m.payload.len() as u64;
    }
    match &input.partial {
        None => {}
        Some(PartialInput::Header(h)) => n += h.len() as u64,
        Some(PartialInput::Payload { received, .. }) => {
            n += MSG_HEADER_LEN as u64 + received.len() as u64
        }
    }
    n
}

fn output_len(output: &Output) -> u64 {
    let mut n = output.partial.len() as u64;
    for m in &output.messages {
        n += MSG_HEADER_LEN as u64 + m.payload.len() as u64;
    }
    n
}

fn check_message(m: &Message) -> FResult<()> {
    if u32::try_from(m.payload.len()).is_err() {
        return Err(Fault::Invalid("message payload longer than 2^32-1 bytes"));
    }
    Ok(())
}

const EMPTY_NAME: &str = "empty quota name";

fn check_quotas(q: &[Quota]) -> FResult<()> {
    if q.len() > u16::MAX as usize {
        return Err(Fault::Invalid("more than 65535 quota values"));
    }
    for quota in q {
        if quota.name.contains(&0) {
            return Err(Fault::Invalid("NUL inside a quota name"));
        }
        if quota.name.is_empty() {
            return Err(Fault::Invalid(EMPTY_NAME));
        }
    }
    Ok(())
}

/// The rules of the document that concern one record alone. The reader
/// applies them to what it decoded, the writer to what it is given.
pub(crate) fn check_record(rec: &Record, version: Version) -> FResult<()> {
    match rec {
        Record::Global(_) | Record::Transaction(_) => Ok(()),
        Record::Connection(c) => {
            if c.conn_id == 0 {
                return Err(Fault::Invalid("conn-id 0 (it must be non-zero)"));
            }
            if let ConnKind::Ring {
                target: Some(DOMID_INVALID),
                ..
            } = c.kind
            {
                return Err(Fault::Invalid(
                    "target DOMID_INVALID (write None for no target)",
                ));
            }
            for m in &c.input.requests {
                check_message(m)?;
            }
            match &c.input.partial {
                Some(PartialInput::Header(h)) if h.is_empty() || h.len() >= MSG_HEADER_LEN => {
                    return Err(Fault::Invalid("a partial input header has 1 to 15 bytes"));
                }
                Some(PartialInput::Payload { len, received, .. })
                    if received.len() as u64 >= u64::from(*len) =>
                {
                    return Err(Fault::Invalid(
                        "a partial input payload has fewer bytes than its header announces",
                    ));
                }
                _ => {}
            }
            if input_len(&c.input) > u64::from(u16::MAX) {
                return Err(Fault::Invalid("more than 65535 bytes of input"));
            }
            if c.output.partial.len() > u16::MAX as usize {
                return Err(Fault::Invalid(
                    "more than 65535 bytes of partially sent output",
                ));
            }
            for m in &c.output.messages {
                check_message(m)?;
            }
            if output_len(&c.output) > u64::from(u32::MAX) {
                return Err(Fault::Invalid("more than 2^32-1 bytes of output"));
            }
            Ok(())
        }
        Record::Watch(w) => {
            check_string(&w.path, "NUL inside the watch path")?;
            check_string(&w.token, "NUL inside the watch token")?;
            if w.depth.is_some() && version < Version::V2 {
                return Err(Fault::NotInVersion("a watch depth (WATCH_DATA_EXTENDED)"));
            }
            Ok(())
        }
        Record::Node(n) => {
            check_string(&n.path, "NUL inside the node path")?;
            if !matches!(n.path.first(), Some(b'/' | b'@')) {
                return Err(Fault::Invalid(
                    "node path neither absolute nor special (@...)",
                ));
            }
            if n.value.len() > u16::MAX as usize {
                return Err(Fault::Invalid("node value longer than 65535 bytes"));
            }
            if n.perms.len() > u16::MAX as usize {
                return Err(Fault::Invalid("more than 65535 permissions"));
            }
            match n.transaction {
                None => {
                    if n.perms.is_empty() {
                        return Err(Fault::Invalid(
                            "committed node without permissions (the first is its owner)",
                        ));
                    }
                }
                Some(tx) => {
                    if tx.conn_id == 0 {
                        return Err(Fault::Invalid("transaction node with conn-id 0"));
                    }
                    if tx.is_deleted() {
                        if !n.perms.is_empty() || !n.value.is_empty() {
                            return Err(Fault::Invalid(
                                "node deleted in a transaction (access 0) with a value or permissions",
                            ));
                        }
                    } else if n.perms.is_empty() {
                        return Err(Fault::Invalid(
                            "transaction node without permissions but not deleted (access != 0)",
                        ));
                    }
                }
            }
            Ok(())
        }
        Record::GlobalQuota(g) => {
            check_quotas(&g.per_domain)?;
            check_quotas(&g.global)
        }
        Record::Domain(d) => {
            check_quotas(&d.quotas)?;
            if d.features != 0 && version < Version::V2 {
                return Err(Fault::NotInVersion("DOMAIN_DATA features"));
            }
            Ok(())
        }
    }
}

/// The rules between records: a record that names a connection or a
/// transaction comes after the record that defines it, and ids are unique.
#[derive(Debug, Default)]
pub(crate) struct Refs {
    conns: HashSet<u32>,
    txs: HashSet<(u32, u32)>,
    domains: HashSet<u16>,
}

impl Refs {
    /// Checks `rec` against the records seen so far, without taking it in.
    pub(crate) fn check(&self, rec: &Record, offset: usize) -> Result<(), Error> {
        let record = rec.record_type();
        let conn = |conn_id: u32| {
            if self.conns.contains(&conn_id) {
                Ok(())
            } else {
                Err(Error::UnknownConnection {
                    offset,
                    record,
                    conn_id,
                })
            }
        };
        match rec {
            Record::Connection(c) => {
                if self.conns.contains(&c.conn_id) {
                    return Err(Error::DuplicateConnection {
                        offset,
                        conn_id: c.conn_id,
                    });
                }
            }
            Record::Watch(w) => conn(w.conn_id)?,
            Record::Transaction(t) => {
                conn(t.conn_id)?;
                if self.txs.contains(&(t.conn_id, t.tx_id)) {
                    return Err(Error::DuplicateTransaction {
                        offset,
                        conn_id: t.conn_id,
                        tx_id: t.tx_id,
                    });
                }
            }
            Record::Node(Node {
                transaction: Some(tx),
                ..
            }) => {
                if !self.txs.contains(&(tx.conn_id, tx.tx_id)) {
                    return Err(Error::UnknownTransaction {
                        offset,
                        conn_id: tx.conn_id,
                        tx_id: tx.tx_id,
                    });
                }
            }
            Record::Domain(d) => {
                if self.domains.contains(&d.domid) {
                    return Err(Error::DuplicateDomain {
                        offset,
                        domid: d.domid,
                    });
                }
            }
            Record::Node(_) | Record::Global(_) | Record::GlobalQuota(_) => {}
        }
        Ok(())
    }

    /// Takes in a record that passed [`Refs::check`].
    pub(crate) fn add(&mut self, rec: &Record) {
        match rec {
            Record::Connection(c) => {
                self.conns.insert(c.conn_id);
            }
            Record::Transaction(t) => {
                self.txs.insert((t.conn_id, t.tx_id));
            }
            Record::Domain(d) => {
                self.domains.insert(d.domid);
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------
// Decoding.

/// A cursor over one record body (`len` bytes), in the stream's order.
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
    e: Endian,
}

const PAST_LEN: Fault = Fault::Invalid("a field extends past the record length");

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> FResult<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(PAST_LEN)?;
        let s = self.b.get(self.pos..end).ok_or(PAST_LEN)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> FResult<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u16(&mut self) -> FResult<u16> {
        Ok(self.e.u16_from(self.array()?))
    }

    fn u32(&mut self) -> FResult<u32> {
        Ok(self.e.u32_from(self.array()?))
    }

    fn u64(&mut self) -> FResult<u64> {
        Ok(self.e.u64_from(self.array()?))
    }

    fn i32(&mut self) -> FResult<i32> {
        Ok(self.u32()? as i32)
    }

    /// A string whose length field includes its NUL.
    fn cstr(&mut self, len_with_nul: u16, what_nul: &'static str) -> FResult<Vec<u8>> {
        self.cstr_ref(len_with_nul, what_nul).map(<[u8]>::to_vec)
    }

    /// [`Cur::cstr`], borrowed.
    fn cstr_ref(&mut self, len_with_nul: u16, what_nul: &'static str) -> FResult<&'a [u8]> {
        let s = self.take(usize::from(len_with_nul))?;
        let Some((&last, body)) = s.split_last() else {
            return Err(Fault::Invalid(
                "string length 0 (the length includes the NUL)",
            ));
        };
        if last != 0 {
            return Err(Fault::Invalid("string not NUL-terminated"));
        }
        if body.contains(&0) {
            return Err(Fault::Invalid(what_nul));
        }
        Ok(body)
    }

    /// `n` quota values then `n` NUL-terminated names.
    fn quotas(&mut self, n: usize) -> FResult<Vec<Quota>> {
        let vals = self.take(n * 4)?;
        let mut out = Vec::with_capacity(n);
        for v in vals.chunks_exact(4) {
            let value = self.e.u32_from([v[0], v[1], v[2], v[3]]);
            let rest = &self.b[self.pos..];
            let Some(nul) = rest.iter().position(|&c| c == 0) else {
                return Err(Fault::Invalid("quota name not NUL-terminated"));
            };
            if nul == 0 {
                // Also what the zero padding after the last name would
                // read as.
                return Err(Fault::Invalid(EMPTY_NAME));
            }
            let name = rest[..nul].to_vec();
            self.pos += nul + 1;
            out.push(Quota { name, value });
        }
        Ok(out)
    }
}

fn header_fields(h: &[u8], e: Endian) -> (u32, u32, u32, u32) {
    let f = |i: usize| e.u32_from([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    (f(0), f(4), f(8), f(12))
}

/// Splits `in-data` into whole requests and at most one message of which
/// only the beginning arrived. Every byte sequence has exactly one such
/// split.
fn split_input(b: &[u8], e: Endian) -> Input {
    let mut input = Input::default();
    let mut off = 0;
    while off < b.len() {
        let rest = &b[off..];
        if rest.len() < MSG_HEADER_LEN {
            input.partial = Some(PartialInput::Header(rest.to_vec()));
            break;
        }
        let (msg_type, req_id, tx_id, len) = header_fields(rest, e);
        let avail = &rest[MSG_HEADER_LEN..];
        match usize::try_from(len) {
            Ok(l) if l <= avail.len() => {
                input.requests.push(Message {
                    msg_type,
                    req_id,
                    tx_id,
                    payload: avail[..l].to_vec(),
                });
                off += MSG_HEADER_LEN + l;
            }
            _ => {
                input.partial = Some(PartialInput::Payload {
                    msg_type,
                    req_id,
                    tx_id,
                    len,
                    received: avail.to_vec(),
                });
                break;
            }
        }
    }
    input
}

/// Splits the output after the partial response into whole messages.
fn split_output(b: &[u8], e: Endian) -> FResult<Vec<Message>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < b.len() {
        let rest = &b[off..];
        if rest.len() < MSG_HEADER_LEN {
            return Err(Fault::Invalid(
                "pending output ends inside a message header",
            ));
        }
        let (msg_type, req_id, tx_id, len) = header_fields(rest, e);
        let avail = &rest[MSG_HEADER_LEN..];
        let l = usize::try_from(len)
            .ok()
            .filter(|&l| l <= avail.len())
            .ok_or(Fault::Invalid(
                "a pending output message is longer than out-data-len allows",
            ))?;
        out.push(Message {
            msg_type,
            req_id,
            tx_id,
            payload: avail[..l].to_vec(),
        });
        off += MSG_HEADER_LEN + l;
    }
    Ok(out)
}

/// `n` permission specifiers, checked, as they stand in the stream.
fn perms_ref<'a>(c: &mut Cur<'a>, n: u16) -> FResult<PermsRef<'a>> {
    let raw = c.take(usize::from(n) * 4)?;
    for p in raw.chunks_exact(4) {
        if PermAccess::from_letter(p[0]).is_none() {
            return Err(Fault::Invalid("permission letter not one of n, r, w, b"));
        }
        if p[1] & !0x01 != 0 {
            return Err(Fault::Invalid("undefined permission flag bits"));
        }
    }
    Ok(PermsRef { raw, endian: c.e })
}

fn decode_perms(c: &mut Cur<'_>, n: u16) -> FResult<Vec<Perm>> {
    Ok(perms_ref(c, n)?.iter().collect())
}

/// The padding rule every record body follows: at most 7 bytes past the
/// content inside `len` (C counts the padding in `len`; the document
/// leaves it outside).
fn check_padding(c: &Cur<'_>) -> FResult<()> {
    if c.b.len() - c.pos >= 8 {
        return Err(Fault::Invalid(
            "record length exceeds its content by 8 bytes or more",
        ));
    }
    Ok(())
}

/// The body of a `NODE_DATA` record, borrowed, if it is a committed node
/// (`conn-id` 0); `None` for a transaction's node, which
/// [`decode`] reads. Checked as [`decode`] and [`check_record`] check a
/// committed [`Node`].
pub(crate) fn decode_node_ref(body: &[u8], e: Endian) -> FResult<Option<NodeRef<'_>>> {
    let mut c = Cur { b: body, pos: 0, e };
    if c.u32()? != 0 {
        return Ok(None);
    }
    let _tx_id = c.u32()?;
    let path_len = c.u16()?;
    let value_len = c.u16()?;
    // Ignored for a committed node.
    let _access = c.u16()?;
    let perm_count = c.u16()?;
    let perms = perms_ref(&mut c, perm_count)?;
    let path = c.cstr_ref(path_len, "NUL inside the node path")?;
    let value = c.take(usize::from(value_len))?;
    check_padding(&c)?;
    if !matches!(path.first(), Some(b'/' | b'@')) {
        return Err(Fault::Invalid(
            "node path neither absolute nor special (@...)",
        ));
    }
    if perms.is_empty() {
        return Err(Fault::Invalid(
            "committed node without permissions (the first is its owner)",
        ));
    }
    Ok(Some(NodeRef { path, value, perms }))
}

/// Encodes a committed node's body into `out` (cleared first), padded to
/// a multiple of 8, after the checks [`check_record`] makes for a
/// committed [`Node`].
pub(crate) fn encode_node_ref(
    out: &mut Vec<u8>,
    path: &[u8],
    value: &[u8],
    perms: &[Perm],
    e: Endian,
) -> FResult<()> {
    check_string(path, "NUL inside the node path")?;
    if !matches!(path.first(), Some(b'/' | b'@')) {
        return Err(Fault::Invalid(
            "node path neither absolute nor special (@...)",
        ));
    }
    if value.len() > u16::MAX as usize {
        return Err(Fault::Invalid("node value longer than 65535 bytes"));
    }
    if perms.len() > u16::MAX as usize {
        return Err(Fault::Invalid("more than 65535 permissions"));
    }
    if perms.is_empty() {
        return Err(Fault::Invalid(
            "committed node without permissions (the first is its owner)",
        ));
    }
    out.clear();
    let mut b = Buf {
        b: std::mem::take(out),
        e,
    };
    b.u32(0);
    b.u32(0);
    b.u16(path.len() as u16 + 1);
    b.u16(value.len() as u16);
    b.u16(0);
    b.u16(perms.len() as u16);
    for p in perms {
        b.b.push(p.access.letter());
        b.b.push(u8::from(p.stale));
        b.u16(p.domid);
    }
    b.cstr(path);
    b.bytes(value);
    b.pad8();
    *out = b.b;
    Ok(())
}

/// Decodes the body of a record of type `ty` (not END). `body` is the
/// `len` bytes the record header announces.
pub(crate) fn decode(ty: RecordType, body: &[u8], h: StreamHeader) -> FResult<Record> {
    let mut c = Cur {
        b: body,
        pos: 0,
        e: h.endian,
    };
    let rec = match ty {
        RecordType::End => return Err(Fault::Invalid("END has no body")),
        RecordType::Global => Record::Global(Global {
            socket_fd: c.i32()?,
            evtchn_fd: c.i32()?,
        }),
        RecordType::Connection => {
            let conn_id = c.u32()?;
            let conn_type = c.u16()?;
            let fields = c.u16()?;
            let spec: [u8; 8] = c.array()?;
            let in_len = c.u16()?;
            let resp_len = c.u16()?;
            let out_len = c.u32()?;
            if fields & !0x0001 != 0 {
                return Err(Fault::Invalid("undefined bits in fields"));
            }
            let kind = match conn_type {
                0 => {
                    let tdomid = c.e.u16_from([spec[2], spec[3]]);
                    ConnKind::Ring {
                        domid: c.e.u16_from([spec[0], spec[1]]),
                        target: (tdomid != DOMID_INVALID).then_some(tdomid),
                        evtchn: c.e.u32_from([spec[4], spec[5], spec[6], spec[7]]),
                    }
                }
                1 => ConnKind::Socket {
                    fd: c.e.u32_from([spec[0], spec[1], spec[2], spec[3]]) as i32,
                },
                _ => return Err(Fault::Invalid("reserved conn-type")),
            };
            let input = c.take(usize::from(in_len))?;
            let out_len = usize::try_from(out_len).map_err(|_| PAST_LEN)?;
            let out = c.take(out_len)?;
            let resp_len = usize::from(resp_len);
            if resp_len > out.len() {
                return Err(Fault::Invalid("out-resp-len exceeds out-data-len"));
            }
            let output = Output {
                partial: out[..resp_len].to_vec(),
                messages: split_output(&out[resp_len..], c.e)?,
            };
            let unique_id = if fields & 0x0001 != 0 {
                let pad = c.pos.next_multiple_of(8) - c.pos;
                c.take(pad)?;
                Some(c.u64()?)
            } else {
                None
            };
            Record::Connection(Connection {
                conn_id,
                kind,
                input: split_input(input, c.e),
                output,
                unique_id,
            })
        }
        RecordType::Watch | RecordType::WatchExtended => {
            let conn_id = c.u32()?;
            let path_len = c.u16()?;
            let token_len = c.u16()?;
            let depth = if ty == RecordType::WatchExtended {
                let d = c.u16()?;
                let _pad = c.u16()?;
                Some(d)
            } else {
                None
            };
            Record::Watch(Watch {
                conn_id,
                path: c.cstr(path_len, "NUL inside the watch path")?,
                token: c.cstr(token_len, "NUL inside the watch token")?,
                depth,
            })
        }
        RecordType::Transaction => Record::Transaction(Transaction {
            conn_id: c.u32()?,
            tx_id: c.u32()?,
        }),
        RecordType::Node => {
            let conn_id = c.u32()?;
            let tx_id = c.u32()?;
            let path_len = c.u16()?;
            let value_len = c.u16()?;
            let access = c.u16()?;
            let perm_count = c.u16()?;
            let perms = decode_perms(&mut c, perm_count)?;
            let path = c.cstr(path_len, "NUL inside the node path")?;
            let value = c.take(usize::from(value_len))?.to_vec();
            // tx-id and access are to be ignored for a committed node.
            let transaction = if conn_id == 0 {
                None
            } else {
                if access & !0x0003 != 0 {
                    return Err(Fault::Invalid("undefined access bits"));
                }
                Some(NodeTx {
                    conn_id,
                    tx_id,
                    read: access & 0x0001 != 0,
                    written: access & 0x0002 != 0,
                })
            };
            Record::Node(Node {
                path,
                transaction,
                value,
                perms,
            })
        }
        RecordType::GlobalQuota => {
            let n_dom = usize::from(c.u16()?);
            let n_glob = usize::from(c.u16()?);
            let mut all = c.quotas(n_dom + n_glob)?;
            let global = all.split_off(n_dom);
            Record::GlobalQuota(GlobalQuota {
                per_domain: all,
                global,
            })
        }
        RecordType::Domain => {
            let domid = c.u16()?;
            let n = usize::from(c.u16()?);
            let features = c.u32()?;
            Record::Domain(Domain {
                domid,
                // Not valid in version 1: ignored when read.
                features: if h.version >= Version::V2 {
                    features
                } else {
                    0
                },
                quotas: c.quotas(n)?,
            })
        }
    };
    check_padding(&c)?;
    Ok(rec)
}

// ---------------------------------------------------------------------
// Encoding.

struct Buf {
    b: Vec<u8>,
    e: Endian,
}

impl Buf {
    fn u16(&mut self, v: u16) {
        self.b.extend_from_slice(&self.e.u16_bytes(v));
    }
    fn u32(&mut self, v: u32) {
        self.b.extend_from_slice(&self.e.u32_bytes(v));
    }
    fn u64(&mut self, v: u64) {
        self.b.extend_from_slice(&self.e.u64_bytes(v));
    }
    fn bytes(&mut self, s: &[u8]) {
        self.b.extend_from_slice(s);
    }
    fn pad8(&mut self) {
        let n = self.b.len().next_multiple_of(8);
        self.b.resize(n, 0);
    }
    fn message(&mut self, m: &Message) {
        self.u32(m.msg_type);
        self.u32(m.req_id);
        self.u32(m.tx_id);
        self.u32(m.payload.len() as u32);
        self.bytes(&m.payload);
    }
    fn cstr(&mut self, s: &[u8]) {
        self.bytes(s);
        self.b.push(0);
    }
    fn quotas<'q>(&mut self, q: impl Iterator<Item = &'q Quota> + Clone) {
        for quota in q.clone() {
            self.u32(quota.value);
        }
        for quota in q {
            self.cstr(&quota.name);
        }
    }
}

/// Encodes the body of `rec`, padded to a multiple of 8. The record must
/// have passed [`check_record`] (lengths are cast unchecked).
pub(crate) fn encode(rec: &Record, h: StreamHeader) -> Vec<u8> {
    let mut b = Buf {
        b: Vec::new(),
        e: h.endian,
    };
    match rec {
        Record::Global(g) => {
            b.u32(g.socket_fd as u32);
            b.u32(g.evtchn_fd as u32);
        }
        Record::Connection(c) => {
            b.u32(c.conn_id);
            match c.kind {
                ConnKind::Ring { .. } => b.u16(0),
                ConnKind::Socket { .. } => b.u16(1),
            }
            b.u16(if c.unique_id.is_some() { 0x0001 } else { 0 });
            match c.kind {
                ConnKind::Ring {
                    domid,
                    target,
                    evtchn,
                } => {
                    b.u16(domid);
                    b.u16(target.unwrap_or(DOMID_INVALID));
                    b.u32(evtchn);
                }
                ConnKind::Socket { fd } => {
                    b.u32(fd as u32);
                    b.u32(0);
                }
            }
            b.u16(input_len(&c.input) as u16);
            b.u16(c.output.partial.len() as u16);
            b.u32(output_len(&c.output) as u32);
            for m in &c.input.requests {
                b.message(m);
            }
            match &c.input.partial {
                None => {}
                Some(PartialInput::Header(hd)) => b.bytes(hd),
                Some(PartialInput::Payload {
                    msg_type,
                    req_id,
                    tx_id,
                    len,
                    received,
                }) => {
                    b.u32(*msg_type);
                    b.u32(*req_id);
                    b.u32(*tx_id);
                    b.u32(*len);
                    b.bytes(received);
                }
            }
            b.bytes(&c.output.partial);
            for m in &c.output.messages {
                b.message(m);
            }
            if let Some(id) = c.unique_id {
                b.pad8();
                b.u64(id);
            }
        }
        Record::Watch(w) => {
            b.u32(w.conn_id);
            b.u16(w.path.len() as u16 + 1);
            b.u16(w.token.len() as u16 + 1);
            if let Some(depth) = w.depth {
                b.u16(depth);
                b.u16(0);
            }
            b.cstr(&w.path);
            b.cstr(&w.token);
        }
        Record::Transaction(t) => {
            b.u32(t.conn_id);
            b.u32(t.tx_id);
        }
        Record::Node(n) => {
            let (conn_id, tx_id, access) = match n.transaction {
                None => (0, 0, 0),
                Some(tx) => (
                    tx.conn_id,
                    tx.tx_id,
                    u16::from(tx.read) | (u16::from(tx.written) << 1),
                ),
            };
            b.u32(conn_id);
            b.u32(tx_id);
            b.u16(n.path.len() as u16 + 1);
            b.u16(n.value.len() as u16);
            b.u16(access);
            b.u16(n.perms.len() as u16);
            for p in &n.perms {
                b.b.push(p.access.letter());
                b.b.push(u8::from(p.stale));
                b.u16(p.domid);
            }
            b.cstr(&n.path);
            b.bytes(&n.value);
        }
        Record::GlobalQuota(g) => {
            b.u16(g.per_domain.len() as u16);
            b.u16(g.global.len() as u16);
            b.quotas(g.per_domain.iter().chain(g.global.iter()));
        }
        Record::Domain(d) => {
            b.u16(d.domid);
            b.u16(d.quotas.len() as u16);
            b.u32(if h.version >= Version::V2 {
                d.features
            } else {
                0
            });
            b.quotas(d.quotas.iter());
        }
    }
    b.pad8();
    b.b
}
