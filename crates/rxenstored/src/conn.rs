//! One connection, whatever carries it: a Unix socket (dom0's tools) or a
//! guest's ring page with its event channel.
//!
//! * [`Connection`] holds what every connection has: the request decoder,
//!   one output queue of whole messages ([`Output`]: when each was queued,
//!   whether it is a watch event, what it is charged to), and whether it is
//!   waiting to be served. Only its [`Transport`] differs.
//! * The output queue is written from its front, possibly in pieces; an
//!   item leaves the queue only when its last byte is out (or it is
//!   dropped), and every item that leaves is handed back to the caller,
//!   which releases what was charged for it (the receiving domain's memory,
//!   the outstanding request of the domain that caused it).
//! * Watch events that waited longer than the receiver may make them wait
//!   (C's `-w watch-event`, unprivileged receivers only) are dropped unless
//!   already started on the wire.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::{Duration, Instant};
use xen_stable::MappedPage;
use xenstore_proto::ring::{self, RingError, RingPage};
use xenstore_proto::{feature, Decoder};
use xenstore_store::ConnId;

/// Most buffers handed to one vectored write.
pub const IOV_MAX: usize = 64;

/// A request of an accounted domain that is still outstanding (its reply
/// or the watch events it caused are not all delivered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(pub u64);

/// One message waiting to go out.
#[derive(Debug)]
pub struct Queued {
    /// The encoded message.
    pub bytes: Vec<u8>,
    /// When it was queued.
    pub at: Instant,
    /// A watch event (as opposed to a reply).
    pub event: bool,
    /// Bytes charged to the receiving domain's memory (0: none).
    pub charged: usize,
    /// The outstanding request this answers or was caused by.
    pub ticket: Option<Ticket>,
}

/// A connection's output: whole messages in order.
#[derive(Debug, Default)]
pub struct Output {
    items: VecDeque<Queued>,
    /// Bytes of the front item already written.
    front_pos: usize,
    /// Bytes queued and not yet written.
    bytes: usize,
    /// When stale events were last looked for.
    last_expiry: Option<Instant>,
}

impl Output {
    /// Bytes still to write.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Messages queued.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// What is still to write: the unwritten tail of the front message
    /// (empty if it has not started going out), then the whole messages
    /// after it (a live update hands these over).
    pub fn pending(&self) -> (&[u8], impl Iterator<Item = &Queued>) {
        let partial = match self.items.front() {
            Some(q) if self.front_pos > 0 => q.bytes.get(self.front_pos..).unwrap_or_default(),
            _ => &[],
        };
        let skip = usize::from(self.front_pos > 0);
        (partial, self.items.iter().skip(skip))
    }

    /// Queues a message.
    pub fn push(&mut self, q: Queued) {
        self.bytes += q.bytes.len();
        self.items.push_back(q);
    }

