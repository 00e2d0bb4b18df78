//! The simulator's wire protocol, shared by the server, the stand-in
//! libraries and the toolstack commands.
//!
//! A client connects to the simulator's Unix socket and first sends
//! [`Op::Hello`] with the domid it runs in (for the stand-ins: the
//! `XENSIM_DOMID` environment variable, default 0). Then every request is a
//! fixed 36-byte frame (`op: u32`, four `u64` arguments, native byte
//! order) and every reply a 32-byte frame (`status: i64`, three `u64`
//! values) followed by `text_len: u32` and that many bytes of text.
//! `status >= 0` is the call's value; `status < 0` is `-errno`.
//!
//! An event-channel handle opens a second connection and sends
//! [`Op::AttachEvents`] with the handle id [`Op::OpenEvtchn`] returned; the
//! simulator then writes a native `u32` port number on it each time a port
//! bound through that handle becomes pending, as reads of
//! `/dev/xen/evtchn` return. The port stays masked until unmasked.

use std::io::{self, Read, Write};

/// Environment variable naming the simulator's socket.
pub const ENV_SOCKET: &str = "XENSIM_SOCKET";
/// Environment variable naming the domain a client runs in.
pub const ENV_DOMID: &str = "XENSIM_DOMID";

/// The abstract socket name of the event connection of handle `handle`
/// of the simulator whose token is `token`: after `exec`, the inherited
/// descriptor names its handle through it (`getsockname`), as an open
/// `/dev/xen/evtchn` file is its own handle.
pub fn evtchn_name(token: u64, handle: u64) -> String {
    format!("xensim-evtchn-{token:016x}-{handle}")
}

/// The `(token, handle)` of an event connection's abstract name.
pub fn parse_evtchn_name(name: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(name).ok()?;
    let rest = s.strip_prefix("xensim-evtchn-")?;
    let (token, handle) = rest.split_once('-')?;
    Some((u64::from_str_radix(token, 16).ok()?, handle.parse().ok()?))
}

/// Request size.
pub const REQUEST_SIZE: usize = 36;

/// Operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Op {
    /// `[domid]`: the domain this connection acts for.
    Hello = 1,
    /// `[]` -> handle id, text: the abstract socket name the handle's
    /// event connection must be bound to ([`evtchn_name`]): this
    /// connection becomes an evtchn handle.
    OpenEvtchn = 2,
    /// `[handle]`: this connection receives the handle's pending ports.
    /// It is the handle's kernel object: the handle lives while this
    /// connection is open (in any process), as an open file of
    /// `/dev/xen/evtchn` does.
    AttachEvents = 3,
    /// `[token, handle]`: this connection acts for an existing handle
    /// whose event connection the caller holds (`xenevtchn_fdopen` after
    /// exec). `token` and `handle` come from the event connection's
    /// abstract socket name ([`evtchn_name`]).
    ReopenEvtchn = 4,
    /// `[remote_domid, remote_port]` -> local port.
    BindInterdomain = 10,
    /// `[virq]` -> local port.
    BindVirq = 11,
    /// `[port]`.
    Notify = 12,
    /// `[port]`.
    Unmask = 13,
    /// `[port]`.
    Unbind = 14,
    /// `[remote_domid]` -> a new unbound port of the caller's domain.
    AllocUnbound = 15,
    /// `[port]`: events of this existing port of the caller's domain go to
    /// this handle (a kernel taking over its xenstore port).
    Adopt = 16,
    /// `[domid, remote_domid]` -> a new unbound port of `domid` (the
    /// toolstack allocating a guest's xenstore port, as libxl does).
    AllocUnboundFor = 17,
    /// `[domid, gref]` -> text: path of the page file to map.
    GrantMap = 20,
    /// `[domid]`: a mapping was dropped.
    GrantUnmap = 21,
    /// `[domid]` -> values: state, caps, unique_id.
    DomainInfo = 30,
    /// `[]` -> status: domid; values: state, caps, unique_id.
    PollChangedDomain = 31,
    /// `[domid]` -> values: dying, shutdown, shutdown reason (the legacy
    /// per-domain query; simulator only).
    GetinfoSingle = 32,
    /// `[]` -> text: path of a 4 KiB file now holding the shutdown|dying
    /// bitmap (the proposed one-call design; counted; simulator only).
    DyingBitmap = 33,
    /// `[]` -> text: path of a 4 KiB file the simulator keeps up to date
    /// with the bitmap from now on (the mapped-page design; no call per
    /// event; simulator only).
    MapDyingBitmap = 34,
    /// `[domid]` -> a port of the caller's handle that fires when `domid`
    /// shuts down, dies or goes (the per-domain death channel design).
    BindDeathChannel = 35,
    /// `[]` -> status: `XENVER_version` (`major << 16 | minor`).
    XenVersion = 36,
    /// `[interface_version, first_domain, max_domains]` -> status: number
    /// of records; text: path of a file holding them
    /// (`XEN_SYSCTL_getdomaininfolist`, one counted call).
    DomainList = 37,
    /// `[want_domid or u64::MAX, caps]` -> domid (also makes its page).
    CreateDomain = 40,
    /// `[domid, reason]`.
    Shutdown = 41,
    /// `[domid]`.
    Destroy = 42,
    /// `[domid]`.
    Resume = 43,
    /// `[domid]` -> text: path of the domain's own ring page.
    OwnRing = 44,
    /// `[]` -> values: calls to get_domain_info, poll, evtchn.
    Calls = 50,
    /// `[]` -> text: one line per domain, `domid state caps unique_id refs`
    /// (not counted as a hypervisor call).
    List = 51,
}

