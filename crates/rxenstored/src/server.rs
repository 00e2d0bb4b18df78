//! The event loop: one thread, one epoll set (mio), O(1) work per event.
//!
//! [`Server`] owns the I/O: the poll set, the listening socket, the signal
//! pipe and the tokens of every socket and of the event channel. Everything
//! served lives in [`State`] (`crate::state`): readiness is handed to it,
//! the time is read once per iteration and passed in, and what it asks of
//! the loop (poll a socket for writability, deregister and drop a closed
//! socket) is applied after each iteration.
//!
//! * Readiness is edge-triggered; the state keeps connections with more to
//!   do on its ready queue, so the loop does not wait while it is busy.
//! * Accepting takes at most [`ACCEPTS_PER_TURN`] connections per
//!   iteration; after EMFILE the backlog is retried when a socket closes,
//!   or after [`ACCEPT_RETRY`].

use crate::state::{Action, State};
use crate::trace::Trace;
use crate::xen::{Xen, XenConfig};
use mio::net::UnixListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xenstore_store::StoreConfig;

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const EVTCHN: Token = Token(2);
/// How long to wait before accepting again after running out of
/// descriptors, when no connection closes meanwhile.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Connections accepted per iteration before the others get served.
pub const ACCEPTS_PER_TURN: usize = 32;

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
    /// The state handed over by a live update is refused before anything
    /// was taken (the state file and the descriptors are left as they
    /// were).
    #[error("live update: state refused: {0}")]
    Refused(String),
    /// The state handed over by a live update cannot be taken.
    #[error("live update: {0}")]
    TakeOver(String),
    /// Event loop set-up failed.
    #[error("event loop: {0}")]
    Poll(io::Error),
    /// The Xen configuration asked for cannot work.
    #[error("{0}")]
    Xen(crate::xen::OpenError),
}

/// The daemon's event loop: its I/O, and the [`State`] it serves.
pub struct Server {
    poll: Poll,
    listener: UnixListener,
    signals: Signals,
    state: State,
    socket: PathBuf,
    stop: bool,
    /// The listener used up its accept budget: more may be waiting.
    accept_pending: bool,
    /// Accepting failed for want of descriptors (EMFILE/ENFILE): retry
    /// when a connection closes, or at this time at the latest.
    accept_blocked: Option<Instant>,
    on_hangup: Option<Box<dyn FnMut()>>,
    /// The arguments the next binary gets when `-c` does not say (this
    /// process's own, without the program name).
    args: Vec<std::ffi::OsString>,
}