    /// Writes through `sink` (which takes slices and answers how many bytes
    /// it took; 0 when there is no room) until it takes no more. Every
    /// message completely written is handed to `done`. Returns bytes
    /// written.
    pub fn write<E>(
        &mut self,
        mut sink: impl FnMut(&[IoSlice<'_>]) -> Result<usize, E>,
        mut done: impl FnMut(Queued),
    ) -> Result<usize, E> {
        let mut total = 0;
        while !self.items.is_empty() {
            let mut n = {
                let mut iov = Vec::with_capacity(IOV_MAX.min(self.items.len()));
                for (i, q) in self.items.iter().take(IOV_MAX).enumerate() {
                    let start = if i == 0 { self.front_pos } else { 0 };
                    iov.push(IoSlice::new(q.bytes.get(start..).unwrap_or_default()));
                }
                sink(&iov)?
            };
            if n == 0 {
                break;
            }
            n = n.min(self.bytes);
            total += n;
            self.bytes -= n;
            while n > 0 {
                let Some(front) = self.items.front() else {
                    break;
                };
                let left = front.bytes.len() - self.front_pos;
                if n >= left {
                    n -= left;
                    self.front_pos = 0;
                    if let Some(q) = self.items.pop_front() {
                        done(q);
                    }
                } else {
                    self.front_pos += n;
                    n = 0;
                }
            }
        }
        if self.items.is_empty() && self.items.capacity() > 0 {
            // An idle connection keeps no queue (a few hundred bytes each,
            // times every idle connection).
            self.items = VecDeque::new();
        }
        Ok(total)
    }

    /// Drops watch events queued more than `timeout` ago that have not
    /// started going out, handing each to `done`; looks at most once per
    /// `timeout / 20` (the queue is walked). Returns how many were dropped.
    pub fn expire_events(
        &mut self,
        now: Instant,
        timeout: Duration,
        mut done: impl FnMut(Queued),
    ) -> usize {
        if self
            .last_expiry
            .is_some_and(|t| now.saturating_duration_since(t) < timeout / 20)
        {
            return 0;
        }
        self.last_expiry = Some(now);
        let skip = usize::from(self.front_pos > 0);
        let before = self.items.len();
        let mut kept = VecDeque::with_capacity(before);
        for (i, q) in std::mem::take(&mut self.items).into_iter().enumerate() {
            if i >= skip && q.event && now.saturating_duration_since(q.at) >= timeout {
                self.bytes -= q.bytes.len();
                done(q);
            } else {
                kept.push_back(q);
            }
        }
        self.items = kept;
        before - self.items.len()
    }

    /// Charges every queued message its own length (output handed over
    /// by a live update: charged to the receiving domain again, the
    /// unwritten tail of a message going out for that tail only).
    pub fn charge_all(&mut self) {
        for q in &mut self.items {
            q.charged = q.bytes.len();
        }
    }

    /// Empties the queue, handing every message to `done`.
    pub fn clear(&mut self, mut done: impl FnMut(Queued)) {
        self.front_pos = 0;
        self.bytes = 0;
        for q in self.items.drain(..) {
            done(q);
        }
    }
}

/// A guest's ring: its page, event channel and state.
pub struct RingLink {
    /// The domain.
    pub domid: u32,
    /// Our local port; `None` while parked (a re-INTRODUCE could not bind
    /// the event channel: the page stays mapped until one that can).
    pub port: Option<u32>,
    /// The ring page.
    pub page: MappedPage,
    /// Features advertised to the guest.
    pub features: u32,
    /// Given up on (error field written); never read again until the
    /// domain is introduced again.
    pub broken: bool,
}

impl RingLink {
    /// A ring bound to local `port`, serving `domid` with `features`.
    pub fn new(domid: u32, port: u32, page: MappedPage, features: u32) -> RingLink {
        RingLink {
            domid,
            port: Some(port),
            page,
            features,
            broken: false,
        }
    }

    /// Copies what fits of `iov`'s first slice into the response ring.
    fn write(&self, iov: &[IoSlice<'_>]) -> Result<usize, RingError> {
        match iov.first() {
            Some(s) => ring::server_write(&self.page, s),
            None => Ok(0),
        }
    }

    /// Reads requests into `decoder` until it holds `limit` bytes or the
    /// ring is empty. Returns bytes read.
    pub fn read_into(&self, decoder: &mut Decoder, limit: usize) -> Result<usize, RingError> {
        let mut buf = [0u8; 1024];
        let mut total = 0;
        while decoder.buffered() < limit {
            let n = ring::server_read(&self.page, &mut buf)?;
            if n == 0 {
                break;
            }
            decoder.feed(buf.get(..n).unwrap_or_default());
            total += n;
        }
        Ok(total)
    }

    /// Writes the error field (when the guest advertised it may read it)
    /// and marks the ring broken.
    pub fn break_with(&mut self, code: u32) {
        if !self.broken && self.features & feature::ERROR != 0 {
            self.page.store_u32(ring::ERROR, code);
        }
        self.broken = true;
    }
}

/// A socket's byte stream, non-blocking (`WouldBlock` when there is
/// nothing to read or no room). The daemon's are Unix sockets; tests use
/// streams in memory.
pub trait Stream: std::io::Read + std::io::Write {
    /// The descriptor the event loop polls (`None`: not polled).
    fn fd(&self) -> Option<std::os::fd::RawFd>;

    /// Writes what it can of `bufs`, as [`std::io::Write::write_vectored`].
    fn send(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        self.write_vectored(bufs)
    }
}

impl Stream for mio::net::UnixStream {
    fn fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.as_raw_fd())
    }

    /// `sendmsg` rather than `writev`: the socket layer directly, without
    /// the file layer's position lock and iovec import (about a sixth of
    /// the kernel's time per watch event in a fan-out profile). Never
    /// raises SIGPIPE: a peer gone is an error on this connection only.
    fn send(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        use rustix::net::{sendmsg, SendAncillaryBuffer, SendFlags};
        sendmsg(
            &*self,
            bufs,
            &mut SendAncillaryBuffer::default(),
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        )
        .map_err(std::io::Error::from)
    }
}

/// A socket in memory, for tests and fuzzing: clones share one pipe.
#[derive(Clone, Default)]
pub struct MemStream(std::rc::Rc<std::cell::RefCell<MemPipe>>);

/// Both ends of a [`MemStream`].
#[derive(Default)]
pub struct MemPipe {
    /// Sent by the client, not yet read by the daemon.
    pub to_daemon: std::collections::VecDeque<u8>,
    /// Written by the daemon.
    pub from_daemon: Vec<u8>,
    /// How many more bytes the daemon may write (`None`: no limit).
    pub room: Option<usize>,
    /// The descriptor reported to the loop.
    pub fd: Option<std::os::fd::RawFd>,
}

impl MemStream {
    /// The pipe, to fill, drain or limit.
    pub fn pipe(&self) -> std::cell::RefMut<'_, MemPipe> {
        self.0.borrow_mut()
    }
}

