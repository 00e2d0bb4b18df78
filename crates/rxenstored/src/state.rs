//! The daemon's state, apart from its I/O: the store, every connection
//! (socket or ring, `crate::conn`), the ready queue, the per-domain limits,
//! the Xen side. The event loop (`crate::server`) owns the poll set, the
//! listener and the signals; it hands readiness to the state, passes the
//! time in ([`State::set_now`]), and applies what the state asks of it
//! ([`Action`]s, sockets to close). So the state is driven by tests with
//! streams in memory and a clock of their own.
//!
//! * Sockets and rings are one kind of [`Connection`]: one output queue of
//!   whole messages, one turn on one ready queue. A turn handles at most
//!   [`REQUESTS_PER_TURN`] requests, and ends sooner once its requests
//!   made [`OUTPUT_PER_TURN`] bytes of replies and events; a connection
//!   with more goes to the back of the queue, so one connection's flood
//!   costs the others at most one turn's worth of latency.
//! * A connection's requests are not read while its output holds more
//!   than its high-water mark (its own replies are what fills it). A
//!   guest's requests are also not read while its domain has as many
//!   requests outstanding as its `outstanding` quota allows (a request is
//!   outstanding until its reply and every watch event it caused are
//!   written, as in C xenstored), or while the domain is at its memory
//!   quota; output queued for a guest is charged to that quota. So a guest
//!   whose writes flood a slow watcher is throttled, not the watcher.
//! * Watch events for a guest beyond its memory quota or [`RING_OUT_LIMIT`]
//!   are dropped for that guest alone; events for unprivileged receivers
//!   that wait longer than the watch-event timeout are dropped. A socket
//!   whose queue passes [`OUT_LIMIT`] is dropped, since it is not reading.
//! * A header announcing more than 4096 bytes closes a socket at once, as
//!   C xenstored does, and marks a ring broken; every other connection
//!   goes on.

use crate::conn::{Connection, Queued, RingLink, Stream, Ticket, Transport, WriteError};
use crate::control;
use crate::server::ServerConfig;
use crate::trace::Trace;
use crate::xen::{Change, Xen, RING_IN_HIGH, RING_OUT_HIGH, RING_OUT_LIMIT};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};
use xenstore_proto::ring::{ERROR_PROTO, ERROR_RINGIDX};
use xenstore_proto::{args, number, Message, MsgType, XsError};
use xenstore_store::{ConnId, ConnKind, Effect, Outcome, Store, SUPPORTED_FEATURES};

/// Pending ports taken per turn before sockets get served again.
const PORTS_PER_TURN: usize = 256;
/// The first connection id (lower ones are the loop's own tokens).
pub const FIRST_CONN: u64 = 16;
/// Bytes read from a socket per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Requests handled per connection per turn before the others get served.
pub const REQUESTS_PER_TURN: usize = 32;
/// Bytes of replies and watch events a connection's requests may make in
/// one turn before the others get served (a write watched 128 times with
/// 4 KB tokens makes 512 KiB: one such request per turn).
pub const OUTPUT_PER_TURN: usize = 256 * 1024;
/// How often connections holding output for a receiver that does not read
/// are looked at for stale watch events.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

/// How often every ring is looked at for requests or room that no
/// notification announced. A notification lost between a guest and the
/// daemon would otherwise leave that guest waiting until its next one (C
/// xenstored looks at every ring on every wake-up); the look costs two
/// loads per ring.
const RING_SWEEP: Duration = Duration::from_secs(1);
/// Output queued above which a socket's requests are not read.
pub const OUT_HIGH: usize = 1 << 20;
/// Output queued above which a socket is dropped.
pub const OUT_LIMIT: usize = 64 << 20;

/// What the state asks of the event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Poll socket `id` (descriptor `fd`) for writability too, or no
    /// longer.
    Interest {
        /// The connection.
        id: u64,
        /// Its descriptor.
        fd: RawFd,
        /// Whether to wait for writability.
        writable: bool,
    },
    /// A live update may happen now (`live-update -s`, no transaction in
    /// the way): the loop hands the state over and runs the new binary,
    /// or reports the failure with [`State::live_update_failed`].
    LiveUpdate(crate::live_update::Go),
}

/// An outstanding request: how many queued messages (its reply, the watch
/// events it caused) still refer to it, plus one while it is handled.
struct Pending {
    domid: u32,
    /// The requesting connection: the count is the domain's only while
    /// this is still its connection.
    conn: ConnId,
    refs: u32,
}

/// Everything the daemon serves, apart from its I/O.
pub struct State {
    /// Boxed: the map's slots stay small (a connection record is a few
    /// hundred bytes and the map runs at half load after growing).
    conns: HashMap<u64, Box<Connection>>,
    store: Store,
    trace: Trace,
    next_id: u64,
    ready: VecDeque<u64>,
    dirty: Vec<u64>,
    /// Ring connections not read because of their domain's limits.
    stalled: Vec<u64>,
    /// Unprivileged connections holding output: looked at for stale events.
    backlogged: HashSet<u64>,
    next_expiry: Option<Instant>,
    /// When the rings are next looked at ([`RING_SWEEP`]).
    next_sweep: Instant,
    /// Rings found with work nobody had signalled, since start (logged).
    unsignalled: u64,
    pending: HashMap<u64, Pending>,
    next_ticket: u64,
    cfg: ServerConfig,
    /// Guests, when a Xen interface is available.
    xen: Option<Xen>,
    /// The event channel used up its budget: more may be pending.
    evtchn_pending: bool,
    /// The time given by the loop for what it does now.
    now: Instant,
    actions: Vec<Action>,
    closed: Vec<Box<dyn Stream>>,
    /// One buffer for every socket read (not one allocation per read).
    read_buf: Vec<u8>,
    /// The live-update session, if one is open (`live-update -f`).
    live_update: Option<crate::live_update::Session>,
    /// Since when each connection has had a transaction open (the oldest
    /// open one), for live update's wait.
    tx_since: HashMap<u64, Instant>,
}

impl State {
    /// The state of a daemon configured by `cfg`, tracing to `trace`,
    /// serving guests through `xen` if given. Serves at once the local
    /// domain's ring and the existing domains whose ring page names their
    /// event channel.
    pub fn new(cfg: ServerConfig, trace: Trace, xen: Option<Xen>, now: Instant) -> State {
        let mut s = State::bare(cfg, trace, xen, now);
        s.attach_local_ring();
        s.adopt_existing_domains();
        s
    }

    /// The state of a daemon taking over from the binary before it (live
    /// update): nothing is served until [`State::restore_live_update`]
    /// hands the connections over (the local ring among them).
    pub fn taken_over(cfg: ServerConfig, trace: Trace, xen: Option<Xen>, now: Instant) -> State {
        State::bare(cfg, trace, xen, now)
    }

