//! A Xenstore client in pure Rust.
//!
//! [`Client`] speaks the Xenstore wire protocol (`xenstore-proto`) over any
//! blocking byte stream: the daemon's Unix socket or the kernel's
//! `/dev/xen/xenbus` ([`Client::open`] picks the one libxenstore would).
//!
//! * Every request gets its own request id. Replies are matched by id, so
//!   many requests may be in flight ([`Client::send`], then
//!   [`Client::wait`] in any order). On `/dev/xen/xenbus` a request is
//!   written once the previous one is answered (see [`Client::send`]).
//! * Watch events that arrive while a reply is awaited are kept, in
//!   arrival order, until [`Client::next_event`] asks for them: none is
//!   dropped.
//! * Errors are [`Error::Xenstore`] with the protocol's errno, or I/O and
//!   protocol failures.
//! * Below the typed operations, [`Client::send_message`],
//!   [`Client::wait_message`], [`Client::next_reply`] and
//!   [`Client::next_message`] give the messages themselves, for tools and
//!   tests that speak the protocol raw (any type number, error replies as
//!   they came, arrival order).
//! * With the feature `ring`, [`ring::RingStream`] is the guest's side of
//!   a raw ring page and event channel, as a stream this client runs over.

//!
//! # The crate's README
#![doc = include_str!("../README.md")]

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use xenstore_proto::{Decoder, Message, MsgType, PermList, XsError};

#[cfg(feature = "ring")]
pub mod ring;

/// Where libxenstore looks for the daemon's socket when nothing says
/// otherwise.
pub const DEFAULT_RUNDIR: &str = "/var/run/xenstored";
/// The kernel's Xenstore device (dom0 and guests).
pub const XENBUS_DEVICE: &str = "/dev/xen/xenbus";

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon answered with an error.
    #[error("xenstore: {0}")]
    Xenstore(XsError),
    /// The stream failed.
    #[error("xenstore connection: {0}")]
    Io(#[from] io::Error),
    /// The daemon closed the connection.
    #[error("xenstore connection closed")]
    Closed,
    /// The daemon sent something this client cannot read.
    #[error("xenstore protocol: {0}")]
    Protocol(String),
}

impl Error {
    /// The protocol error, if the daemon answered with one.
    pub fn xs(&self) -> Option<XsError> {
        match self {
            Error::Xenstore(e) => Some(*e),
            _ => None,
        }
    }

    /// Whether this is the stream's timeout (a socket's read timeout, a
    /// ring's [`ring::RingStream::set_timeout`]): nothing was lost, the
    /// call may be made again.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

/// A result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A transaction, or none ([`Tx::NONE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tx(pub u32);

impl Tx {
    /// Outside any transaction.
    pub const NONE: Tx = Tx(0);
}

/// A request in flight (see [`Client::send`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReqId(pub u32);

/// A watch event: the path that changed and the watch's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The path (relative to the domain's home if the watch was).
    pub path: String,
    /// The token given to [`Client::watch`].
    pub token: String,
}

/// A connection to Xenstore over a blocking byte stream.
///
/// Messages read ahead of need are kept with their arrival number:
/// replies by request id, watch events in a queue.
pub struct Client<S> {
    stream: S,
    decoder: Decoder,
    next_id: u32,
    arrivals: u64,
    replies: HashMap<u32, (u64, Message)>,
    events: VecDeque<(u64, Message)>,
    /// One request unanswered at a time (the kernel's device).
    one_at_a_time: bool,
    /// Requests written whose replies have not been read yet.
    unanswered: usize,
}

/// The daemon's socket or the kernel's device.
pub enum Conn {
    /// `xenstored`'s Unix socket.
    Socket(std::os::unix::net::UnixStream),
    /// `/dev/xen/xenbus`.
    Xenbus(std::fs::File),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Socket(s) => s.read(buf),
            Conn::Xenbus(f) => f.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Socket(s) => s.write(buf),
            Conn::Xenbus(f) => f.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The socket libxenstore would use: `XENSTORED_PATH`, else
/// `$XENSTORED_RUNDIR/socket`, else `/var/run/xenstored/socket`.
pub fn socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os("XENSTORED_PATH") {
        return PathBuf::from(p);
    }
    let dir = std::env::var_os("XENSTORED_RUNDIR")
        .map_or_else(|| PathBuf::from(DEFAULT_RUNDIR), PathBuf::from);
    dir.join("socket")
}