impl std::io::Read for MemStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut p = self.0.borrow_mut();
        if p.to_daemon.is_empty() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(p.to_daemon.len());
        for (b, v) in buf.iter_mut().zip(p.to_daemon.drain(..n)) {
            *b = v;
        }
        Ok(n)
    }
}

impl std::io::Write for MemStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut p = self.0.borrow_mut();
        let n = p.room.map_or(buf.len(), |r| r.min(buf.len()));
        if n == 0 {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        if let Some(r) = &mut p.room {
            *r -= n;
        }
        p.from_daemon
            .extend_from_slice(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Stream for MemStream {
    fn fd(&self) -> Option<std::os::fd::RawFd> {
        self.0.borrow().fd
    }
}

/// What carries a connection's bytes.
pub enum Transport {
    /// A Unix socket; `want_write` mirrors the poll interest.
    Socket {
        /// The stream.
        stream: Box<dyn Stream>,
        /// Registered for writability.
        want_write: bool,
    },
    /// A guest's ring.
    Ring(RingLink),
}

/// A connection.
pub struct Connection {
    /// Its id in the store.
    pub id: ConnId,
    /// Socket or ring.
    pub transport: Transport,
    /// Requests read but not yet handled.
    pub decoder: Decoder,
    /// Replies and events not yet written.
    pub out: Output,
    /// Privileged (no event expiry, no quota).
    pub privileged: bool,
    /// On the ready queue.
    pub scheduled: bool,
    /// Has output to flush this turn.
    pub dirty: bool,
    /// Waiting for its domain's limits (outstanding requests, memory).
    pub stalled: bool,
    /// A socket not read until its output drains.
    pub paused: bool,
    /// Watch events dropped since the queue last had room.
    pub dropped_events: u64,
    /// A TRANSACTION_START held while a live update waits for open
    /// transactions to end.
    pub held: Option<xenstore_proto::Message>,
}

impl Connection {
    /// A new connection over `transport`.
    pub fn new(id: ConnId, transport: Transport, privileged: bool) -> Connection {
        Connection {
            id,
            transport,
            decoder: Decoder::new(),
            out: Output::default(),
            privileged,
            scheduled: false,
            dirty: false,
            stalled: false,
            paused: false,
            dropped_events: 0,
            held: None,
        }
    }

    /// The domain whose ring this is.
    pub fn domid(&self) -> Option<u32> {
        match &self.transport {
            Transport::Ring(r) => Some(r.domid),
            Transport::Socket { .. } => None,
        }
    }

    /// The socket's descriptor, if this is a socket.
    pub fn socket_fd(&self) -> Option<std::os::fd::RawFd> {
        match &self.transport {
            Transport::Socket { stream, .. } => stream.fd(),
            Transport::Ring(_) => None,
        }
    }

    /// The ring, if this is one.
    pub fn ring(&self) -> Option<&RingLink> {
        match &self.transport {
            Transport::Ring(r) => Some(r),
            Transport::Socket { .. } => None,
        }
    }

    /// The ring, if this is one.
    pub fn ring_mut(&mut self) -> Option<&mut RingLink> {
        match &mut self.transport {
            Transport::Ring(r) => Some(r),
            Transport::Socket { .. } => None,
        }
    }

    /// Writes queued output into the transport. Socket errors other than
    /// "would block" and ring index errors are returned.
    pub fn write_out(&mut self, done: impl FnMut(Queued)) -> Result<usize, WriteError> {
        match &mut self.transport {
            Transport::Socket { stream, .. } => self.out.write(
                |iov| loop {
                    match stream.send(iov) {
                        Ok(0) => return Err(WriteError::Closed),
                        Ok(n) => return Ok(n),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(0),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(WriteError::Socket(e)),
                    }
                },
                done,
            ),
            Transport::Ring(r) => {
                if r.broken || r.port.is_none() {
                    return Ok(0);
                }
                self.out
                    .write(|iov| r.write(iov), done)
                    .map_err(WriteError::Ring)
            }
        }
    }
}

/// Why output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The peer closed the socket.
    #[error("write returned 0")]
    Closed,
    /// The socket failed.
    #[error("write error: {0}")]
    Socket(std::io::Error),
    /// The guest's indices are out of range.
    #[error("{0}")]
    Ring(RingError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(len: usize, event: bool, at: Instant) -> Queued {
        Queued {
            bytes: vec![7; len],
            at,
            event,
            charged: len,
            ticket: None,
        }
    }

    #[test]
    fn written_in_pieces_messages_leave_whole() {
        let now = Instant::now();
        let mut o = Output::default();
        o.push(q(10, false, now));
        o.push(q(5, true, now));
        let mut left = Vec::new();
        // A sink that takes 4 bytes at a time.
        let n = o
            .write(
                |iov| -> Result<usize, ()> { Ok(iov.first().map_or(0, |s| s.len().min(4))) },
                |m| left.push(m.bytes.len()),
            )
            .unwrap();
        assert_eq!(n, 15);
        assert_eq!(left, [10, 5]);
        assert!(o.is_empty() && o.bytes() == 0);
    }

    #[test]
    fn no_room_keeps_everything() {
        let now = Instant::now();
        let mut o = Output::default();
        o.push(q(10, false, now));
        let mut gone = 0;
        let n = o
            .write(|_| -> Result<usize, ()> { Ok(0) }, |_| gone += 1)
            .unwrap();
        assert_eq!((n, gone, o.bytes(), o.len()), (0, 0, 10, 1));
    }

    #[test]
    fn stale_events_go_but_not_replies_nor_a_started_event() {
        let t0 = Instant::now();
        let mut o = Output::default();
        o.push(q(8, true, t0));
        o.push(q(8, false, t0));
        o.push(q(8, true, t0));
        o.push(q(8, true, t0 + Duration::from_secs(30)));
        // Start writing the first event: 3 bytes, then no room.
        let mut room = 3;
        o.write(
            |_| -> Result<usize, ()> { Ok(std::mem::take(&mut room)) },
            |_| panic!("nothing completes"),
        )
        .ok();
        let mut dropped = Vec::new();
        let n = o.expire_events(t0 + Duration::from_secs(20), Duration::from_secs(20), |m| {
            dropped.push(m.charged)
        });
        assert_eq!(n, 1);
        assert_eq!(o.len(), 3);
        assert_eq!(o.bytes(), 8 * 3 - 3);
        // Looked again too soon: nothing is walked.
        let soon = t0 + Duration::from_millis(20_500);
        assert_eq!(o.expire_events(soon, Duration::from_secs(20), |_| ()), 0);
        assert_eq!(o.len(), 3);
        // Later, the second stale event goes; the started one stays.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(o.expire_events(later, Duration::from_secs(20), |_| ()), 1);
        assert_eq!(o.len(), 2);
    }
}