    fn bare(cfg: ServerConfig, trace: Trace, xen: Option<Xen>, now: Instant) -> State {
        State {
            conns: HashMap::new(),
            store: Store::new(cfg.store.clone()),
            trace,
            next_id: FIRST_CONN,
            ready: VecDeque::new(),
            dirty: Vec::new(),
            stalled: Vec::new(),
            backlogged: HashSet::new(),
            next_expiry: None,
            next_sweep: now + RING_SWEEP,
            unsignalled: 0,
            pending: HashMap::new(),
            next_ticket: 1,
            cfg,
            xen,
            evtchn_pending: false,
            now,
            actions: Vec::new(),
            closed: Vec::new(),
            read_buf: vec![0u8; READ_CHUNK],
            live_update: None,
            tx_since: HashMap::new(),
        }
    }

    /// Serves the local domain's ring and the existing domains whose ring
    /// page names their event channel (what [`State::new`] does; a
    /// take-over from a binary that served no guest does it too).
    pub fn serve_local_and_existing(&mut self) {
        self.attach_local_ring();
        self.adopt_existing_domains();
    }

    /// The number of ring connections.
    pub fn ring_count(&self) -> usize {
        self.conns.values().filter(|c| c.ring().is_some()).count()
    }

    /// Sets the time for what follows.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// The event-channel descriptor to poll, when guests are served.
    pub fn evtchn_fd(&self) -> Option<RawFd> {
        use std::os::fd::AsRawFd;
        self.xen.as_ref().map(|x| x.fd().as_raw_fd())
    }

    /// True if there is work to do without waiting for new readiness.
    pub fn busy(&self) -> bool {
        !self.ready.is_empty() || self.evtchn_pending
    }

    /// When the state wants to be served again at the latest.
    pub fn deadline(&self) -> Option<Instant> {
        // A started live update looks at the transactions in its way often.
        let lu = self
            .live_update_started()
            .then(|| self.now + Duration::from_millis(100));
        let sweep = self.xen.is_some().then_some(self.next_sweep);
        [self.next_expiry, lu, sweep].into_iter().flatten().min()
    }

    /// What the loop must do for the state.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Sockets closed since last asked: the loop deregisters and drops
    /// them (freeing their descriptors).
    pub fn take_closed(&mut self) -> Vec<Box<dyn Stream>> {
        std::mem::take(&mut self.closed)
    }

