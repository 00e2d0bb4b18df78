//! The event loop: one thread, one epoll set (mio), O(1) work per event.
//!
//! * The listening socket, the signal pipe and every client connection are
//!   sources of one `Poll`. Readiness is edge-triggered: a connection that
//!   used up its read budget for this turn goes on the `ready` queue and is
//!   served again next turn without waiting for a new edge, so one busy
//!   client cannot starve the others.
//! * Requests are pipelined: every whole message in the input is handled in
//!   order, and all replies and events produced are written back with
//!   vectored writes.
//! * Each connection has an output queue. While it holds more than
//!   [`OUT_HIGH`] bytes the connection's requests are not read (its own
//!   replies are what fills it); watch events from others are still queued,
//!   and a connection whose queue passes [`OUT_LIMIT`] is dropped, since it
//!   is not reading.
//! * A header announcing more than 4096 bytes closes the socket at once, as
//!   C xenstored does; every other connection goes on.

use crate::control;
use crate::trace::Trace;
use crate::xen::{Change, Xen, XenConfig, RING_OUT_HIGH};
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Registry, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xenstore_proto::ring::{ERROR_PROTO, ERROR_RINGIDX};
use xenstore_proto::{args, number, Decoder, Message, MsgType, XsError};
use xenstore_store::{ConnId, ConnKind, Effect, Outcome, Store, StoreConfig, SUPPORTED_FEATURES};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const EVTCHN: Token = Token(2);
/// Pending ports handled per turn before sockets get served again.
const PORTS_PER_TURN: usize = 256;
const FIRST_CONN: u64 = 16;

/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per connection per turn before others get served.
const READS_PER_TURN: usize = 4;
/// How long to wait before accepting again after running out of
/// descriptors, when no connection closes meanwhile.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Connections accepted per turn before the others get served.
const ACCEPTS_PER_TURN: usize = 32;
/// Output queued above which a connection's requests are not read.
pub const OUT_HIGH: usize = 1 << 20;
/// Output queued above which a connection is dropped.
pub const OUT_LIMIT: usize = 64 << 20;
/// Most buffers in one vectored write.
const IOV_MAX: usize = 64;

/// What the server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Path of the Unix socket.
    pub socket: PathBuf,
    /// Store configuration (domids, quotas).
    pub store: StoreConfig,
    /// Access log.
    pub trace_file: Option<PathBuf>,
    /// Trace switches to apply (`+io`, `-obj`, ...).
    pub trace_control: Vec<String>,
    /// Base directory for relative file names in CONTROL commands.
    pub file_base: PathBuf,
    /// Events for unprivileged receivers not sent within this time are
    /// dropped (`None`: never).
    pub watch_event_timeout: Option<Duration>,
    /// Serve guests through these Xen interfaces (`None`: socket only).
    pub xen: Option<XenConfig>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another daemon answers on the socket.
    #[error("another xenstored is already listening on {0}")]
    InUse(PathBuf),
    /// Could not bind or set up the socket.
    #[error("cannot listen on {0}: {1}")]
    Socket(PathBuf, io::Error),
    /// Could not open the trace file.
    #[error("cannot open trace file: {0}")]
    Trace(io::Error),
    /// A trace switch does not exist.
    #[error("unknown trace switch {0:?} (known: +io, -io, +obj, -obj)")]
    TraceSwitch(String),
    /// Event loop set-up failed.
    #[error("event loop: {0}")]
    Poll(io::Error),
    /// The Xen configuration asked for cannot work.
    #[error("{0}")]
    Xen(crate::xen::OpenError),
}

struct Queued {
    bytes: Vec<u8>,
    at: Instant,
    event: bool,
}

struct Client {
    stream: UnixStream,
    decoder: Decoder,
    out: VecDeque<Queued>,
    /// Bytes of the front buffer already written.
    out_pos: usize,
    out_bytes: usize,
    want_write: bool,
    input_paused: bool,
    in_ready: bool,
    in_dirty: bool,
    privileged: bool,
}