/// Where a live update leaves the state for the next binary:
/// `$XENSTORED_RUNDIR/state_dump` when `XENSTORED_RUNDIR` is set (C's
/// place, xenstored_control.c lu_dump_open: `xs_daemon_rootdir()`, which
/// is the run directory), else next to the socket (the same place with the
/// default socket, `/run/xenstored`).
pub fn state_file(socket: &std::path::Path) -> PathBuf {
    if let Some(d) = std::env::var_os("XENSTORED_RUNDIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("state_dump");
    }
    socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .join("state_dump")
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
        Server::start(cfg, None)
    }

    /// Takes over from the binary before this one (`-U`): the listening
    /// socket and the connections it handed over in the state file next to
    /// the socket, which is then removed.
    ///
    /// The state is checked whole before any descriptor is taken
    /// ([`crate::live_update::check_state`]); a state refused there gives
    /// [`StartError::Refused`] with the file and every descriptor left as
    /// they were, for a fallback binary.
    pub fn take_over(cfg: ServerConfig) -> Result<Server, StartError> {
        let t0 = Instant::now();
        let file = state_file(&cfg.socket);
        let bytes = std::fs::read(&file)
            .map_err(|e| StartError::Refused(format!("{}: {e}", file.display())))?;
        let tree = crate::live_update::check_state(&bytes, &cfg.store)
            .map_err(|e| StartError::Refused(format!("{}: {e}", file.display())))?;
        let s = Server::start(cfg, Some((bytes, tree)));
        let _ = std::fs::remove_file(&file);
        if s.is_ok() {
            tracing::info!(
                "live update: state read and restored in {:.1} ms",
                t0.elapsed().as_secs_f64() * 1e3
            );
        }
        s
    }

    fn start(
        cfg: ServerConfig,
        handed_over: Option<(Vec<u8>, xenstore_store::migrate::RestoredTree)>,
    ) -> Result<Server, StartError> {
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
        let mut inherited = xen_stable::inherit::Inherited::new();
        let mut evtchn_fd = -1;
        let mut listener = match &handed_over {
            None => bind(&cfg.socket)?,
            Some((bytes, _)) => {
                // GLOBAL comes first: the rest is read by the state.
                let global = xenstore_migrate::Reader::new(bytes)
                    .and_then(|mut r| r.next_record())
                    .map_err(|e| StartError::TakeOver(e.to_string()))?
                    .and_then(|r| match r {
                        xenstore_migrate::Record::Global(g) => Some(g),
                        _ => None,
                    })
                    .ok_or_else(|| StartError::TakeOver("no GLOBAL record first".into()))?;
                evtchn_fd = global.evtchn_fd;
                let fd = inherited
                    .take(global.socket_fd)
                    .map_err(|e| StartError::TakeOver(format!("listening socket: {e}")))?;
                let l = std::os::unix::net::UnixListener::from(fd);
                l.set_nonblocking(true)
                    .map_err(|e| StartError::TakeOver(e.to_string()))?;
                xen_stable::inherit::close_on_exec(std::os::fd::AsRawFd::as_raw_fd(&l))
                    .map_err(|e| StartError::TakeOver(e.to_string()))?;
                UnixListener::from_std(l)
            }
        };
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(StartError::Poll)?;
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(StartError::Poll)?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(StartError::Poll)?;
        // After a live update the event channel is the one handed over,
        // with the guests' ports bound through it.
        let evtchn_fd = if evtchn_fd >= 0 {
            Some(
                inherited
                    .take(evtchn_fd)
                    .map_err(|e| StartError::TakeOver(format!("event channel: {e}")))?,
            )
        } else {
            None
        };
        let fresh_xen = evtchn_fd.is_none();
        let xen = match (&cfg.xen, evtchn_fd) {
            // Not served here (--no-xen): closed.
            (None, Some(_)) => None,
            (Some(xc), Some(fd)) => match Xen::open_inherited(xc, fd) {
                Ok(x) => {
                    register_evtchn(&poll, &x)?;
                    tracing::info!(
                        "Xen interfaces open, event channel taken over (domain state: {})",
                        x.domain_state()
                    );
                    Some(x)
                }
                Err(e) => return Err(StartError::TakeOver(format!("event channel: {e}"))),
            },
            (None, None) => None,
            (Some(xc), None) => match Xen::open(xc) {
                Ok(x) => {
                    register_evtchn(&poll, &x)?;
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
        let socket = cfg.socket.clone();
        let mut state = match handed_over {
            None => State::new(cfg, trace, xen, Instant::now()),
            Some(_) => State::taken_over(cfg, trace, xen, Instant::now()),
        };
        if let Some((bytes, tree)) = handed_over {
            state
                .restore_live_update(&bytes, tree, &mut |fd| {
                    let owned = inherited.take(fd)?;
                    xen_stable::inherit::close_on_exec(std::os::fd::AsRawFd::as_raw_fd(&owned))?;
                    let s = std::os::unix::net::UnixStream::from(owned);
                    s.set_nonblocking(true)?;
                    Ok(Box::new(mio::net::UnixStream::from_std(s)))
                })
                .map_err(|e| StartError::TakeOver(e.to_string()))?;
            for (id, fd) in state.socket_fds() {
                poll.registry()
                    .register(&mut SourceFd(&fd), Token(id as usize), Interest::READABLE)
                    .map_err(StartError::Poll)?;
            }
            if fresh_xen {
                // The binary before served no guest: start as a fresh
                // daemon does.
                state.serve_local_and_existing();
            }
            tracing::info!(
                "live update: took over {} socket connection(s), {} ring(s) and {} nodes",
                state.socket_fds().len(),
                state.ring_count(),
                state.store().db().len()
            );
            state.after_live_update();
        }
        Ok(Server {
            poll,
            listener,
            signals,
            state,
            socket,
            stop: false,
            accept_pending: false,
            accept_blocked: None,
            on_hangup: None,
            args: std::env::args_os().skip(1).collect(),
        })
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
            let timeout = if self.state.busy() || self.accept_pending {
                Some(Duration::ZERO)
            } else {
                let now = Instant::now();
                [self.accept_blocked, self.state.deadline()]
                    .into_iter()
                    .flatten()
                    .min()
                    .map(|t| t.saturating_duration_since(now))
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            self.state.set_now(now);
            if self.accept_blocked.is_some_and(|t| now >= t) {
                self.accept_pending = true;
            }
            if self.accept_pending {
                self.accept(now);
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(now),
                    SIGNALS => self.on_signals(),
                    EVTCHN => self.state.on_evtchn(),
                    Token(t) => {
                        let id = t as u64;
                        if ev.is_writable() {
                            self.state.flush(id);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.state.schedule(id);
                        }
                    }
                }
            }
            self.state.serve();
            self.apply();
        }
        self.state.shutdown();
        self.apply();
        let _ = std::fs::remove_file(&self.socket);
        tracing::info!("stopped");
        Ok(())
    }

    /// Carries out what the state asked: poll interest changes, closed
    /// sockets deregistered and dropped.
    fn apply(&mut self) {
        // An action may make more (a failed live update's answer is
        // written, which may ask for writability).
        loop {
            let actions = self.state.take_actions();
            if actions.is_empty() {
                break;
            }
            self.apply_actions(actions);
        }
        self.drop_closed();
    }

    fn apply_actions(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Interest { id, fd, writable } => {
                    let interest = if writable {
                        Interest::READABLE | Interest::WRITABLE
                    } else {
                        Interest::READABLE
                    };
                    if let Err(e) = self.poll.registry().reregister(
                        &mut SourceFd(&fd),
                        Token(id as usize),
                        interest,
                    ) {
                        self.state.close(id, &format!("poll: {e}"));
                    }
                }
                Action::LiveUpdate(go) => {
                    // Returns only if the new binary could not be run.
                    let why = self.live_update(&go);
                    self.state.live_update_failed(&why);
                    // Answered now: the loop may sleep next.
                    self.state.flush_queued();
                }
            }
        }
    }

    /// Drops the sockets the state closed.
    fn drop_closed(&mut self) {
        let closed = self.state.take_closed();
        if !closed.is_empty() && self.accept_blocked.is_some() {
            // A descriptor is free: the backlog may be served.
            self.accept_pending = true;
        }
        for s in closed {
            if let Some(fd) = s.fd() {
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
            drop(s);
        }
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
                    self.state.reopen_trace();
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
    /// Hands the state over and runs the next binary in this process
    /// (same pid, same socket, every connection kept): the state file next
    /// to the socket, the descriptors kept open across `exec`. Returns
    /// only on failure, with C's answer to the `-s` request.
    fn live_update(&mut self, go: &crate::live_update::Go) -> String {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let t0 = Instant::now();
        let ok = xenstore_proto::Message::reply(&go.request, b"OK\0".to_vec());
        // A hand-back to C xenstored: C's command line, a version-1
        // stream (unless -c / -v say otherwise), C's reader's rules.
        let to_c = crate::live_update::is_c_binary(&go.binary);
        let version = if to_c && !go.version_given {
            xenstore_migrate::Version::V1
        } else {
            go.version
        };
        let dead = if to_c {
            Some(self.state.dead_owners())
        } else {
            None
        };
        let file = state_file(&self.socket);
        let out = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&file)
        };
        let out = match out {
            Ok(f) => std::io::BufWriter::with_capacity(1 << 20, f),
            Err(e) => return format!("Dump state open error: {e}"),
        };
        let written = self
            .state
            .write_live_update_stream(
                out,
                version,
                self.listener.as_raw_fd(),
                self.state.evtchn_fd().unwrap_or(-1),
                Some((go.conn, ok)),
                dead.as_ref(),
            )
            .map_err(|e| e.to_string())
            .and_then(|w| w.into_inner().map_err(|e| e.error().to_string()))
            .and_then(|f| f.metadata().map_err(|e| e.to_string()));
        let bytes = match written {
            Ok(m) => m.len(),
            Err(e) => {
                let _ = std::fs::remove_file(&file);
                return format!("Dump state error: {e}");
            }
        };
        let fds: Vec<i32> = std::iter::once(self.listener.as_raw_fd())
            .chain(self.state.socket_fds().into_iter().map(|(_, fd)| fd))
            .collect();
        // The descriptors belong to the listener and the state's streams,
        // alive throughout.
        // C gets its sockets blocking, as it makes them (its reads and
        // writes follow poll); they are made non-blocking again if the
        // exec fails.
        let keep = |fd: i32, on: bool| {
            if to_c {
                xen_stable::inherit::set_nonblocking(fd, !on)?;
            }
            if on {
                xen_stable::inherit::keep_across_exec(fd)
            } else {
                xen_stable::inherit::close_on_exec(fd)
            }
        };
        for fd in &fds {
            if let Err(e) = keep(*fd, true) {
                fds.iter().for_each(|fd| drop(keep(*fd, false)));
                let _ = std::fs::remove_file(&file);
                return format!("Dump state error: descriptor {fd}: {e}");
            }
        }
        // The event channel crosses the exec with the rings' ports; the
        // domain-state backend's ports are unbound (the next binary binds
        // its own).
        if let Err(e) = self.state.before_exec() {
            fds.iter().for_each(|fd| drop(keep(*fd, false)));
            self.state.exec_failed();
            let _ = std::fs::remove_file(&file);
            return format!("Dump state error: event channel: {e}");
        }
        let argv = match (&go.cmdline, to_c) {
            (None, true) => self.c_argv(),
            _ => crate::live_update::next_argv(go.cmdline.as_deref(), &self.args),
        };
        tracing::info!(
            "live update: handing {} bytes of state (written in {:.1} ms) to {} {:?}",
            bytes,
            t0.elapsed().as_secs_f64() * 1e3,
            go.binary.display(),
            argv
        );
        let err = std::process::Command::new(&go.binary).args(&argv).exec();
        fds.iter().for_each(|fd| drop(keep(*fd, false)));
        self.state.exec_failed();
        let _ = std::fs::remove_file(&file);
        format!("Error activating new binary. ({err})")
    }

    /// C xenstored's command line for a hand-back: this process's options
    /// in C's forms ([`crate::cli::Options::c_argv`]); if they cannot be
    /// parsed again (they were when the daemon started), `-U` alone.
    fn c_argv(&self) -> Vec<std::ffi::OsString> {
        use clap::Parser;
        let args = std::iter::once(std::ffi::OsString::from("rxenstored"))
            .chain(self.args.iter().cloned());
        match crate::cli::Options::try_parse_from(args) {
            Ok(o) => o.c_argv(),
            Err(_) => vec!["-U".into()],
        }
    }

    fn accept(&mut self, now: Instant) {
        self.accept_pending = false;
        let was_blocked = self.accept_blocked.take().is_some();
        for _ in 0..ACCEPTS_PER_TURN {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    use std::os::fd::AsRawFd;
                    let fd = stream.as_raw_fd();
                    let id = self.state.add_socket(Box::new(stream));
                    if let Err(e) = self.poll.registry().register(
                        &mut SourceFd(&fd),
                        Token(id as usize),
                        Interest::READABLE,
                    ) {
                        tracing::warn!("cannot register connection: {e}");
                        self.state.close(id, "cannot be polled");
                    }
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
                    self.accept_blocked = Some(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
        self.accept_pending = true;
    }
}

/// Registers the event-channel descriptor with the loop.
fn register_evtchn(poll: &Poll, x: &Xen) -> Result<(), StartError> {
    use std::os::fd::AsRawFd;
    let fd = x.fd().as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&fd), EVTCHN, Interest::READABLE)
        .map_err(StartError::Poll)
}