    /// Every socket connection and its descriptor (a live update keeps
    /// them open across `exec`; a take-over registers them with the loop).
    pub fn socket_fds(&self) -> Vec<(u64, RawFd)> {
        let mut v: Vec<(u64, RawFd)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| c.socket_fd().map(|fd| (*id, fd)))
            .collect();
        v.sort_unstable();
        v
    }

    /// The store (read-only, for tests and reports).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reopens the trace file (SIGHUP).
    pub fn reopen_trace(&mut self) {
        if let Err(e) = self.trace.reopen() {
            tracing::warn!("cannot reopen trace file: {e}");
        }
    }

    /// A new socket connection; it is served at once (its requests may
    /// already be waiting). Returns its id (the loop's token).
    pub fn add_socket(&mut self, stream: Box<dyn Stream>) -> u64 {
        let conn = self.new_conn_id();
        self.store.connect(conn, ConnKind::Socket);
        let privileged = self.store.is_privileged(conn);
        let transport = Transport::Socket {
            stream,
            want_write: false,
        };
        self.conns.insert(
            conn.0,
            Box::new(Connection::new(conn, transport, privileged)),
        );
        self.trace.obj("socket connection created", conn.0);
        self.schedule(conn.0);
        conn.0
    }

    /// Serves the ready queue once round (each connection one turn), then
    /// writes pending output, drops stale events when due and looks at the
    /// stalled guests.
    pub fn serve(&mut self) {
        if self.evtchn_pending {
            self.on_evtchn();
        }
        for _ in 0..self.ready.len() {
            if let Some(id) = self.ready.pop_front() {
                self.turn(id);
            }
        }
        self.check_live_update();
        self.flush_dirty();
        if self.next_expiry.is_some_and(|t| self.now >= t) {
            self.expire_backlog();
        }
        self.retry_stalled();
        if self.xen.is_some() && self.now >= self.next_sweep {
            self.sweep_rings();
            self.next_sweep = self.now + RING_SWEEP;
        }
    }

    /// Schedules every ring that holds requests, or has room for queued
    /// output, without being scheduled already ([`RING_SWEEP`]).
    fn sweep_rings(&mut self) {
        let found: Vec<(u64, u32)> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.scheduled)
            .filter_map(|(id, c)| {
                let r = c.ring().filter(|r| !r.broken && r.port.is_some())?;
                // Input a turn would read (not a domain held at its
                // limits, which is served again when they allow).
                let input = !c.stalled
                    && c.out.bytes() < RING_OUT_HIGH
                    && xenstore_proto::ring::server_has_input(&r.page);
                let room = !c.out.is_empty() && xenstore_proto::ring::server_has_room(&r.page);
                (input || room).then_some((*id, r.domid))
            })
            .collect();
        for (id, domid) in found {
            self.unsignalled += 1;
            tracing::debug!(
                "domain {domid}: ring has work no notification announced \
                 ({} such since start)",
                self.unsignalled
            );
            self.schedule(id);
        }
    }

    /// Closes every connection (the daemon stops).
    pub fn shutdown(&mut self) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id, "daemon stopping");
        }
    }

    fn new_conn_id(&mut self) -> ConnId {
        let c = ConnId(self.next_id);
        self.next_id += 1;
        c
    }

    /// Registers a new ring connection of `domid` with the store and the
    /// loop, and records the domain as introduced.
    fn add_ring(&mut self, conn: ConnId, link: RingLink) -> Vec<(ConnId, Message)> {
        let domid = link.domid;
        self.store.connect(conn, ConnKind::Domain(domid));
        let privileged = self.store.is_privileged(conn);
        self.conns.insert(
            conn.0,
            Box::new(Connection::new(conn, Transport::Ring(link), privileged)),
        );
        self.trace
            .obj(&format!("ring connection of domain {domid}"), conn.0);
        let out = self.store.introduce_domain(domid, conn);
        // The guest may have written requests before we bound its port.
        self.schedule(conn.0);
        out
    }

    /// The feature mask to advertise to `domid`.
    fn features_of(&self, domid: u32) -> u32 {
        self.store
            .domain(domid)
            .map_or(SUPPORTED_FEATURES, |d| d.features)
    }

    /// Start-up: every domain that exists and whose ring page names its
    /// event channel (dom0less, Hyperlaunch) is served at once, as C
    /// xenstored does; the others wait for their INTRODUCE.
    fn adopt_existing_domains(&mut self) {
        let found = match &mut self.xen {
            Some(x) => x.existing_domains(),
            None => return,
        };
        let skip = [self.cfg.store.store_domid, self.cfg.store.priv_domid];
        for (domid, info) in found {
            if skip.contains(&domid) || !info.exists() {
                continue;
            }
            let features = self.features_of(domid);
            let conn = ConnId(self.next_id);
            let Some(x) = &mut self.xen else { return };
            match x.adopt(domid, features, conn) {
                Ok(Some(link)) => {
                    self.next_id += 1;
                    let port = link.port.unwrap_or_default();
                    let _ = self.add_ring(conn, link);
                    tracing::info!("domain {domid} found at start-up: served (port {port})");
                }
                Ok(None) => tracing::debug!("domain {domid} exists; waiting for its INTRODUCE"),
                Err(e) => tracing::debug!("domain {domid} exists but cannot be served yet: {e}"),
            }
        }
    }

    /// Serves the local domain's own ring, if this domain has one (dom0's
    /// kernel relays `/dev/xen/xenbus` clients over it).
    fn attach_local_ring(&mut self) {
        let domid = self.cfg.store.store_domid;
        let features = self.features_of(domid);
        let conn = ConnId(self.next_id);
        let (Some(x), Some(xc)) = (&mut self.xen, &self.cfg.xen) else {
            return;
        };
        if !xc.xsd_kva.exists() {
            tracing::info!(
                "no {}: the local domain's ring is not served",
                xc.xsd_kva.display()
            );
            return;
        }
        match x.attach_local(xc, domid, features, conn) {
            Ok(link) => {
                self.next_id += 1;
                let port = link.port.unwrap_or_default();
                let _ = self.add_ring(conn, link);
                tracing::info!("serving the local domain's ring (port {port})");
            }
            Err(e) => tracing::warn!("the local domain's ring is not served: {e}"),
        }
    }

    /// Puts a connection on the ready queue (once).
    pub fn schedule(&mut self, id: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            if !c.scheduled {
                c.scheduled = true;
                self.ready.push_back(id);
            }
        }
    }

    /// Whether a connection's requests may be handled now. A ring whose
    /// domain is at its limits is noted as stalled and served again when
    /// they allow.
    fn may_read(&mut self, id: u64) -> bool {
        let Some(c) = self.conns.get_mut(&id) else {
            return false;
        };
        match &c.transport {
            Transport::Socket { .. } => {
                if c.out.bytes() >= OUT_HIGH {
                    c.paused = true;
                    return false;
                }
                true
            }
            Transport::Ring(r) => {
                if r.broken || r.port.is_none() || c.out.bytes() >= RING_OUT_HIGH {
                    return false;
                }
                let d = r.domid;
                if self.store.outstanding_full(d) || self.store.memory_full(d) {
                    if !c.stalled {
                        c.stalled = true;
                        self.stalled.push(id);
                    }
                    return false;
                }
                true
            }
        }
    }

    /// Serves again the stalled rings whose domains are back within their
    /// limits.
    fn retry_stalled(&mut self) {
        if self.stalled.is_empty() {
            return;
        }
        let stalled = std::mem::take(&mut self.stalled);
        for id in stalled {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            let Some(d) = c.domid() else { continue };
            if self.store.outstanding_full(d) || self.store.memory_full(d) {
                self.stalled.push(id);
            } else {
                c.stalled = false;
                self.schedule(id);
            }
        }
    }

    /// One turn of a connection: write what it can take, then handle its
    /// requests (reading more as needed) up to the per-turn budget.
    fn turn(&mut self, id: u64) {
        match self.conns.get_mut(&id) {
            Some(c) => c.scheduled = false,
            None => return,
        }
        self.flush(id);
        let mut handled = 0;
        let mut made = 0;
        let mut read = 0;
        // A socket read that did not fill the buffer emptied the socket:
        // once what it brought is handled, the turn ends without a read
        // that would only say so (epoll reports later bytes: sockets are
        // registered edge-triggered).
        let mut drained = false;
        while self.may_read(id) {
            let lu_started = self.live_update_started();
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            if c.held.is_some() {
                if lu_started {
                    break;
                }
                if let Some(m) = c.held.take() {
                    made += self.dispatch(id, m);
                    handled += 1;
                }
                continue;
            }
            match c.decoder.next_message() {
                Ok(Some(m)) if m.kind() == Some(MsgType::TransactionStart) && lu_started => {
                    // A live update waits for open transactions to end:
                    // no new one starts meanwhile (as C).
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.held = Some(m);
                    }
                    break;
                }
                Ok(Some(m)) => {
                    made += self.dispatch(id, m);
                    handled += 1;
                    if handled >= REQUESTS_PER_TURN || made >= OUTPUT_PER_TURN {
                        // More may wait: back of the queue.
                        self.schedule(id);
                        break;
                    }
                    continue;
                }
                Ok(None) if drained => break,
                Ok(None) => {}
                Err(e) => {
                    self.fail(id, ERROR_PROTO, &format!("protocol error: {e}"));
                    return;
                }
            }
            match self.read_more(id) {
                Some((0, _)) => break,
                Some((n, emptied)) => {
                    read += n;
                    drained = emptied;
                }
                None => return,
            }
        }
        let wrote = self.flush(id);
        if read > 0 && !wrote {
            // Requests consumed and nothing written: the guest may be
            // waiting for room.
            self.notify_ring(id);
        }
    }

    /// Reads more requests into a connection's decoder: the bytes read
    /// (0: nothing more now) and whether the read emptied a socket (it
    /// did not fill the buffer); `None`: the connection is gone or broken.
    fn read_more(&mut self, id: u64) -> Option<(usize, bool)> {
        let c = self.conns.get_mut(&id)?;
        let result = match &mut c.transport {
            Transport::Socket { stream, .. } => {
                let buf = &mut self.read_buf;
                loop {
                    match stream.read(buf) {
                        Ok(0) => break Err("end of file".to_owned()),
                        Ok(n) => {
                            c.decoder.feed(buf.get(..n).unwrap_or_default());
                            break Ok((n, n < buf.len()));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok((0, true)),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(format!("read error: {e}")),
                    }
                }
            }
            Transport::Ring(r) => r
                .read_into(&mut c.decoder, RING_IN_HIGH)
                .map(|n| (n, false))
                .map_err(|e| e.to_string()),
        };
        match result {
            Ok(n) => Some(n),
            Err(why) => {
                self.fail(id, ERROR_RINGIDX, &why);
                None
            }
        }
    }

    /// A connection failed: a socket is closed; a ring is marked broken
    /// (the error field says why, when the guest may read it), its watches
    /// and transactions go, and it is never read again while the domain
    /// stays introduced until it dies or is released.
    fn fail(&mut self, id: u64, ring_code: u32, why: &str) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(r) = c.ring_mut() else {
            self.close(id, why);
            return;
        };
        tracing::warn!("domain {}: {why}: connection ignored", r.domid);
        r.break_with(ring_code);
        c.decoder.clear();
        self.clear_output(id);
        self.store.reset_connection(ConnId(id));
    }

    /// Signals a ring's guest.
    fn notify_ring(&mut self, id: u64) {
        let port = self
            .conns
            .get(&id)
            .and_then(|c| c.ring())
            .filter(|r| !r.broken)
            .and_then(|r| r.port);
        if let (Some(port), Some(x)) = (port, &mut self.xen) {
            x.notify(port);
        }
    }

    /// Handles one request. A guest's request is outstanding until its
    /// reply and the watch events it caused are all written.
    /// Returns the bytes of replies and events the request made (queued or
    /// not): what it cost.
    fn dispatch(&mut self, id: u64, msg: Message) -> usize {
        self.trace.io("IN", id, &msg);
        let ticket = self.conns.get(&id).and_then(|c| c.domid()).map(|domid| {
            let t = self.next_ticket;
            self.next_ticket += 1;
            self.store.charge_outstanding(domid, 1);
            self.pending.insert(
                t,
                Pending {
                    domid,
                    conn: ConnId(id),
                    refs: 1,
                },
            );
            Ticket(t)
        });
        let tx_msg = matches!(
            msg.kind(),
            Some(MsgType::TransactionStart | MsgType::TransactionEnd)
        );
        let outcome = match msg.kind() {
            Some(MsgType::Control)
                if args::strings(&msg.payload).first() == Some(&&b"live-update"[..]) =>
            {
                self.live_update_command(id, &msg)
            }
            Some(MsgType::Control) => self.control(id, &msg),
            Some(MsgType::Introduce) => self.introduce(id, &msg),
            _ => {
                let oracle = crate::xen::Oracle::new(self.xen.as_mut());
                self.store.handle(ConnId(id), &msg, &oracle)
            }
        };
        if tx_msg {
            if self.store.transaction_count(ConnId(id)) == 0 {
                self.tx_since.remove(&id);
            } else {
                self.tx_since.entry(id).or_insert(self.now);
            }
        }
        let made = outcome.out.iter().map(|(_, m)| m.wire_len()).sum();
        self.deliver(outcome, ticket);
        if let Some(t) = ticket {
            self.unref(t);
        }
        made
    }

    fn deliver(&mut self, outcome: Outcome, cause: Option<Ticket>) {
        for (cid, m) in outcome.out {
            self.queue(cid.0, m, cause);
        }
        for e in outcome.effects {
            match e {
                Effect::DomainReleased { domid, conn } => {
                    tracing::info!("domain {domid} released");
                    match conn {
                        // Unbinds the port and unmaps the page.
                        Some(c) => self.close(c.0, "domain released"),
                        None => {
                            if let Some(x) = &mut self.xen {
                                x.detach(domid, None);
                            }
                        }
                    }
                }
            }
        }
    }

    /// One fewer queued message refers to an outstanding request; the last
    /// ends it.
    fn unref(&mut self, t: Ticket) {
        let Some(p) = self.pending.get_mut(&t.0) else {
            return;
        };
        p.refs = p.refs.saturating_sub(1);
        if p.refs > 0 {
            return;
        }
        let (domid, conn) = (p.domid, p.conn);
        self.pending.remove(&t.0);
        // A domain released or dead since took its count with it.
        if self
            .store
            .domain(domid)
            .is_some_and(|d| d.conn == Some(conn))
        {
            self.store.charge_outstanding(domid, -1);
        }
    }

    /// Releases what a message that left a queue was charged for.
    fn release(&mut self, receiver: ConnId, domid: Option<u32>, q: Queued) {
        if let (Some(d), true) = (domid, q.charged > 0) {
            if self
                .store
                .domain(d)
                .is_some_and(|x| x.conn == Some(receiver))
            {
                self.store.charge_memory(d, -(q.charged as i64));
            }
        }
        if let Some(t) = q.ticket {
            self.unref(t);
        }
    }

    fn release_all(&mut self, receiver: ConnId, domid: Option<u32>, gone: Vec<Queued>) {
        for q in gone {
            self.release(receiver, domid, q);
        }
    }

    /// Empties a connection's output, releasing what it was charged for.
    fn clear_output(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let mut gone = Vec::new();
        c.out.clear(|q| gone.push(q));
        let (conn, domid) = (c.id, c.domid());
        self.release_all(conn, domid, gone);
    }

    fn control(&mut self, id: u64, msg: &Message) -> Outcome {
        let h = msg.header;
        let reply = match self.store.gate(ConnId(id), &h) {
            Err(e) => Message::error(&h, e),
            Ok(_) => match control::run(
                &mut self.store,
                &mut self.trace,
                &self.cfg.file_base,
                &msg.payload,
            ) {
                Ok(control::Reply::Ok) => Message::ok(&h),
                Ok(control::Reply::Text(s)) => {
                    let mut p = s.into_bytes();
                    p.push(0);
                    if p.len() > xenstore_proto::PAYLOAD_MAX {
                        Message::error(&h, XsError::E2big)
                    } else {
                        Message::reply(&h, p)
                    }
                }
                Err(e) => Message::error(&h, e),
            },
        };
        Outcome {
            out: vec![(ConnId(id), reply)],
            effects: Vec::new(),
        }
    }

    /// INTRODUCE `<domid>|<gfn>|<port>|`: arguments are checked as C does
    /// (the gfn is ignored: the ring is grant entry 1); then the ring is
    /// mapped and the event channel bound. A domain introduced before only
    /// gets its event channel bound again and its connection reset (a ring
    /// whose binding fails stays mapped, parked, until an INTRODUCE that
    /// binds). Without a Xen interface the mapping cannot happen: `EINVAL`,
    /// as C answers when the grant map fails.
    fn introduce(&mut self, id: u64, msg: &Message) -> Outcome {
        let h = msg.header;
        let mut out = Outcome::default();
        let result = self.introduce_ring(id, msg, &mut out);
        out.out.push((
            ConnId(id),
            match result {
                Ok(()) => Message::ok(&h),
                Err(e) => Message::error(&h, e),
            },
        ));
        out
    }

    fn introduce_ring(&mut self, id: u64, msg: &Message, out: &mut Outcome) -> Result<(), XsError> {
        self.store.gate(ConnId(id), &msg.header)?;
        let a = args::strings(&msg.payload);
        if a.len() < 3 {
            return Err(XsError::Einval);
        }
        let domid = number::parse_domid(a[0])?;
        let port = u32::try_from(number::atoi(a[2])).map_err(|_| XsError::Einval)?;
        if port == 0 {
            return Err(XsError::Einval);
        }
        let features = self.features_of(domid);
        let Some(x) = &mut self.xen else {
            tracing::warn!("INTRODUCE {domid} port {port}: no hypervisor interface");
            return Err(XsError::Einval);
        };
        match x.conn_of_domain(domid) {
            Some(conn) => {
                // Introduced before: its output and input go, the event
                // channel is bound again.
                self.clear_output(conn.0);
                let (Some(c), Some(x)) = (self.conns.get_mut(&conn.0), &mut self.xen) else {
                    return Err(XsError::Einval);
                };
                c.decoder.clear();
                let Some(link) = c.ring_mut() else {
                    return Err(XsError::Einval);
                };
                x.rebind(link, port, conn)?;
                out.out.extend(self.store.introduce_domain(domid, conn));
                self.schedule(conn.0);
            }
            None => {
                let conn = ConnId(self.next_id);
                let link = x.attach(domid, port, features, conn)?;
                self.next_id += 1;
                out.out.extend(self.add_ring(conn, link));
            }
        }
        Ok(())
    }

    /// The event channel is readable: take pending ports (a budget per
    /// turn, so sockets are not starved by a notification storm). A ring's
    /// port puts its connection on the ready queue; `VIRQ_DOM_EXC` and the
    /// domain-state backend's ports are handled here.
    pub fn on_evtchn(&mut self) {
        self.evtchn_pending = false;
        for _ in 0..PORTS_PER_TURN {
            let port = match &mut self.xen {
                Some(x) if x.has_pending() => match x.pending() {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!("event channel: {e}");
                        return;
                    }
                },
                _ => return,
            };
            let backend = self.xen.as_mut().and_then(|x| x.backend_port(port));
            if self.xen.as_ref().is_some_and(|x| x.is_virq(port)) {
                self.domain_exc();
            } else if let Some(changes) = backend {
                self.apply_changes(changes);
            } else if let Some(conn) = self.xen.as_ref().and_then(|x| x.conn_of_port(port)) {
                self.schedule(conn.0);
            }
            if let Some(x) = &mut self.xen {
                x.unmask(port);
            }
        }
        self.evtchn_pending = true;
    }

    /// `VIRQ_DOM_EXC`: apply what the domain-state backend reports.
    fn domain_exc(&mut self) {
        let store = &self.store;
        let changes = match &mut self.xen {
            Some(x) => x.changes(&|d| store.names_domain(d), &|| store.named_domains()),
            None => return,
        };
        self.apply_changes(changes);
    }

    /// Shutdowns fire `@releaseDomain/<domid>` (generic once per batch);
    /// deaths tear domains down.
    fn apply_changes(&mut self, changes: Vec<Change>) {
        let mut generic = false;
        for c in changes {
            match c {
                Change::Shutdown(d) => {
                    // Reported again while still shut down (the domain
                    // list reports state, not changes): nothing new.
                    if self.store.domain(d).is_some_and(|x| x.shutdown) {
                        continue;
                    }
                    let ev = self.store.domain_shutdown(d);
                    if !ev.is_empty() || self.store.domain(d).is_some_and(|x| x.shutdown) {
                        generic = true;
                    }
                    for (cid, m) in ev {
                        self.queue(cid.0, m, None);
                    }
                    tracing::info!("domain {d} shut down");
                }
                Change::Gone(d) => {
                    if self.store.is_introduced(d) {
                        tracing::info!("domain {d} died");
                    } else {
                        tracing::info!(
                            "domain {d}, never introduced, died: its nodes and rights go"
                        );
                    }
                    let o = self.store.remove_domain(d);
                    self.deliver(o, None);
                }
            }
        }
        if generic {
            for (cid, m) in self.store.release_domain_generic() {
                self.queue(cid.0, m, None);
            }
        }
    }

    /// Queues a reply or watch event for a connection. A guest's queued
    /// output is charged to its domain's memory; a watch event that would
    /// take the guest over its memory quota or [`RING_OUT_LIMIT`] is
    /// dropped for that guest alone. A socket whose queue passes
    /// [`OUT_LIMIT`] is closed.
    fn queue(&mut self, id: u64, m: Message, cause: Option<Ticket>) {
        self.trace.io("OUT", id, &m);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let event = m.kind() == Some(MsgType::WatchEvent);
        let len = m.wire_len();
        let mut charged = 0;
        match &c.transport {
            Transport::Ring(r) => {
                if r.broken || r.port.is_none() {
                    return;
                }
                let d = r.domid;
                if event
                    && (c.out.bytes() + len > RING_OUT_LIMIT
                        || self.store.memory_would_exceed(d, len as u64))
                {
                    if c.dropped_events == 0 {
                        tracing::warn!(
                            "domain {d}: not reading its ring or over its memory quota; \
                             watch events for it are dropped"
                        );
                    }
                    c.dropped_events += 1;
                    return;
                }
                if c.dropped_events > 0 && c.out.bytes() < RING_OUT_HIGH {
                    tracing::info!(
                        "domain {d}: reading again; {} watch events were dropped",
                        c.dropped_events
                    );
                    c.dropped_events = 0;
                }
                self.store.charge_memory(d, len as i64);
                charged = len;
            }
            Transport::Socket { .. } => {
                if c.out.bytes() + len > OUT_LIMIT {
                    self.close(id, "output queue overflow: client is not reading");
                    return;
                }
            }
        }
        c.out.push(Queued {
            bytes: m.encode(),
            at: self.now,
            event,
            charged,
            ticket: cause,
        });
        if let Some(p) = cause.and_then(|t| self.pending.get_mut(&t.0)) {
            p.refs += 1;
        }
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Writes what was queued since the last turn (outside a turn: the
    /// answer to a live update that failed).
    pub fn flush_queued(&mut self) {
        self.flush_dirty();
    }

    fn flush_dirty(&mut self) {
        while let Some(id) = self.dirty.pop() {
            if let Some(c) = self.conns.get_mut(&id) {
                c.dirty = false;
            }
            self.flush(id);
        }
    }

    /// Writes as much queued output as the connection takes (dropping
    /// stale watch events for unprivileged receivers first). Returns true
    /// if anything was written.
    pub fn flush(&mut self, id: u64) -> bool {
        let timeout = self.cfg.watch_event_timeout;
        let now = self.now;
        let Some(c) = self.conns.get_mut(&id) else {
            return false;
        };
        let mut gone = Vec::new();
        if let (Some(t), false) = (timeout, c.privileged) {
            let n = c.out.expire_events(now, t, |q| gone.push(q));
            if n > 0 {
                tracing::debug!("connection {id}: dropped {n} stale watch events");
            }
        }
        let result = c.write_out(|q| gone.push(q));
        let (conn, domid) = (c.id, c.domid());
        let port = c.ring().and_then(|r| r.port);
        let fd = c.socket_fd();
        let backlog = !c.out.is_empty() && !c.privileged && timeout.is_some();
        let resume = c.paused && c.out.bytes() < OUT_HIGH / 2;
        if resume {
            c.paused = false;
        }
        let mut reregister = None;
        if let Transport::Socket { want_write, .. } = &mut c.transport {
            let want = !c.out.is_empty();
            if want != *want_write {
                *want_write = want;
                reregister = Some(want);
            }
        }
        self.release_all(conn, domid, gone);
        let written = match result {
            Ok(n) => n,
            Err(WriteError::Ring(e)) => {
                self.fail(id, ERROR_RINGIDX, &e.to_string());
                return false;
            }
            Err(e) => {
                self.close(id, &e.to_string());
                return false;
            }
        };
        if written > 0 {
            if let (Some(p), Some(x)) = (port, &mut self.xen) {
                x.notify(p);
            }
        }
        if let (Some(writable), Some(fd)) = (reregister, fd) {
            self.actions.push(Action::Interest { id, fd, writable });
        }
        if backlog {
            if self.backlogged.insert(id) && self.next_expiry.is_none() {
                self.next_expiry = Some(now + EXPIRY_TICK);
            }
        } else {
            self.backlogged.remove(&id);
        }
        if resume {
            self.schedule(id);
        }
        written > 0
    }

    /// Looks at the connections holding output for stale watch events
    /// (a receiver that stopped reading is not flushed otherwise).
    fn expire_backlog(&mut self) {
        let ids: Vec<u64> = self.backlogged.iter().copied().collect();
        for id in ids {
            self.flush(id);
        }
        self.next_expiry = (!self.backlogged.is_empty()).then(|| self.now + EXPIRY_TICK);
    }

    /// Closes a connection: a socket is handed to the loop (see
    /// [`State::take_closed`]), a ring's port is unbound and its page
    /// unmapped; its watches and transactions go.
    pub fn close(&mut self, id: u64, reason: &str) {
        self.clear_output(id);
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        self.backlogged.remove(&id);
        match c.transport {
            Transport::Socket { stream, .. } => {
                // The loop deregisters and drops it.
                self.closed.push(stream);
            }
            Transport::Ring(r) => {
                if let Some(x) = &mut self.xen {
                    x.detach(r.domid, r.port);
                }
            }
        }
        self.store.disconnect(ConnId(id));
        self.tx_since.remove(&id);
        if self.live_update.as_ref().is_some_and(|l| l.conn == id) {
            // The session belongs to its connection (as in C).
            self.live_update = None;
            self.release_held();
        }
        self.trace
            .obj(&format!("connection destroyed: {reason}"), id);
        tracing::debug!("connection {id} closed: {reason}");
    }
}

/// Live update: the state handed from one binary to the next
/// ([`crate::live_update`]).
impl State {
    /// The whole state as a migration stream of `version`: GLOBAL with the
    /// listening socket's and the event channel's descriptors, each
    /// connection (a socket by descriptor, a ring by domid and local port;
    /// a broken or parked ring with port 0) with its buffered input (a
    /// held TRANSACTION_START first), unsent output and watches, the tree,
    /// and (version 2) the domain records. Rings are refused when the
    /// event channel could not be taken again after the `exec`. `last`
    /// goes after everything else in its connection's output (the reply
    /// to the live-update command, which the next binary sends); the state
    /// itself is not changed.
    pub fn live_update_stream(
        &self,
        version: xenstore_migrate::Version,
        socket_fd: i32,
        evtchn_fd: i32,
        last: Option<(u64, Message)>,
    ) -> Result<Vec<u8>, crate::live_update::LiveUpdateError> {
        self.write_live_update_stream(Vec::new(), version, socket_fd, evtchn_fd, last, None)
    }

    /// The domains that own nodes but no longer exist in the hypervisor
    /// (none without a Xen interface): a hand-back to C gives their nodes
    /// to the privileged domain ([`crate::live_update::owner_for_c`]).
    pub fn dead_owners(&mut self) -> HashSet<u16> {
        let owners: HashSet<u32> = self.store.db().owners().collect();
        let Some(x) = &mut self.xen else {
            return HashSet::new();
        };
        owners
            .into_iter()
            .filter(|d| !x.domain_exists(*d))
            .filter_map(|d| u16::try_from(d).ok())
            .collect()
    }

    /// Writes the live-update stream to `out` (a buffered state file:
    /// nothing is built in memory first), as [`State::live_update_stream`]
    /// makes it; with `to_c`, the stream for C xenstored 4.17 to 4.21
    /// taking the host back (`live-update` to C's binary): what C's
    /// `read_state_*` need: no record or field C does not know in version
    /// 1 (no unique-id, no watch depth, no DOMAIN record), the local
    /// domain's ring present (C makes its store when that ring is
    /// restored: xenstored_domain.c introduce_domain, setup_structure),
    /// nodes of the `to_c` domains (dead ones) given to the privileged
    /// domain.
    pub fn write_live_update_stream<W: std::io::Write>(
        &self,
        out: W,
        version: xenstore_migrate::Version,
        socket_fd: i32,
        evtchn_fd: i32,
        last: Option<(u64, Message)>,
        to_c: Option<&HashSet<u16>>,
    ) -> Result<W, crate::live_update::LiveUpdateError> {
        use crate::live_update::{input_record, output_record, LiveUpdateError};
        use xenstore_migrate as mig;
        if to_c.is_some() {
            let master = self.cfg.store.store_domid;
            let has_master = self
                .conns
                .values()
                .any(|c| c.ring().is_some_and(|r| r.domid == master && !r.broken));
            if !has_master {
                return Err(LiveUpdateError::State(format!(
                    "C xenstored needs the ring of domain {master} (its store is made when that \
                     ring is restored); this daemon does not serve it"
                )));
            }
        }
        let rings = self.conns.values().filter(|c| c.ring().is_some()).count();
        if rings > 0 {
            if let Some(why) = self.xen.as_ref().and_then(Xen::hand_over_refused) {
                return Err(LiveUpdateError::Rings(rings, why));
            }
        }
        let endian = if cfg!(target_endian = "big") {
            mig::Endian::Big
        } else {
            mig::Endian::Little
        };
        let mut w = mig::Writer::new(out, mig::StreamHeader { version, endian })?;
        w.write_record(&mig::Record::Global(mig::Global {
            socket_fd,
            evtchn_fd,
        }))?;
        let mut ids: Vec<u64> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for (i, id) in ids.iter().enumerate() {
            let Some(c) = self.conns.get(id) else {
                continue;
            };
            let (kind, unique_id) = match &c.transport {
                Transport::Socket { stream, .. } => {
                    let fd = stream.fd().ok_or(LiveUpdateError::NoDescriptor(*id))?;
                    (mig::ConnKind::Socket { fd }, None)
                }
                Transport::Ring(r) => {
                    // A broken or parked ring goes without a port (as C
                    // reads it: ignored until introduced again); a broken
                    // ring's port is unbound before the exec.
                    let evtchn = match (r.broken, r.port) {
                        (false, Some(p)) => p,
                        _ => 0,
                    };
                    let target = self
                        .store
                        .conn_target(ConnId(*id))
                        .and_then(|t| u16::try_from(t).ok());
                    let domid = u16::try_from(r.domid)
                        .map_err(|_| LiveUpdateError::State(format!("domid {}", r.domid)))?;
                    (
                        mig::ConnKind::Ring {
                            domid,
                            target,
                            evtchn,
                        },
                        self.xen
                            .as_ref()
                            .filter(|_| to_c.is_none() || version != mig::Version::V1)
                            .and_then(|x| x.unique_id_of(r.domid)),
                    )
                }
            };
            let stream_id = i as u32 + 1;
            let mut input = input_record(&c.decoder);
            if let Some(m) = &c.held {
                // A TRANSACTION_START held back by the update: the first
                // request the next binary handles.
                input.requests.insert(
                    0,
                    mig::Message {
                        msg_type: m.header.msg_type,
                        req_id: m.header.req_id,
                        tx_id: m.header.tx_id,
                        payload: m.payload.clone(),
                    },
                );
            }
            let mut output = output_record(&c.out);
            if let Some((_, m)) = last.as_ref().filter(|(l, _)| l == id) {
                output.messages.push(xenstore_migrate::Message {
                    msg_type: m.header.msg_type,
                    req_id: m.header.req_id,
                    tx_id: m.header.tx_id,
                    payload: m.payload.clone(),
                });
            }
            w.write_record(&mig::Record::Connection(mig::Connection {
                conn_id: stream_id,
                kind,
                input,
                output,
                unique_id,
            }))?;
            for mut wr in self.store.watch_records(ConnId(*id), stream_id) {
                if to_c.is_some() && version == mig::Version::V1 {
                    wr.depth = None;
                }
                w.write_record(&mig::Record::Watch(wr))?;
            }
        }
        let priv_domid = u16::try_from(self.cfg.store.priv_domid).unwrap_or(0);
        let mut reassigned = 0;
        self.store.write_node_records(&mut w, |owner| match to_c {
            Some(dead) => {
                let new = crate::live_update::owner_for_c(owner, dead, priv_domid);
                reassigned += usize::from(new != owner);
                new
            }
            None => owner,
        })?;
        if let (Some(dead), 1..) = (to_c, reassigned) {
            tracing::warn!(
                "live update to C: {reassigned} node(s) owned by domains that no longer exist \
                 ({dead:?}) handed over as domain {priv_domid}'s"
            );
        }
        if version == mig::Version::V2 {
            for d in self.store.domain_records() {
                w.write_record(&mig::Record::Domain(d))?;
            }
        }
        Ok(w.finish()?)
    }

    /// Takes over the state a previous binary handed over: each socket
    /// connection through `adopt` (its descriptor), each ring mapped again
    /// on its port (still bound through the inherited event channel), with
    /// their input, output and watches; the tree; the domain records. A
    /// ring that cannot be mapped again leaves its domain introduced with
    /// no connection (its death is reported, as C does). Call
    /// [`State::after_live_update`] once the loop polls everything.
    pub fn restore_live_update(
        &mut self,
        bytes: &[u8],
        tree: xenstore_store::migrate::RestoredTree,
        adopt: &mut dyn FnMut(i32) -> io::Result<Box<dyn Stream>>,
    ) -> Result<(), crate::live_update::LiveUpdateError> {
        use crate::live_update::{restore_input, restore_output, LiveUpdateError};
        use xenstore_migrate as mig;
        // The committed nodes are in `tree` already (read by
        // `check_state`): here they are passed over, borrowed.
        let mut others = Vec::new();
        let mut reader = mig::Reader::new(bytes)?;
        while let Some(item) = reader.next_item()? {
            match item {
                mig::Item::Record(mig::Record::Node(_)) | mig::Item::Node(_) => {}
                mig::Item::Record(r) => others.push(r),
            }
        }
        let rings = others
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    mig::Record::Connection(mig::Connection {
                        kind: mig::ConnKind::Ring { .. },
                        ..
                    })
                )
            })
            .count();
        if rings > 0 && self.xen.is_none() {
            return Err(LiveUpdateError::Rings(
                rings,
                "this daemon has no Xen interface".into(),
            ));
        }
        // The domain records first: made before the nodes, so that the
        // nodes' permissions naming them are not taken for stale ones (a
        // record younger than a node); their quotas bound the watches
        // restored below, their features are the rings'.
        let mut with_records = HashSet::new();
        for r in &others {
            match r {
                mig::Record::Domain(d) => {
                    self.store.restore_domain(d);
                    with_records.insert(u32::from(d.domid));
                }
                mig::Record::Connection(mig::Connection {
                    kind: mig::ConnKind::Ring { domid, .. },
                    ..
                }) => self.store.restore_ring(u32::from(*domid), None, None),
                _ => {}
            }
        }
        self.store.install_tree(tree);
        // Stream connection id -> ours (`None`: a ring not mapped again).
        let mut by_stream_id: HashMap<u32, Option<u64>> = HashMap::new();
        for r in &others {
            match r {
                mig::Record::Connection(c) => {
                    let id = match c.kind {
                        mig::ConnKind::Socket { fd } => {
                            let s = adopt(fd)
                                .map_err(|source| LiveUpdateError::Adopt { fd, source })?;
                            Some(self.add_socket(s))
                        }
                        mig::ConnKind::Ring {
                            domid,
                            target,
                            evtchn,
                        } => {
                            let domid = u32::from(domid);
                            let features = if with_records.contains(&domid) {
                                Some(self.features_of(domid))
                            } else {
                                None
                            };
                            self.restore_ring(
                                domid,
                                (evtchn != 0).then_some(evtchn),
                                target.map(u32::from),
                                c.unique_id,
                                features,
                            )
                        }
                    };
                    let now = self.now;
                    if let Some(conn) = id.and_then(|id| self.conns.get_mut(&id)) {
                        let id = conn.id.0;
                        restore_input(&c.input, &mut conn.decoder);
                        restore_output(&c.output, &mut conn.out, now);
                        let charged = conn.domid().map(|d| (d, conn.out.bytes()));
                        if !conn.dirty {
                            conn.dirty = true;
                            self.dirty.push(id);
                        }
                        if let Some((d, bytes)) = charged.filter(|(_, b)| *b > 0) {
                            // Queued for a guest: charged to its memory,
                            // as when it was queued.
                            self.store.charge_memory(d, bytes as i64);
                            if let Some(conn) = self.conns.get_mut(&id) {
                                conn.out.charge_all();
                            }
                        }
                    }
                    by_stream_id.insert(c.conn_id, id);
                }
                mig::Record::Watch(w) => match by_stream_id.get(&w.conn_id) {
                    Some(Some(id)) => {
                        // A watch this daemon refuses (C's path rules
                        // differ slightly) is dropped alone: the rest of
                        // the state goes on.
                        if let Err(e) = self.store.restore_watch(ConnId(*id), w) {
                            tracing::warn!("live update: watch not taken over: {e}");
                        }
                    }
                    Some(None) => {}
                    None => {
                        return Err(LiveUpdateError::State(format!(
                            "watch of unknown connection {}",
                            w.conn_id
                        )))
                    }
                },
                _ => {}
            }
        }
        Ok(())
    }

    /// One ring handed over: mapped again, its domain introduced with it.
    /// Returns its connection, or `None` if the page could not be mapped
    /// (the domain stays introduced, with no connection).
    fn restore_ring(
        &mut self,
        domid: u32,
        port: Option<u32>,
        target: Option<u32>,
        unique_id: Option<u64>,
        features: Option<u32>,
    ) -> Option<u64> {
        let conn = self.new_conn_id();
        let local = (domid == self.cfg.store.store_domid)
            .then_some(self.cfg.xen.as_ref())
            .flatten()
            .filter(|xc| xc.xsd_kva.exists())
            .cloned();
        let x = self.xen.as_mut()?;
        match x.restore_ring(domid, port, local.as_ref(), unique_id, 0, conn) {
            Ok(mut link) => {
                // What was advertised: the domain record's (version 2),
                // else what the page says, within what this daemon knows.
                link.features = features.unwrap_or_else(|| {
                    use xenstore_proto::ring::RingPage;
                    link.page.load_u32(xenstore_proto::ring::SERVER_FEATURES)
                }) & SUPPORTED_FEATURES;
                self.store.connect(conn, ConnKind::Domain(domid));
                self.store.restore_ring(domid, Some(conn), target);
                let privileged = self.store.is_privileged(conn);
                self.conns.insert(
                    conn.0,
                    Box::new(Connection::new(conn, Transport::Ring(link), privileged)),
                );
                self.trace.obj(
                    &format!("ring connection of domain {domid} (taken over)"),
                    conn.0,
                );
                tracing::info!(
                    "live update: domain {domid} served again (port {})",
                    port.map_or_else(|| "none".to_string(), |p| p.to_string())
                );
                Some(conn.0)
            }
            Err(e) => {
                tracing::warn!("live update: domain {domid}: {e}: its ring is not served");
                if let Some(p) = port {
                    x.unbind_port(p);
                }
                if local.is_none() {
                    x.restore_unmapped(domid, unique_id);
                }
                self.store.restore_ring(domid, None, None);
                None
            }
        }
    }

    /// The loop polls everything taken over: every ring port is unmasked
    /// once (one pending at the exec would stay masked), every ring is
    /// read and its guest signalled (it may have written during the
    /// switch, or wait for room), and every domain is looked at once
    /// (deaths and shutdowns during the switch were not reported), as C
    /// does at its `-U` start-up.
    pub fn after_live_update(&mut self) {
        let rings: Vec<(u64, Option<u32>)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| c.ring().map(|r| (*id, r.port.filter(|_| !r.broken))))
            .collect();
        for (id, port) in rings {
            if let (Some(p), Some(x)) = (port, &mut self.xen) {
                x.unmask(p);
                x.notify(p);
            }
            self.schedule(id);
        }
        let store = &self.store;
        let changes = match &mut self.xen {
            Some(x) => x.check_all(&|d| store.names_domain(d), &|| store.named_domains()),
            None => return,
        };
        if !changes.is_empty() {
            tracing::info!(
                "live update: {} domain(s) changed during the switch",
                changes.len()
            );
        }
        self.apply_changes(changes);
    }

    /// Right before the `exec` of a live update, after the stream is
    /// written: broken rings' ports are unbound (they are not handed
    /// over), the event channel is kept across the `exec`, the
    /// domain-state backend's ports are unbound. Returns the descriptors
    /// of the event channel kept open, if any.
    pub fn before_exec(&mut self) -> io::Result<Option<RawFd>> {
        let Some(x) = &mut self.xen else {
            return Ok(None);
        };
        for c in self.conns.values_mut() {
            if let Some(r) = c.ring_mut() {
                if r.broken {
                    if let Some(p) = r.port.take() {
                        x.unbind_port(p);
                    }
                }
            }
        }
        x.before_exec()?;
        Ok(Some(x.evtchn_raw_fd()))
    }

    /// The `exec` of a live update failed: the event channel is as
    /// before [`State::before_exec`] (broken rings stay without a port).
    pub fn exec_failed(&mut self) {
        if let Some(x) = &mut self.xen {
            x.exec_failed();
        }
    }
}