impl Op {
    /// Decodes an op number.
    pub fn from_u32(v: u32) -> Option<Op> {
        use Op::*;
        Some(match v {
            1 => Hello,
            2 => OpenEvtchn,
            3 => AttachEvents,
            4 => ReopenEvtchn,
            10 => BindInterdomain,
            11 => BindVirq,
            12 => Notify,
            13 => Unmask,
            14 => Unbind,
            15 => AllocUnbound,
            16 => Adopt,
            17 => AllocUnboundFor,
            20 => GrantMap,
            21 => GrantUnmap,
            30 => DomainInfo,
            31 => PollChangedDomain,
            32 => GetinfoSingle,
            33 => DyingBitmap,
            34 => MapDyingBitmap,
            35 => BindDeathChannel,
            36 => XenVersion,
            37 => DomainList,
            40 => CreateDomain,
            41 => Shutdown,
            42 => Destroy,
            43 => Resume,
            44 => OwnRing,
            50 => Calls,
            51 => List,
            _ => return None,
        })
    }
}

/// A request frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Raw op number.
    pub op: u32,
    /// Arguments.
    pub args: [u64; 4],
}

impl Request {
    /// A request.
    pub fn new(op: Op, args: &[u64]) -> Request {
        let mut a = [0u64; 4];
        for (d, s) in a.iter_mut().zip(args) {
            *d = *s;
        }
        Request {
            op: op as u32,
            args: a,
        }
    }

    /// Encodes the frame.
    pub fn encode(&self) -> [u8; REQUEST_SIZE] {
        let mut b = [0u8; REQUEST_SIZE];
        b[..4].copy_from_slice(&self.op.to_ne_bytes());
        for (i, a) in self.args.iter().enumerate() {
            b[4 + 8 * i..12 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        b
    }

    /// Decodes a frame.
    pub fn decode(b: &[u8; REQUEST_SIZE]) -> Request {
        let mut op = [0u8; 4];
        op.copy_from_slice(&b[..4]);
        let mut args = [0u64; 4];
        for (i, a) in args.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[4 + 8 * i..12 + 8 * i]);
            *a = u64::from_ne_bytes(w);
        }
        Request {
            op: u32::from_ne_bytes(op),
            args,
        }
    }

    /// Reads one frame.
    pub fn read_from(r: &mut impl Read) -> io::Result<Request> {
        let mut b = [0u8; REQUEST_SIZE];
        r.read_exact(&mut b)?;
        Ok(Request::decode(&b))
    }
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    /// The value (>= 0) or `-errno`.
    pub status: i64,
    /// Extra values.
    pub vals: [u64; 3],
    /// Extra text (a path).
    pub text: String,
}

/// Longest text a reply may carry.
pub const MAX_TEXT: usize = 4096;

impl Reply {
    /// A success with a value.
    pub fn ok(v: i64) -> Reply {
        Reply {
            status: v,
            ..Reply::default()
        }
    }

    /// A failure.
    pub fn err(errno: i32) -> Reply {
        Reply {
            status: -i64::from(errno),
            ..Reply::default()
        }
    }

    /// Writes the reply.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut b = Vec::with_capacity(36 + self.text.len());
        b.extend_from_slice(&self.status.to_ne_bytes());
        for v in &self.vals {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        let text = &self.text.as_bytes()[..self.text.len().min(MAX_TEXT)];
        b.extend_from_slice(&(text.len() as u32).to_ne_bytes());
        b.extend_from_slice(text);
        w.write_all(&b)
    }

    /// Reads a reply.
    pub fn read_from(r: &mut impl Read) -> io::Result<Reply> {
        let mut b = [0u8; 36];
        r.read_exact(&mut b)?;
        let w = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            x
        };
        let status = i64::from_ne_bytes(w(0));
        let vals = [
            u64::from_ne_bytes(w(8)),
            u64::from_ne_bytes(w(16)),
            u64::from_ne_bytes(w(24)),
        ];
        let mut l = [0u8; 4];
        l.copy_from_slice(&b[32..36]);
        let len = (u32::from_ne_bytes(l) as usize).min(MAX_TEXT);
        let mut t = vec![0u8; len];
        r.read_exact(&mut t)?;
        Ok(Reply {
            status,
            vals,
            text: String::from_utf8_lossy(&t).into_owned(),
        })
    }

    /// `Ok(status)` or the errno as an `io::Error`.
    pub fn result(&self) -> io::Result<i64> {
        if self.status < 0 {
            Err(io::Error::from_raw_os_error(
                i32::try_from(-self.status).unwrap_or(libc_einval()),
            ))
        } else {
            Ok(self.status)
        }
    }
}

const fn libc_einval() -> i32 {
    22
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let r = Request::new(Op::BindInterdomain, &[5, 7]);
        assert_eq!(Request::decode(&r.encode()), r);
        let rep = Reply {
            status: -2,
            vals: [1, 2, 3],
            text: "/tmp/x".into(),
        };
        let mut b = Vec::new();
        rep.write_to(&mut b).unwrap();
        assert_eq!(Reply::read_from(&mut &b[..]).unwrap(), rep);
        assert_eq!(rep.result().unwrap_err().raw_os_error(), Some(2));
        assert_eq!(Op::from_u32(31), Some(Op::PollChangedDomain));
        assert_eq!(Op::from_u32(99), None);
        assert_eq!(Op::from_u32(4), Some(Op::ReopenEvtchn));
        let n = evtchn_name(0xabc, 17);
        assert_eq!(parse_evtchn_name(n.as_bytes()), Some((0xabc, 17)));
        assert_eq!(parse_evtchn_name(b"xensim-evtchn-zz-1"), None);
        assert_eq!(parse_evtchn_name(b"other"), None);
    }
}