/// The daemon's event loop and everything it serves.
pub struct Server {
    poll: Poll,
    listener: UnixListener,
    signals: Signals,
    clients: HashMap<u64, Client>,
    store: Store,
    trace: Trace,
    next_id: u64,
    ready: VecDeque<u64>,
    dirty: Vec<u64>,
    cfg: ServerConfig,
    stop: bool,
    /// The listener used up its accept budget: more may be waiting.
    accept_pending: bool,
    /// Accepting failed for want of descriptors (EMFILE/ENFILE): retry
    /// when a connection closes, or at this time at the latest.
    accept_blocked: Option<Instant>,
    /// Guests, when a Xen interface is available.
    xen: Option<Xen>,
    /// The event channel used up its budget: more may be pending.
    evtchn_pending: bool,
    /// Rings with output to write.
    ring_dirty: Vec<u32>,
    on_hangup: Option<Box<dyn FnMut()>>,
}

/// Binds the socket: refuses if a live daemon answers on it, removes a
/// stale socket file, creates the directory, sets mode 0600.
fn bind(path: &PathBuf) -> Result<UnixListener, StartError> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(StartError::InUse(path.clone()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StartError::Socket(path.clone(), e))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StartError::Socket(path.clone(), e)),
    }
    let l = UnixListener::bind(path).map_err(|e| StartError::Socket(path.clone(), e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| StartError::Socket(path.clone(), e))?;
    Ok(l)
}