/// Live update's session (`CONTROL live-update`, as C xenstored speaks it).
impl State {
    fn live_update_started(&self) -> bool {
        self.live_update.as_ref().is_some_and(|l| l.start.is_some())
    }

    /// Serves connections holding a TRANSACTION_START again.
    fn release_held(&mut self) {
        let held: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.held.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in held {
            self.schedule(id);
        }
    }

    fn live_update_command(&mut self, id: u64, msg: &Message) -> Outcome {
        use crate::live_update::{Command, Session, Start};
        let h = msg.header;
        let reply = |m: Message| Outcome {
            out: vec![(ConnId(id), m)],
            effects: Vec::new(),
        };
        let text = |s: &str| {
            let mut p = s.as_bytes().to_vec();
            p.push(0);
            Message::reply(&h, p)
        };
        if let Err(e) = self.store.gate(ConnId(id), &h) {
            return reply(Message::error(&h, e));
        }
        let words = args::strings(&msg.payload);
        let cmd = match Command::parse(words.get(1..).unwrap_or_default()) {
            Ok(c) => c,
            Err(e) => return reply(Message::error(&h, e)),
        };
        let mine = self.live_update.as_ref().is_some_and(|l| l.conn == id);
        let answer = match cmd {
            Command::Binary(path) => {
                if self.live_update.is_some() {
                    "live-update session already active."
                } else {
                    match crate::live_update::check_binary(&path) {
                        Err(why) => why,
                        Ok(()) => {
                            tracing::info!("live-update: binary {}", path.display());
                            self.live_update = Some(Session::new(id, path));
                            "OK"
                        }
                    }
                }
            }
            Command::Cmdline(line) => match &mut self.live_update {
                Some(l) if mine => {
                    tracing::info!("live-update: command line {line}");
                    l.cmdline = Some(line);
                    "OK"
                }
                _ => "Not in live-update session.",
            },
            Command::Abort => {
                if self.live_update.take().is_some() {
                    tracing::info!("live-update: abort");
                    self.release_held();
                    "OK"
                } else {
                    "No live-update session active."
                }
            }
            Command::Start {
                force,
                timeout,
                version,
                version_given,
            } => match &mut self.live_update {
                Some(l) if mine => match version {
                    None => "Migration stream version not supported.",
                    Some(version) => {
                        tracing::info!(
                            "live-update: start, force={force}, timeout={}s",
                            timeout.as_secs()
                        );
                        // The reply waits for the switch (the next binary
                        // sends it) or for the failure.
                        l.start = Some(Start {
                            request: h,
                            force,
                            timeout,
                            version,
                            version_given,
                            since: self.now,
                        });
                        return Outcome::default();
                    }
                },
                _ => "Not in live-update session.",
            },
        };
        reply(text(answer))
    }