impl Client<Conn> {
    /// Connects as libxenstore does: the daemon's socket
    /// ([`socket_path`]); if that cannot be reached, the kernel's device.
    /// A `XENSTORED_PATH` naming the device opens the device.
    pub fn open() -> Result<Client<Conn>> {
        let path = socket_path();
        if path.as_os_str() == XENBUS_DEVICE {
            return Client::xenbus(&path);
        }
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(s) => Ok(Client::new(Conn::Socket(s))),
            Err(e) => Client::xenbus(Path::new(XENBUS_DEVICE)).map_err(|_| Error::Io(e)),
        }
    }

    /// Connects to the daemon's socket at `path`.
    pub fn connect(path: &Path) -> Result<Client<Conn>> {
        Ok(Client::new(Conn::Socket(
            std::os::unix::net::UnixStream::connect(path)?,
        )))
    }

    /// Opens the kernel's Xenstore device at `path`.
    pub fn xenbus(path: &Path) -> Result<Client<Conn>> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let mut c = Client::new(Conn::Xenbus(f));
        c.one_at_a_time = true;
        Ok(c)
    }
}

fn nul_terminated(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p);
        v.push(0);
    }
    v
}

/// A reply that is one decimal number.
fn number<T: std::str::FromStr>(payload: &[u8], what: &str) -> Result<T> {
    strings(payload)
        .first()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Error::Protocol(format!("{what} answered something that is not a number")))
}