impl Server {
    /// Binds the socket and prepares the loop.
    pub fn new(cfg: ServerConfig) -> Result<Server, StartError> {
        let mut trace = Trace::open(cfg.trace_file.as_deref()).map_err(StartError::Trace)?;
        for sw in &cfg.trace_control {
            let (on, name) = match sw.split_at_checked(1) {
                Some(("+", n)) => (true, n),
                Some(("-", n)) => (false, n),
                _ => return Err(StartError::TraceSwitch(sw.clone())),
            };
            let s = crate::trace::Switch::from_name(name)
                .ok_or_else(|| StartError::TraceSwitch(sw.clone()))?;
            trace.set(s, on);
        }
        let poll = Poll::new().map_err(StartError::Poll)?;
        let mut listener = bind(&cfg.socket)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(StartError::Poll)?;
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(StartError::Poll)?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(StartError::Poll)?;
        let xen = match &cfg.xen {
            None => None,
            Some(xc) => match Xen::open(xc) {
                Ok(x) => {
                    use std::os::fd::AsRawFd;
                    let fd = x.fd().as_raw_fd();
                    poll.registry()
                        .register(&mut mio::unix::SourceFd(&fd), EVTCHN, Interest::READABLE)
                        .map_err(StartError::Poll)?;
                    tracing::info!(
                        "Xen interfaces open: serving guests (domain state: {})",
                        x.domain_state()
                    );
                    Some(x)
                }
                Err(e @ crate::xen::OpenError::DomainState(_)) => {
                    return Err(StartError::Xen(e));
                }
                Err(crate::xen::OpenError::NoXen(e)) => {
                    tracing::warn!("no Xen interface ({e}): serving the socket only");
                    None
                }
            },
        };
        let mut srv = Server {
            poll,
            listener,
            signals,
            clients: HashMap::new(),
            store: Store::new(cfg.store.clone()),
            trace,
            next_id: FIRST_CONN,
            ready: VecDeque::new(),
            dirty: Vec::new(),
            cfg,
            stop: false,
            accept_pending: false,
            accept_blocked: None,
            xen,
            evtchn_pending: false,
            ring_dirty: Vec::new(),
            on_hangup: None,
        };
        srv.attach_local_ring();
        srv.adopt_existing_domains();
        Ok(srv)
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
            let Some(x) = &mut self.xen else { return };
            let conn = ConnId(self.next_id);
            let features = self
                .store
                .domain(domid)
                .map_or(SUPPORTED_FEATURES, |d| d.features);
            match x.adopt(domid, features, conn) {
                Ok(Some(port)) => {
                    self.next_id += 1;
                    self.store.connect(conn, ConnKind::Domain(domid));
                    let _ = self.store.introduce_domain(domid, conn);
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
        let domid = self.cfg.store.store_domid;
        let conn = ConnId(self.next_id);
        let features = self
            .store
            .domain(domid)
            .map_or(SUPPORTED_FEATURES, |d| d.features);
        match x.attach_local(xc, domid, features, conn) {
            Ok(port) => {
                self.next_id += 1;
                self.store.connect(conn, ConnKind::Domain(domid));
                let _ = self.store.introduce_domain(domid, conn);
                tracing::info!("serving the local domain's ring (port {port})");
            }
            Err(e) => tracing::warn!("the local domain's ring is not served: {e}"),
        }
    }

    /// Something to run on SIGHUP besides reopening the trace file (the
    /// daemon log).
    pub fn on_hangup(&mut self, f: Box<dyn FnMut()>) {
        self.on_hangup = Some(f);
    }

    /// Serves until SIGTERM or SIGINT; then closes every connection and
    /// removes the socket.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while !self.stop {
            let timeout = if self.ready.is_empty() && !self.accept_pending && !self.evtchn_pending {
                self.accept_blocked
                    .map(|t| t.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if self.accept_blocked.is_some_and(|t| Instant::now() >= t) {
                self.accept_pending = true;
            }
            if self.accept_pending {
                self.accept();
            }
            if self.evtchn_pending {
                self.on_evtchn();
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    SIGNALS => self.on_signals(),
                    EVTCHN => self.on_evtchn(),
                    Token(t) => {
                        let id = t as u64;
                        if ev.is_writable() {
                            self.flush(id);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.mark_ready(id);
                        }
                    }
                }
            }
            for _ in 0..self.ready.len() {
                if let Some(id) = self.ready.pop_front() {
                    self.turn(id);
                }
            }
            self.flush_dirty();
        }
        self.shutdown();
        Ok(())
    }

    fn shutdown(&mut self) {
        let ids: Vec<u64> = self.clients.keys().copied().collect();
        for id in ids {
            self.close(id, "daemon stopping");
        }
        let _ = std::fs::remove_file(&self.cfg.socket);
        tracing::info!("stopped");
    }

    fn on_signals(&mut self) {
        let sigs: Vec<i32> = self.signals.pending().collect();
        for s in sigs {
            match s {
                SIGTERM | SIGINT => {
                    tracing::info!("signal {s}: stopping");
                    self.stop = true;
                }
                SIGHUP => {
                    if let Err(e) = self.trace.reopen() {
                        tracing::warn!("cannot reopen trace file: {e}");
                    }
                    if let Some(f) = &mut self.on_hangup {
                        f();
                    }
                    tracing::info!("SIGHUP: logs reopened");
                }
                _ => {}
            }
        }
    }

    /// Accepts pending connections, at most [`ACCEPTS_PER_TURN`] per turn
    /// so that clients reconnecting in a loop cannot starve the others.
    fn accept(&mut self) {
        self.accept_pending = false;
        let was_blocked = self.accept_blocked.take().is_some();
        for _ in 0..ACCEPTS_PER_TURN {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(id as usize),
                        Interest::READABLE,
                    ) {
                        tracing::warn!("cannot register connection: {e}");
                        continue;
                    }
                    self.store.connect(ConnId(id), ConnKind::Socket);
                    let privileged = self.store.is_privileged(ConnId(id));
                    self.clients.insert(
                        id,
                        Client {
                            stream,
                            decoder: Decoder::new(),
                            out: VecDeque::new(),
                            out_pos: 0,
                            out_bytes: 0,
                            want_write: false,
                            input_paused: false,
                            in_ready: false,
                            in_dirty: false,
                            privileged,
                        },
                    );
                    self.trace.obj("socket connection created", id);
                    self.mark_ready(id);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Typically EMFILE: the backlog waits until a
                    // descriptor frees (a connection closes) or the retry
                    // time comes; the listener will not fire again for
                    // clients already waiting.
                    if !was_blocked {
                        tracing::warn!("accept: {e}: clients wait until descriptors free");
                    }
                    self.accept_blocked = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
        self.accept_pending = true;
    }

    fn mark_ready(&mut self, id: u64) {
        if let Some(c) = self.clients.get_mut(&id) {
            if !c.in_ready {
                c.in_ready = true;
                self.ready.push_back(id);
            }
        }
    }

    /// One turn of a connection: handle buffered requests, then read.
    fn turn(&mut self, id: u64) {
        match self.clients.get_mut(&id) {
            Some(c) => c.in_ready = false,
            None => return,
        }
        if !self.process_input(id) {
            return;
        }
        let mut buf = vec![0u8; READ_CHUNK];
        for _ in 0..READS_PER_TURN {
            let Some(c) = self.clients.get_mut(&id) else {
                return;
            };
            if c.input_paused {
                return;
            }
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    self.close(id, "end of file");
                    return;
                }
                Ok(n) => {
                    c.decoder.feed(&buf[..n]);
                    if !self.process_input(id) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(id, &format!("read error: {e}"));
                    return;
                }
            }
        }
        // Budget used up: there may be more to read.
        self.mark_ready(id);
    }

    /// Handles every whole request buffered for `id`, unless its output
    /// queue is full. Returns false if the connection was closed.
    fn process_input(&mut self, id: u64) -> bool {
        loop {
            let Some(c) = self.clients.get_mut(&id) else {
                return false;
            };
            if c.out_bytes >= OUT_HIGH {
                c.input_paused = true;
                return true;
            }
            match c.decoder.next_message() {
                Ok(Some(m)) => self.dispatch(id, m),
                Ok(None) => return true,
                Err(e) => {
                    self.close(id, &format!("protocol error: {e}"));
                    return false;
                }
            }
        }
    }

    fn dispatch(&mut self, id: u64, msg: Message) {
        self.trace.io("IN", id, &msg);
        let outcome = match msg.kind() {
            Some(MsgType::Control) => self.control(id, &msg),
            Some(MsgType::Introduce) => self.introduce(id, &msg),
            _ => {
                let oracle = crate::xen::Oracle::new(self.xen.as_mut());
                self.store.handle(ConnId(id), &msg, &oracle)
            }
        };
        self.deliver(outcome);
    }

    fn deliver(&mut self, outcome: Outcome) {
        for (cid, m) in outcome.out {
            self.queue(cid.0, m);
        }
        for e in outcome.effects {
            match e {
                Effect::DomainReleased { domid, conn } => {
                    tracing::info!("domain {domid} released");
                    if let Some(x) = &mut self.xen {
                        // Unbinds the port and unmaps the page.
                        x.detach(domid);
                    }
                    if let Some(c) = conn {
                        self.close(c.0, "domain released");
                    }
                }
            }
        }
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
    /// gets its event channel re-bound and its connection reset. Without a
    /// Xen interface the mapping cannot happen: `EINVAL`, as C answers
    /// when the grant map fails.
    fn introduce(&mut self, id: u64, msg: &Message) -> Outcome {
        let h = msg.header;
        let mut out = Outcome::default();
        let result = self.store.gate(ConnId(id), &h).and_then(|_| {
            let a = args::strings(&msg.payload);
            if a.len() < 3 {
                return Err(XsError::Einval);
            }
            let domid = number::parse_domid(a[0])?;
            let port = u32::try_from(number::atoi(a[2])).map_err(|_| XsError::Einval)?;
            if port == 0 {
                return Err(XsError::Einval);
            }
            let Some(x) = &mut self.xen else {
                tracing::warn!("INTRODUCE {domid} port {port}: no hypervisor interface");
                return Err(XsError::Einval);
            };
            let existing = x.conn_of_domain(domid);
            let conn = existing.unwrap_or_else(|| {
                let c = ConnId(self.next_id);
                self.next_id += 1;
                c
            });
            let features = self
                .store
                .domain(domid)
                .map_or(SUPPORTED_FEATURES, |d| d.features);
            x.attach(domid, port, features, conn)?;
            if existing.is_none() {
                self.store.connect(conn, ConnKind::Domain(domid));
                self.trace
                    .obj(&format!("ring connection of domain {domid}"), conn.0);
            }
            out.out.extend(self.store.introduce_domain(domid, conn));
            Ok(())
        });
        out.out.push((
            ConnId(id),
            match result {
                Ok(()) => Message::ok(&h),
                Err(e) => Message::error(&h, e),
            },
        ));
        out
    }

    /// The event channel is readable: serve pending ports (a budget per
    /// turn, so sockets are not starved by a notification storm).
    fn on_evtchn(&mut self) {
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
            } else {
                self.ring_turn(port);
            }
            if let Some(x) = &mut self.xen {
                x.unmask(port);
            }
        }
        self.evtchn_pending = true;
    }

    /// `VIRQ_DOM_EXC`: apply what the changed-domain feed reports.
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
                        self.queue(cid.0, m);
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
                    self.deliver(o);
                }
            }
        }
        if generic {
            for (cid, m) in self.store.release_domain_generic() {
                self.queue(cid.0, m);
            }
        }
    }

    /// A guest's port fired: read its requests, handle them, write replies.
    /// Reading and handling alternate until the ring is empty or the
    /// guest is throttled.
    fn ring_turn(&mut self, port: u32) {
        let mut read = 0;
        loop {
            // Room first: the guest may have consumed replies.
            self.flush_ring(port);
            let n = self.ring_read(port);
            read += n;
            let handled = self.ring_handle(port);
            if n == 0 && handled == 0 {
                break;
            }
        }
        if !self.flush_ring(port) && read > 0 {
            // Nothing written, but we consumed requests: the guest may be
            // waiting for room.
            if let Some(x) = &mut self.xen {
                x.notify(port);
            }
        }
    }

    /// Reads a ring's requests into its decoder (unless throttled).
    fn ring_read(&mut self, port: u32) -> usize {
        let Some(r) = self.xen.as_mut().and_then(|x| x.ring_mut(port)) else {
            return 0;
        };
        if r.broken {
            return 0;
        }
        match r.read_in() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("domain {}: {e}: connection ignored", r.domid);
                let conn = r.conn;
                r.break_with(ERROR_RINGIDX);
                self.store.reset_connection(conn);
                0
            }
        }
    }

    /// Handles a ring's decoded requests while its output has room.
    /// Returns how many were handled.
    fn ring_handle(&mut self, port: u32) -> usize {
        let mut handled = 0;
        loop {
            let next = {
                let Some(r) = self.xen.as_mut().and_then(|x| x.ring_mut(port)) else {
                    return handled;
                };
                if r.broken || r.out.len() >= RING_OUT_HIGH {
                    break;
                }
                match r.decoder.next_message() {
                    Ok(Some(m)) => Ok(Some((r.conn, m))),
                    Ok(None) => Ok(None),
                    Err(e) => Err((r.conn, r.domid, e)),
                }
            };
            match next {
                Ok(Some((conn, m))) => {
                    self.dispatch(conn.0, m);
                    handled += 1;
                }
                Ok(None) => break,
                Err((conn, domid, e)) => {
                    tracing::warn!("domain {domid}: {e}: connection ignored");
                    if let Some(r) = self.xen.as_mut().and_then(|x| x.ring_mut(port)) {
                        r.break_with(ERROR_PROTO);
                    }
                    self.store.reset_connection(conn);
                    break;
                }
            }
        }
        handled
    }

    /// Writes queued output into a ring; true if the guest was notified.
    fn flush_ring(&mut self, port: u32) -> bool {
        let Some(x) = &mut self.xen else {
            return false;
        };
        let Some(r) = x.ring_mut(port) else {
            return false;
        };
        if r.broken {
            return false;
        }
        match r.write_out() {
            Ok(0) => false,
            Ok(_) => {
                x.notify(port);
                true
            }
            Err(e) => {
                tracing::warn!("domain {}: {e}: connection ignored", r.domid);
                let conn = r.conn;
                r.break_with(ERROR_RINGIDX);
                self.store.reset_connection(conn);
                false
            }
        }
    }

    fn queue(&mut self, id: u64, m: Message) {
        self.trace.io("OUT", id, &m);
        if let Some(x) = &mut self.xen {
            if let Some(port) = x.port_of(ConnId(id)) {
                if let Some(r) = x.ring_mut(port) {
                    if !r.broken && r.push(&m) {
                        self.ring_dirty.push(port);
                    }
                }
                return;
            }
        }
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let event = m.kind() == Some(MsgType::WatchEvent);
        c.out_bytes += m.wire_len();
        c.out.push_back(Queued {
            bytes: m.encode(),
            at: Instant::now(),
            event,
        });
        if !c.in_dirty {
            c.in_dirty = true;
            self.dirty.push(id);
        }
        if c.out_bytes > OUT_LIMIT {
            self.close(id, "output queue overflow: client is not reading");
        }
    }

    fn flush_dirty(&mut self) {
        let mut rings = std::mem::take(&mut self.ring_dirty);
        rings.sort_unstable();
        rings.dedup();
        for port in rings {
            self.flush_ring(port);
        }
        while let Some(id) = self.dirty.pop() {
            if let Some(c) = self.clients.get_mut(&id) {
                c.in_dirty = false;
            }
            self.flush(id);
        }
    }

    /// Writes as much queued output as the socket takes.
    fn flush(&mut self, id: u64) {
        let timeout = self.cfg.watch_event_timeout;
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if let (Some(t), false) = (timeout, c.privileged) {
            drop_stale_events(c, t);
        }
        let mut failed = None;
        while !c.out.is_empty() {
            let mut iov = Vec::with_capacity(IOV_MAX.min(c.out.len()));
            for (i, q) in c.out.iter().take(IOV_MAX).enumerate() {
                let start = if i == 0 { c.out_pos } else { 0 };
                iov.push(IoSlice::new(&q.bytes[start..]));
            }
            match c.stream.write_vectored(&iov) {
                Ok(0) => {
                    failed = Some("write returned 0".to_owned());
                    break;
                }
                Ok(mut n) => {
                    c.out_bytes -= n;
                    while n > 0 {
                        let Some(front) = c.out.front() else { break };
                        let left = front.bytes.len() - c.out_pos;
                        if n >= left {
                            n -= left;
                            c.out_pos = 0;
                            c.out.pop_front();
                        } else {
                            c.out_pos += n;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(format!("write error: {e}"));
                    break;
                }
            }
        }
        if let Some(reason) = failed {
            self.close(id, &reason);
            return;
        }
        let want_write = !c.out.is_empty();
        if want_write != c.want_write {
            c.want_write = want_write;
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = reregister(self.poll.registry(), &mut c.stream, id, interest) {
                self.close(id, &format!("poll: {e}"));
                return;
            }
        }
        if c.input_paused && c.out_bytes < OUT_HIGH / 2 {
            c.input_paused = false;
            self.mark_ready(id);
        }
    }

    fn close(&mut self, id: u64, reason: &str) {
        if let Some(mut c) = self.clients.remove(&id) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            drop(c);
            if self.accept_blocked.is_some() {
                // A descriptor is free: the backlog may be served.
                self.accept_pending = true;
            }
            self.store.disconnect(ConnId(id));
            self.trace
                .obj(&format!("connection destroyed: {reason}"), id);
            tracing::debug!("connection {id} closed: {reason}");
        }
    }
}

fn reregister(r: &Registry, s: &mut UnixStream, id: u64, i: Interest) -> io::Result<()> {
    r.reregister(s, Token(id as usize), i)
}

/// Drops watch events that waited longer than `t` and have not started
/// going out (the front buffer may be half written).
fn drop_stale_events(c: &mut Client, t: Duration) {
    let now = Instant::now();
    let skip = usize::from(c.out_pos > 0);
    let before = c.out.len();
    let mut removed_bytes = 0;
    let mut i = 0;
    c.out.retain(|q| {
        let keep = i < skip || !q.event || now.duration_since(q.at) < t;
        if !keep {
            removed_bytes += q.bytes.len();
        }
        i += 1;
        keep
    });
    c.out_bytes -= removed_bytes;
    if c.out.len() != before {
        tracing::debug!("dropped {} stale watch events", before - c.out.len());
    }
}