    /// Each round: whether a started live update may go now, or has waited
    /// too long for transactions.
    fn check_live_update(&mut self) {
        let Some(l) = &mut self.live_update else {
            return;
        };
        let Some(st) = &l.start else { return };
        if l.going {
            return;
        }
        let now = self.now;
        let total = self.tx_since.len();
        let long = self
            .tx_since
            .values()
            .filter(|t| now.saturating_duration_since(**t) >= st.timeout)
            .count();
        // As C: no transaction open, or all of them older than the
        // timeout and the update forced.
        let allowed = total == 0 || (st.force && long == total);
        if allowed {
            l.going = true;
            let go = crate::live_update::Go {
                conn: l.conn,
                request: st.request,
                binary: l.binary.clone(),
                cmdline: l.cmdline.clone(),
                version: st.version,
                version_given: st.version_given,
            };
            self.actions.push(Action::LiveUpdate(go));
            return;
        }
        if now.saturating_duration_since(st.since) < st.timeout || st.force {
            return;
        }
        let mut why = String::new();
        let mut ids: Vec<(&u64, &Instant)> = self.tx_since.iter().collect();
        ids.sort();
        for (id, t) in ids {
            let secs = now.saturating_duration_since(*t).as_secs();
            if secs >= st.timeout.as_secs() {
                if why.is_empty() {
                    why.push_str("Domains with long running transactions:");
                }
                let domid = self
                    .conns
                    .get(id)
                    .and_then(|c| c.domid())
                    .unwrap_or(self.cfg.store.store_domid);
                why.push_str(&format!("\nDomain {domid}: {secs} s"));
            }
        }
        if why.is_empty() {
            why.push_str("Overlapping transactions");
        }
        self.live_update_failed(&why);
    }

    /// A started live update did not happen: the requester gets `why` as
    /// the reply to its `-s`, the session ends and held transactions go on.
    pub fn live_update_failed(&mut self, why: &str) {
        let Some(l) = self.live_update.take() else {
            return;
        };
        tracing::warn!("live-update failed: {why}");
        if let Some(st) = l.start {
            let mut p = why.as_bytes().to_vec();
            p.push(0);
            self.queue(l.conn, Message::reply(&st.request, p), None);
        }
        self.release_held();
    }
}