/// The strings of a reply (NUL-separated, the last one possibly without
/// its NUL).
fn strings(payload: &[u8]) -> Vec<String> {
    let body = payload.strip_suffix(&[0]).unwrap_or(payload);
    if body.is_empty() {
        return Vec::new();
    }
    body.split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

impl<S: Read + Write> Client<S> {
    /// A client over `stream` (blocking).
    pub fn new(stream: S) -> Client<S> {
        Client {
            stream,
            decoder: Decoder::new(),
            next_id: 1,
            arrivals: 0,
            replies: HashMap::new(),
            events: VecDeque::new(),
            one_at_a_time: false,
            unanswered: 0,
        }
    }

    /// The stream (to set a socket's timeouts, say).
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, giving up the client (and whatever it kept).
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// The stream, mutably. Bytes written straight to it bypass the
    /// client's request ids; meant for tests of malformed input.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Sends a request without waiting for its reply.
    pub fn send(&mut self, t: MsgType, tx: Tx, payload: &[u8]) -> Result<ReqId> {
        self.send_message(t as u32, tx, payload)
    }

    /// Sends a message of any type number (unknown ones included) without
    /// waiting for its reply.
    ///
    /// On `/dev/xen/xenbus` ([`Client::xenbus`]) it first reads until the
    /// previous request is answered (keeping what it reads): Linux queues a
    /// written request with its payload left in the open file's one message
    /// buffer, which the next write overwrites before the kernel has copied
    /// it to the ring.
    pub fn send_message(&mut self, msg_type: u32, tx: Tx, payload: &[u8]) -> Result<ReqId> {
        while self.one_at_a_time && self.unanswered > 0 {
            self.receive()?;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let m = Message::new(msg_type, id, tx.0, payload.to_vec());
        // One write per message: the kernel's device takes whole messages.
        self.stream.write_all(&m.encode())?;
        self.unanswered += 1;
        Ok(ReqId(id))
    }

    /// Sends several requests in one write, without waiting for their
    /// replies. For the daemon's socket only: the kernel's device takes one
    /// message per write (use [`Client::send`] there; on a client from
    /// [`Client::xenbus`] this sends them one by one as it does).
    pub fn send_batch<'a>(
        &mut self,
        requests: impl IntoIterator<Item = (MsgType, Tx, &'a [u8])>,
    ) -> Result<Vec<ReqId>> {
        if self.one_at_a_time {
            return requests
                .into_iter()
                .map(|(t, tx, payload)| self.send(t, tx, payload))
                .collect();
        }
        let mut bytes = Vec::new();
        let mut ids = Vec::new();
        for (t, tx, payload) in requests {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            Message::new(t as u32, id, tx.0, payload.to_vec()).encode_into(&mut bytes);
            ids.push(ReqId(id));
        }
        self.stream.write_all(&bytes)?;
        self.unanswered += ids.len();
        Ok(ids)
    }

    /// Reads one message from the stream and keeps it: a watch event in
    /// the event queue, a reply under its request id.
    fn receive(&mut self) -> Result<()> {
        loop {
            match self.decoder.next_message() {
                Ok(Some(m)) => {
                    self.arrivals += 1;
                    if m.kind() == Some(MsgType::WatchEvent) {
                        self.events.push_back((self.arrivals, m));
                    } else {
                        self.unanswered = self.unanswered.saturating_sub(1);
                        self.replies.insert(m.header.req_id, (self.arrivals, m));
                    }
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => return Err(Error::Protocol(e.to_string())),
            }
            let mut buf = [0u8; 4096];
            let n = loop {
                match self.stream.read(&mut buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            };
            if n == 0 {
                return Err(Error::Closed);
            }
            self.decoder.feed(buf.get(..n).unwrap_or_default());
        }
    }

    /// Waits for the reply to `id`, as the daemon sent it (an ERROR reply
    /// included). Replies to other requests and watch events read
    /// meanwhile are kept.
    pub fn wait_message(&mut self, id: ReqId) -> Result<Message> {
        loop {
            if let Some((_, m)) = self.replies.remove(&id.0) {
                return Ok(m);
            }
            self.receive()?;
        }
    }

    /// Waits for the reply to `id`: its payload, or the daemon's error.
    /// Replies to other requests and watch events read meanwhile are kept.
    pub fn wait(&mut self, id: ReqId) -> Result<Vec<u8>> {
        let m = self.wait_message(id)?;
        if m.kind() == Some(MsgType::Error) {
            let name = m.payload.strip_suffix(&[0]).unwrap_or(&m.payload);
            return Err(Error::Xenstore(
                XsError::from_name(name).unwrap_or(XsError::Einval),
            ));
        }
        Ok(m.payload)
    }

    /// The oldest reply not yet taken (whatever its request id), waiting
    /// for one if none is kept. Watch events read meanwhile are kept.
    pub fn next_reply(&mut self) -> Result<Message> {
        loop {
            let oldest = self
                .replies
                .iter()
                .min_by_key(|(_, (n, _))| *n)
                .map(|(id, _)| *id);
            if let Some((_, m)) = oldest.and_then(|id| self.replies.remove(&id)) {
                return Ok(m);
            }
            self.receive()?;
        }
    }

    /// The oldest message not yet taken, reply or watch event, in the order
    /// the daemon sent them; waits for one if none is kept.
    pub fn next_message(&mut self) -> Result<Message> {
        loop {
            let reply = self
                .replies
                .iter()
                .min_by_key(|(_, (n, _))| *n)
                .map(|(id, (n, _))| (*id, *n));
            let event = self.events.front().map(|(n, _)| *n);
            let take_reply = match (reply, event) {
                (None, None) => {
                    self.receive()?;
                    continue;
                }
                (Some((_, r)), Some(e)) => r < e,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            if take_reply {
                if let Some((_, m)) = reply.and_then(|(id, _)| self.replies.remove(&id)) {
                    return Ok(m);
                }
            } else if let Some((_, m)) = self.events.pop_front() {
                return Ok(m);
            }
        }
    }

    /// Watch events read and kept, not yet taken.
    pub fn kept_events(&self) -> usize {
        self.events.len()
    }

    /// One request and its reply.
    pub fn call(&mut self, t: MsgType, tx: Tx, payload: &[u8]) -> Result<Vec<u8>> {
        let id = self.send(t, tx, payload)?;
        self.wait(id)
    }

    /// The value of `path`.
    pub fn read(&mut self, tx: Tx, path: &str) -> Result<Vec<u8>> {
        self.call(MsgType::Read, tx, &nul_terminated(&[path.as_bytes()]))
    }

    /// Writes `value` at `path` (creating missing parents).
    pub fn write(&mut self, tx: Tx, path: &str, value: &[u8]) -> Result<()> {
        let mut p = nul_terminated(&[path.as_bytes()]);
        p.extend_from_slice(value);
        self.call(MsgType::Write, tx, &p).map(drop)
    }

    /// Creates `path` (empty) if missing.
    pub fn mkdir(&mut self, tx: Tx, path: &str) -> Result<()> {
        self.call(MsgType::Mkdir, tx, &nul_terminated(&[path.as_bytes()]))
            .map(drop)
    }

    /// Removes `path` and everything below it.
    pub fn rm(&mut self, tx: Tx, path: &str) -> Result<()> {
        self.call(MsgType::Rm, tx, &nul_terminated(&[path.as_bytes()]))
            .map(drop)
    }

    /// The children of `path`, in creation order. A list too long for one
    /// reply (`E2BIG`, about 1000 domains under `/local/domain`) is read in
    /// parts with DIRECTORY_PART, as libxenstore does.
    pub fn directory(&mut self, tx: Tx, path: &str) -> Result<Vec<String>> {
        match self.call(MsgType::Directory, tx, &nul_terminated(&[path.as_bytes()])) {
            Ok(p) => Ok(strings(&p)),
            Err(Error::Xenstore(XsError::E2big)) => self.directory_parts(tx, path),
            Err(e) => Err(e),
        }
    }

    /// The children of `path` read with DIRECTORY_PART: chunks from byte
    /// offset 0 on, started again whenever the node's generation changes
    /// between chunks, so the list is one state of the node.
    pub fn directory_parts(&mut self, tx: Tx, path: &str) -> Result<Vec<String>> {
        /// Restarts allowed while the node keeps changing.
        const RESTARTS: usize = 100;
        for _ in 0..RESTARTS {
            let mut generation: Option<Vec<u8>> = None;
            let mut list = Vec::new();
            let complete = loop {
                let offset = list.len().to_string();
                let p = self.call(
                    MsgType::DirectoryPart,
                    tx,
                    &nul_terminated(&[path.as_bytes(), offset.as_bytes()]),
                )?;
                let Some(nul) = p.iter().position(|&b| b == 0) else {
                    return Err(Error::Protocol(
                        "DIRECTORY_PART without a generation".into(),
                    ));
                };
                let (g, chunk) = (&p[..nul], &p[nul + 1..]);
                match &generation {
                    Some(seen) if seen.as_slice() != g => break false,
                    Some(_) => {}
                    None => generation = Some(g.to_vec()),
                }
                // The last chunk ends with an extra NUL; past the end of
                // the list the chunk is that NUL alone.
                if chunk == [0] || chunk.ends_with(&[0, 0]) {
                    list.extend_from_slice(chunk.strip_suffix(&[0]).unwrap_or(chunk));
                    break true;
                }
                if chunk.is_empty() {
                    return Err(Error::Protocol("an empty DIRECTORY_PART chunk".into()));
                }
                list.extend_from_slice(chunk);
            };
            if complete {
                return Ok(strings(&list));
            }
        }
        Err(Error::Xenstore(XsError::Eagain))
    }

    /// The permissions of `path`.
    pub fn get_perms(&mut self, tx: Tx, path: &str) -> Result<PermList> {
        let p = self.call(MsgType::GetPerms, tx, &nul_terminated(&[path.as_bytes()]))?;
        let body = p.strip_suffix(&[0]).unwrap_or(&p);
        PermList::parse(body.split(|&b| b == 0)).map_err(Error::Xenstore)
    }

    /// Sets the permissions of `path`.
    pub fn set_perms(&mut self, tx: Tx, path: &str, perms: &PermList) -> Result<()> {
        let mut p = nul_terminated(&[path.as_bytes()]);
        p.extend_from_slice(&perms.to_wire());
        self.call(MsgType::SetPerms, tx, &p).map(drop)
    }

    /// The home path of domain `domid`.
    pub fn get_domain_path(&mut self, domid: u32) -> Result<String> {
        let p = self.call(
            MsgType::GetDomainPath,
            Tx::NONE,
            &nul_terminated(&[domid.to_string().as_bytes()]),
        )?;
        Ok(strings(&p).into_iter().next().unwrap_or_default())
    }

    /// Watches `path` (and everything below it) with `token`. Every new
    /// watch fires once at once.
    pub fn watch(&mut self, path: &str, token: &str) -> Result<()> {
        self.call(
            MsgType::Watch,
            Tx::NONE,
            &nul_terminated(&[path.as_bytes(), token.as_bytes()]),
        )
        .map(drop)
    }

    /// Removes the watch on `path` with `token`. Events already sent may
    /// still arrive.
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<()> {
        self.call(
            MsgType::Unwatch,
            Tx::NONE,
            &nul_terminated(&[path.as_bytes(), token.as_bytes()]),
        )
        .map(drop)
    }

    /// The next watch event, waiting for one if none is kept.
    pub fn next_event(&mut self) -> Result<WatchEvent> {
        loop {
            if let Some((_, m)) = self.events.pop_front() {
                let s = strings(&m.payload);
                let (Some(path), Some(token)) = (s.first(), s.get(1)) else {
                    return Err(Error::Protocol("a watch event without a token".into()));
                };
                return Ok(WatchEvent {
                    path: path.clone(),
                    token: token.clone(),
                });
            }
            self.receive()?;
        }
    }

    /// Watch events as a blocking iterator (ends at the first error).
    pub fn events(&mut self) -> impl Iterator<Item = Result<WatchEvent>> + '_ {
        std::iter::from_fn(move || Some(self.next_event()))
    }

    /// Drops every watch and transaction of this connection
    /// (RESET_WATCHES).
    pub fn reset_watches(&mut self) -> Result<()> {
        self.call(MsgType::ResetWatches, Tx::NONE, b"").map(drop)
    }

    /// Tells the daemon about domain `domid`, whose ring is in guest frame
    /// `gfn` and whose xenstore event channel is `port` in that domain
    /// (INTRODUCE; the toolstack does this).
    pub fn introduce(&mut self, domid: u32, gfn: u64, port: u32) -> Result<()> {
        let (d, g, p) = (domid.to_string(), gfn.to_string(), port.to_string());
        self.call(
            MsgType::Introduce,
            Tx::NONE,
            &nul_terminated(&[d.as_bytes(), g.as_bytes(), p.as_bytes()]),
        )
        .map(drop)
    }

    /// Forgets domain `domid` (RELEASE): its watches and connection go,
    /// `@releaseDomain` fires.
    pub fn release(&mut self, domid: u32) -> Result<()> {
        self.domid_call(MsgType::Release, domid).map(drop)
    }

    /// Whether domain `domid` has been introduced and not released.
    pub fn is_domain_introduced(&mut self, domid: u32) -> Result<bool> {
        let p = self.domid_call(MsgType::IsDomainIntroduced, domid)?;
        match strings(&p).first().map(String::as_str) {
            Some("T") => Ok(true),
            Some("F") => Ok(false),
            _ => Err(Error::Protocol(
                "IS_DOMAIN_INTRODUCED answered neither T nor F".into(),
            )),
        }
    }

    /// Re-arms domain `domid`'s shutdown notification after it resumed
    /// (RESUME).
    pub fn resume(&mut self, domid: u32) -> Result<()> {
        self.domid_call(MsgType::Resume, domid).map(drop)
    }

    /// Lets domain `domid` act for domain `target` (SET_TARGET: a device
    /// model stub domain and its guest).
    pub fn set_target(&mut self, domid: u32, target: u32) -> Result<()> {
        let (d, t) = (domid.to_string(), target.to_string());
        self.call(
            MsgType::SetTarget,
            Tx::NONE,
            &nul_terminated(&[d.as_bytes(), t.as_bytes()]),
        )
        .map(drop)
    }

    /// The feature mask of this connection's domain (`None`) or of
    /// `domid` (GET_FEATURE).
    pub fn get_feature(&mut self, domid: Option<u32>) -> Result<u32> {
        let arg = domid.map(|d| nul_terminated(&[d.to_string().as_bytes()]));
        let p = self.call(MsgType::GetFeature, Tx::NONE, arg.as_deref().unwrap_or(b""))?;
        number(&p, "GET_FEATURE")
    }

    /// Sets domain `domid`'s feature mask before it is introduced
    /// (SET_FEATURE).
    pub fn set_feature(&mut self, domid: u32, features: u32) -> Result<()> {
        let (d, f) = (domid.to_string(), features.to_string());
        self.call(
            MsgType::SetFeature,
            Tx::NONE,
            &nul_terminated(&[d.as_bytes(), f.as_bytes()]),
        )
        .map(drop)
    }

    /// The names of the quotas the daemon keeps (GET_QUOTA without
    /// arguments).
    pub fn quota_names(&mut self) -> Result<Vec<String>> {
        let p = self.call(MsgType::GetQuota, Tx::NONE, b"")?;
        Ok(strings(&p)
            .into_iter()
            .flat_map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect())
    }

    /// Quota `name`, global (`domid` `None`) or of one domain
    /// (GET_QUOTA).
    pub fn get_quota(&mut self, domid: Option<u32>, name: &str) -> Result<u64> {
        let d = domid.map(|d| d.to_string());
        let mut args: Vec<&[u8]> = Vec::new();
        if let Some(d) = &d {
            args.push(d.as_bytes());
        }
        args.push(name.as_bytes());
        let p = self.call(MsgType::GetQuota, Tx::NONE, &nul_terminated(&args))?;
        number(&p, "GET_QUOTA")
    }

    /// Sets quota `name`, global (`domid` `None`) or of one domain
    /// (SET_QUOTA).
    pub fn set_quota(&mut self, domid: Option<u32>, name: &str, value: u64) -> Result<()> {
        let (d, v) = (domid.map(|d| d.to_string()), value.to_string());
        let mut args: Vec<&[u8]> = Vec::new();
        if let Some(d) = &d {
            args.push(d.as_bytes());
        }
        args.push(name.as_bytes());
        args.push(v.as_bytes());
        self.call(MsgType::SetQuota, Tx::NONE, &nul_terminated(&args))
            .map(drop)
    }

    /// A CONTROL command (`xenstore-control`'s): its words, and the
    /// daemon's answer as text.
    pub fn control(&mut self, words: &[&str]) -> Result<String> {
        let args: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        let p = self.call(MsgType::Control, Tx::NONE, &nul_terminated(&args))?;
        let body = p.strip_suffix(&[0]).unwrap_or(&p);
        Ok(String::from_utf8_lossy(body).into_owned())
    }

    fn domid_call(&mut self, t: MsgType, domid: u32) -> Result<Vec<u8>> {
        self.call(
            t,
            Tx::NONE,
            &nul_terminated(&[domid.to_string().as_bytes()]),
        )
    }

    /// Starts a transaction.
    pub fn transaction_start(&mut self) -> Result<Tx> {
        let p = self.call(MsgType::TransactionStart, Tx::NONE, b"\0")?;
        strings(&p)
            .first()
            .and_then(|s| s.parse().ok())
            .map(Tx)
            .ok_or_else(|| Error::Protocol("a transaction id that is not a number".into()))
    }

    /// Ends a transaction: commits it (`EAGAIN` if something it read
    /// changed meanwhile) or aborts it.
    pub fn transaction_end(&mut self, tx: Tx, commit: bool) -> Result<()> {
        let arg: &[u8] = if commit { b"T\0" } else { b"F\0" };
        self.call(MsgType::TransactionEnd, tx, arg).map(drop)
    }

    /// Runs `f` in a transaction and commits it, running it again in a new
    /// transaction while the commit answers `EAGAIN`. An error from `f`
    /// aborts the transaction and is returned.
    pub fn transaction<R>(&mut self, mut f: impl FnMut(&mut Self, Tx) -> Result<R>) -> Result<R> {
        loop {
            let tx = self.transaction_start()?;
            let r = match f(self, tx) {
                Ok(r) => r,
                Err(e) => {
                    // The transaction may be gone already; the first
                    // error is what counts.
                    let _ = self.transaction_end(tx, false);
                    return Err(e);
                }
            };
            match self.transaction_end(tx, true) {
                Ok(()) => return Ok(r),
                Err(Error::Xenstore(XsError::Eagain)) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's `/dev/xen/xenbus` as it takes a written request: the header
    /// is copied into the queued request, the payload stays in the file's
    /// one message buffer (overwritten by the next write) until the kernel
    /// copies it to the ring, here at the client's next read. Bytes after
    /// the first message of a write are dropped. The daemon behind it
    /// answers each request with the payload it got.
    #[derive(Default)]
    struct LinuxXenbus {
        buffer: Vec<u8>,
        queued: VecDeque<xenstore_proto::Header>,
        out: VecDeque<u8>,
    }

    impl Write for LinuxXenbus {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let head: [u8; 16] = buf
                .get(..16)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| io::Error::other("half a header"))?;
            let h = xenstore_proto::Header::from_bytes(&head);
            let body = buf.get(16..).unwrap_or_default();
            self.buffer = body.get(..h.len as usize).unwrap_or(body).to_vec();
            self.queued.push_back(h);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Read for LinuxXenbus {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            while let Some(h) = self.queued.pop_front() {
                let payload = self.buffer.get(..h.len as usize).unwrap_or(&self.buffer);
                let reply = Message::new(h.msg_type, h.req_id, 0, payload.to_vec());
                self.out.extend(reply.encode());
            }
            let n = buf.len().min(self.out.len());
            for (d, s) in buf.iter_mut().zip(self.out.drain(..n)) {
                *d = s;
            }
            Ok(n)
        }
    }

    #[test]
    fn on_the_kernel_device_a_request_waits_for_the_previous_reply() {
        let paths: Vec<String> = (0..8).map(|i| format!("/p/{i}\0")).collect();
        // What the device does to requests written back to back: the
        // first one goes out with the second one's payload.
        let mut raw = Client::new(LinuxXenbus::default());
        let a = raw.send(MsgType::Read, Tx::NONE, b"/p/a\0").expect("send");
        let b = raw.send(MsgType::Read, Tx::NONE, b"/p/b\0").expect("send");
        assert_eq!(raw.wait(b).expect("reply"), b"/p/b\0");
        assert_eq!(raw.wait(a).expect("reply"), b"/p/b\0", "the model");

        let mut xs = Client::new(LinuxXenbus::default());
        xs.one_at_a_time = true;
        let ids: Vec<_> = paths
            .iter()
            .map(|p| {
                xs.send(MsgType::Read, Tx::NONE, p.as_bytes())
                    .expect("send")
            })
            .collect();
        for (id, p) in ids.into_iter().zip(&paths).rev() {
            assert_eq!(xs.wait(id).expect("reply"), p.as_bytes());
        }
        let ids = xs
            .send_batch(
                paths
                    .iter()
                    .map(|p| (MsgType::Read, Tx::NONE, p.as_bytes())),
            )
            .expect("batch");
        for (id, p) in ids.into_iter().zip(&paths) {
            assert_eq!(xs.wait(id).expect("reply"), p.as_bytes());
        }
    }

    #[test]
    fn reply_strings() {
        assert_eq!(strings(b"a\0b\0"), ["a", "b"]);
        assert_eq!(strings(b"a\0b"), ["a", "b"]);
        assert!(strings(b"").is_empty());
        assert!(strings(b"\0").is_empty());
    }

    #[test]
    fn socket_path_follows_the_environment_names() {
        // Only the default is checked here: the environment is shared by
        // the tests of this process.
        if std::env::var_os("XENSTORED_PATH").is_none()
            && std::env::var_os("XENSTORED_RUNDIR").is_none()
        {
            assert_eq!(socket_path(), Path::new("/var/run/xenstored/socket"));
        }
    }
}
