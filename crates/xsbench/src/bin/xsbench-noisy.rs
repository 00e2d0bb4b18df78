//! xsbench-noisy: what one misbehaving guest costs everyone else (issue 8).
//!
//! For each scenario it starts a fresh simulator and a fresh daemon (the
//! release `rxenstored` on the simulator's stand-ins), introduces N
//! well-behaved guests (real ring connections through xensim), one dom0
//! socket client and one dom0 watcher (a socket client watching a guest's
//! node and reading its events slowly), then lets the attacker loose while
//! the victims do a steady stream of small WRITE/READ requests on their own
//! nodes for a fixed time. It reports the victims' round-trip latency, the
//! daemon's RSS growth (VmRSS before the attack versus its peak during it),
//! whether a victim was disconnected or got an error, and how the attacker
//! was refused or throttled.
//!
//! It asserts no timings. It exits nonzero when a victim is disconnected or
//! a victim's request fails (an error reply or no reply within 10 s).

use clap::Parser;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use xensim::{Guest, Sim};
use xenstore_client::{Client, Tx};
use xenstore_proto::ring::{self, RingPage};
use xenstore_proto::{Decoder, Message, MsgType};

/// The node the dom0 watcher watches, relative to a guest's home.
const STATE_NODE: &str = "device/vif/0/state";

const ALL: [&str; 7] = [
    "baseline",
    "spin",
    "spin-discard",
    "no-read-watcher",
    "tx-hoard",
    "deep-paths",
    "flood-own-node",
];

/// Victim latency, daemon memory and disconnections under noisy
/// neighbours.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The rxenstored binary (default: next to this program, i.e. the
    /// workspace's target/release/rxenstored).
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Scenarios to run: baseline, spin, spin-discard, no-read-watcher,
    /// tx-hoard, deep-paths, flood-own-node.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "baseline,spin,spin-discard,no-read-watcher,tx-hoard,deep-paths,flood-own-node"
    )]
    scenarios: Vec<String>,
    /// Well-behaved guests.
    #[arg(long, default_value_t = 4)]
    guests: usize,
    /// Seconds of measurement per scenario.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Watches the dom0 watcher sets on the watched guest node (a backend
    /// watching several of a frontend's nodes).
    #[arg(long, default_value_t = 16)]
    watcher_watches: usize,
    /// Length of each of the dom0 watcher's tokens, bytes.
    #[arg(long, default_value_t = 256)]
    watcher_token: usize,
    /// Seconds the dom0 watcher stops reading in flood-own-node.
    #[arg(long, default_value_t = 3.0)]
    watcher_pause: f64,
    /// Also write the table as CSV here.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Work directory (default: a temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
}

// ----- small helpers --------------------------------------------------------

fn z(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn zs(parts: &[&str]) -> Vec<u8> {
    parts.iter().flat_map(|s| z(s)).collect()
}

fn err_name(m: &Message) -> Option<String> {
    (m.kind() == Some(MsgType::Error)).then(|| {
        String::from_utf8_lossy(m.payload.strip_suffix(b"\0").unwrap_or(&m.payload)).into_owned()
    })
}

/// The daemon's resident memory, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A Xenstore client on the daemon's socket (`xenstore-client`), answering
/// ERROR replies as messages; watch events it does not wait for are
/// dropped after each call.
struct Sock {
    xs: Client<UnixStream>,
}

impl Sock {
    fn connect(path: &Path) -> std::io::Result<Sock> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Sock { xs: Client::new(s) })
    }

    /// One request; its reply (an ERROR reply is returned, not an error).
    fn call(&mut self, t: MsgType, tx: u32, payload: &[u8]) -> std::io::Result<Message> {
        let id = self.xs.send(t, Tx(tx), payload).map_err(io_err)?;
        let m = self.xs.wait_message(id).map_err(io_err)?;
        while self.xs.kept_events() > 0 {
            self.xs.next_event().map_err(io_err)?;
        }
        Ok(m)
    }

    /// A request that must succeed.
    fn ok(&mut self, t: MsgType, payload: &[u8]) -> std::io::Result<Message> {
        let m = self.call(t, 0, payload)?;
        match err_name(&m) {
            Some(e) => Err(std::io::Error::other(format!("{t}: {e}"))),
            None => Ok(m),
        }
    }
}

fn io_err(e: xenstore_client::Error) -> std::io::Error {
    match e {
        xenstore_client::Error::Io(e) => e,
        e => std::io::Error::other(e),
    }
}

// ----- the host ---------------------------------------------------------------

struct Host {
    sim: Sim,
    daemon: Child,
    socket: PathBuf,
    dir: PathBuf,
    ts: Sock,
}

impl Host {
    fn start(exe: &Path, dir: &Path) -> std::io::Result<Host> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let sim = Sim::start(&dir.join("sim"), 0x0153)?;
        let built = exe
            .parent()
            .ok_or_else(|| std::io::Error::other("no daemon directory"))?;
        let libs = xensim::stand_ins::link(built, &dir.join("lib"), &[])?;
        let socket = dir.join("xs.sock");
        let log = std::fs::File::create(dir.join("daemon.log"))?;
        let daemon = Command::new(exe)
            .args(["-N", "--socket"])
            .arg(&socket)
            .arg("--xen-lib-dir")
            .arg(&libs)
            .arg("--xsd-kva")
            .arg(sim.dir().join("xsd_kva"))
            .arg("--xsd-port")
            .arg(sim.dir().join("xsd_port"))
            .env(xensim::protocol::ENV_SOCKET, sim.socket())
            .env("RXENSTORED_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = Sock::connect(&socket) {
                if s.call(MsgType::Read, 0, b"/\0").is_ok() {
                    return Ok(Host {
                        sim,
                        daemon,
                        socket,
                        dir: dir.to_path_buf(),
                        ts: s,
                    });
                }
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("the daemon did not start"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Creates a domain and a thread that attaches to it as its guest;
    /// introduces it (home owned by the guest) once the guest has its
    /// port. The thread runs `body` with the guest after `go` fires.
    fn guest<T: Send + 'static>(
        &mut self,
        go: &Arc<Gate>,
        body: impl FnOnce(Guest) -> T + Send + 'static,
    ) -> std::io::Result<(u32, JoinHandle<Option<T>>)> {
        let d = self.sim.create_domain(None, 0)?;
        let sim_socket = self.sim.socket();
        let (tx, rx) = mpsc::channel();
        let go = go.clone();
        let h = std::thread::spawn(move || {
            let g = match Guest::attach(&sim_socket, d, 0) {
                Ok(g) => g,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return None;
                }
            };
            let _ = tx.send(Ok(g.port));
            go.wait()?;
            Some(body(g))
        });
        let port = rx
            .recv()
            .map_err(|_| std::io::Error::other("guest thread died"))??;
        let home = format!("/local/domain/{d}");
        self.ts.ok(MsgType::Mkdir, &z(&home))?;
        self.ts
            .ok(MsgType::SetPerms, &zs(&[&home, &format!("n{d}")]))?;
        self.ts.ok(
            MsgType::Introduce,
            &zs(&[&d.to_string(), "0", &port.to_string()]),
        )?;
        Ok((d, h))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts every thread at once (or tells them to give up).
struct Gate {
    state: Mutex<Option<bool>>,
    cv: std::sync::Condvar,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate {
            state: Mutex::new(None),
            cv: std::sync::Condvar::new(),
        })
    }

    fn open(&self, go: bool) {
        *self.state.lock().expect("gate") = Some(go);
        self.cv.notify_all();
    }

    /// Some(()) to go, None to give up.
    fn wait(&self) -> Option<()> {
        let mut s = self.state.lock().expect("gate");
        loop {
            match *s {
                Some(true) => return Some(()),
                Some(false) => return None,
                None => s = self.cv.wait(s).expect("gate"),
            }
        }
    }
}

// ----- victims ----------------------------------------------------------------

/// What one client saw.
#[derive(Default)]
struct Seen {
    lat_ms: Vec<f64>,
    errors: Vec<String>,
    disconnected: bool,
}

/// The victims' steady stream: WRITE then READ of their own node, until
/// `stop`.
fn victim_loop(
    stop: &AtomicBool,
    mut req: impl FnMut(MsgType, &[u8]) -> std::io::Result<Message>,
    node: &str,
) -> Seen {
    let mut seen = Seen::default();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let (t, p) = if i % 2 == 1 {
            let mut p = z(node);
            p.extend_from_slice(format!("v{i}").as_bytes());
            (MsgType::Write, p)
        } else {
            (MsgType::Read, z(node))
        };
        let t0 = Instant::now();
        match req(t, &p) {
            Ok(m) => {
                seen.lat_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                if let Some(e) = err_name(&m) {
                    seen.errors.push(format!("{t}: {e}"));
                    break;
                }
            }
            Err(e) => {
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                ) {
                    seen.disconnected = true;
                }
                seen.errors.push(format!("{t}: {e}"));
                break;
            }
        }
    }
    seen
}

/// The dom0 watcher: watches `node` (`watches` times, long tokens) and
/// reads its events slowly (4 KiB, then 1 ms of sleep), after pausing
/// `pause` at the start.
fn watcher(
    socket: &Path,
    node: &str,
    watches: usize,
    token_len: usize,
    pause: Duration,
    go: Arc<Gate>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<(Seen, u64, u64)>> {
    let mut s = Sock::connect(socket)?;
    for i in 0..watches {
        let mut token = format!("w{i}-");
        token.extend(std::iter::repeat_n(
            't',
            token_len.saturating_sub(token.len()),
        ));
        s.ok(MsgType::Watch, &zs(&[node, &token]))?;
    }
    Ok(std::thread::spawn(move || {
        let mut seen = Seen::default();
        if go.wait().is_none() {
            return (seen, 0, 0);
        }
        let mut events = 0u64;
        std::thread::sleep(pause);
        let _ =
            s.xs.get_ref()
                .set_read_timeout(Some(Duration::from_millis(100)));
        let mut bytes = 0u64;
        // Keep reading (fast) for a second after the stop, to tell a
        // backlog from a disconnection.
        let mut until: Option<Instant> = None;
        loop {
            if until.is_none() && stop.load(Ordering::Relaxed) {
                until = Some(Instant::now() + Duration::from_secs(1));
            }
            if until.is_some_and(|u| Instant::now() > u) {
                break;
            }
            match s.xs.next_event() {
                Ok(e) => {
                    events += 1;
                    let before = bytes;
                    // Header, path, token, their NULs.
                    bytes += (16 + e.path.len() + e.token.len() + 2) as u64;
                    // A slow reader: a pause per 4 KiB taken.
                    if until.is_none() && before / 4096 != bytes / 4096 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Err(e) if e.is_timeout() => {}
                Err(xenstore_client::Error::Protocol(e)) => {
                    seen.errors.push(format!("watcher: {e}"));
                    break;
                }
                Err(xenstore_client::Error::Closed) => {
                    seen.disconnected = true;
                    seen.errors
                        .push("watcher: disconnected by the daemon".into());
                    break;
                }
                Err(e) => {
                    seen.disconnected = true;
                    seen.errors.push(format!("watcher: {e}"));
                    break;
                }
            }
        }
        (seen, events, bytes)
    }))
}

// ----- attackers ----------------------------------------------------------------

/// What the attacker did and how the daemon answered.
#[derive(Default)]
struct Attack {
    requests: u64,
    refusals: BTreeMap<String, u64>,
    note: String,
}

impl Attack {
    fn refused(&mut self, e: String) {
        *self.refusals.entry(e).or_default() += 1;
    }

    fn summary(&self) -> String {
        let mut s = self.note.clone();
        if !self.refusals.is_empty() {
            let r: Vec<String> = self
                .refusals
                .iter()
                .map(|(k, v)| format!("{k} x{v}"))
                .collect();
            if !s.is_empty() {
                s.push_str("; ");
            }
            s.push_str("refused: ");
            s.push_str(&r.join(" "));
        }
        if s.is_empty() {
            s = "never refused".into();
        }
        s
    }
}

/// How a pipelining guest treats its replies.
#[derive(Clone, Copy, PartialEq)]
enum Replies {
    /// Never touches rsp_cons: the reply ring fills and stays full.
    Never,
    /// Moves rsp_cons to rsp_prod without looking (replies thrown away).
    Discard,
    /// Reads and decodes them (counting errors).
    Read,
}

/// Keeps the request ring full of `make(i)` requests, written straight
/// into the page, notifying after each batch.
fn pipeline(
    g: &mut Guest,
    stop: &AtomicBool,
    replies: Replies,
    mut make: impl FnMut(u32) -> Message,
) -> Attack {
    let mut a = Attack::default();
    let mut i = 0u32;
    let mut pending: Vec<u8> = Vec::new();
    let mut off = 0;
    let mut dec = Decoder::new();
    let mut buf = [0u8; 1024];
    let mut last_progress = Instant::now();
    let mut cons_seen = g.page().load_u32(ring::REQ_CONS);
    let mut stalled_max = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let mut moved = false;
        loop {
            if off == pending.len() {
                i = i.wrapping_add(1);
                pending = make(i).encode();
                off = 0;
            }
            match ring::guest_write(g.page(), &pending[off..]) {
                Ok(0) => break,
                Ok(n) => {
                    off += n;
                    moved = true;
                    if off == pending.len() {
                        a.requests += 1;
                    }
                }
                Err(e) => {
                    a.note = format!("ring: {e}");
                    return a;
                }
            }
        }
        match replies {
            Replies::Never => {}
            Replies::Discard => {
                let p = g.page().load_u32(ring::RSP_PROD);
                if g.page().load_u32(ring::RSP_CONS) != p {
                    g.page().store_u32(ring::RSP_CONS, p);
                    moved = true;
                }
            }
            Replies::Read => loop {
                match ring::guest_read(g.page(), &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        moved = true;
                        dec.feed(&buf[..n]);
                        while let Ok(Some(m)) = dec.next_message() {
                            if let Some(e) = err_name(&m) {
                                a.refused(e);
                            }
                        }
                    }
                    Err(e) => {
                        a.note = format!("ring: {e}");
                        return a;
                    }
                }
            },
        }
        let cons = g.page().load_u32(ring::REQ_CONS);
        if cons != cons_seen {
            cons_seen = cons;
            stalled_max = stalled_max.max(last_progress.elapsed());
            last_progress = Instant::now();
        }
        if moved {
            if g.notify().is_err() {
                break;
            }
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let stalled = last_progress.elapsed();
    stalled_max = stalled_max.max(stalled);
    a.note = if g.ring_error() != 0 {
        format!("ring error {} set by the daemon", g.ring_error())
    } else if stalled > Duration::from_millis(500) {
        format!(
            "throttled: daemon stopped reading its ring {:.1} s before the end",
            stalled.as_secs_f64()
        )
    } else if stalled_max > Duration::from_millis(500) {
        format!(
            "throttled: its ring was not read for up to {:.1} s at a time",
            stalled_max.as_secs_f64()
        )
    } else {
        format!(
            "served throughout (longest stall {:.0} ms)",
            stalled_max.as_secs_f64() * 1e3
        )
    };
    a
}

/// Sends one request over the ring and returns its reply; records the
/// refusal if it is an error.
fn ask(g: &mut Guest, a: &mut Attack, t: MsgType, tx: u32, p: &[u8]) -> Option<Message> {
    a.requests += 1;
    match g.request(t, tx, p) {
        Ok(m) => {
            if let Some(e) = err_name(&m) {
                a.refused(format!("{t}:{e}"));
            }
            Some(m)
        }
        Err(e) => {
            a.note = format!("{t}: {e}");
            None
        }
    }
}

fn tx_hoard(mut g: Guest, stop: &AtomicBool) -> Attack {
    let mut a = Attack::default();
    let value = vec![b'h'; 1900];
    let mut staged = 0u64;
    let mut opened = 0;
    for t in 0..10 {
        let Some(m) = ask(&mut g, &mut a, MsgType::TransactionStart, 0, &z("")) else {
            return a;
        };
        if err_name(&m).is_some() {
            break;
        }
        opened += 1;
        let tx: u32 = String::from_utf8_lossy(&m.payload)
            .trim_end_matches('\0')
            .parse()
            .unwrap_or(0);
        for n in 0.. {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let mut p = z(&format!("hoard/t{t}/n{n}"));
            p.extend_from_slice(&value);
            match ask(&mut g, &mut a, MsgType::Write, tx, &p) {
                Some(m) if err_name(&m).is_none() => staged += 1,
                _ => break,
            }
        }
    }
    a.note = format!(
        "{opened} transactions open, {staged} writes staged ({:.1} MiB of values)",
        staged as f64 * 1900.0 / 1048576.0
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
    a
}

fn deep_paths(mut g: Guest, stop: &AtomicBool) -> Attack {
    let mut a = Attack::default();
    let home = format!("/local/domain/{}/", g.domid);
    let mut created = 0u64;
    let mut deepest = 0usize;
    let mut longest = 0usize;
    'branches: for b in 0.. {
        // Components of 255 bytes until a path is refused; then the next
        // branch, until a branch cannot even start.
        let mut path = format!("{home}deep{b}");
        let mut depth = 0;
        loop {
            if stop.load(Ordering::Relaxed) {
                break 'branches;
            }
            let comp = format!("/{}", "p".repeat(254));
            let next = format!("{path}{comp}");
            let mut p = z(&next);
            p.push(b'x');
            match ask(&mut g, &mut a, MsgType::Write, 0, &p) {
                Some(m) if err_name(&m).is_none() => {
                    created += 1;
                    depth += 1;
                    deepest = deepest.max(depth);
                    longest = longest.max(next.len());
                    path = next;
                }
                Some(_) if depth == 0 => break 'branches,
                Some(_) => break,
                None => break 'branches,
            }
        }
    }
    a.note = format!("{created} nodes, {deepest} deep, longest path {longest} bytes");
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
    a
}

/// What the daemon charged domain `d` (CONTROL quota <d>): the most
/// memory and nodes seen.
fn charged(ts: &mut Sock, d: u32) -> String {
    let Ok(m) = ts.ok(MsgType::Control, &zs(&["quota", &d.to_string()])) else {
        return "charged: unknown".into();
    };
    let text = String::from_utf8_lossy(&m.payload).into_owned();
    let max = |name: &str| -> Option<u64> {
        let l = text.lines().find(|l| l.starts_with(name))?;
        let m = l.split("(max").nth(1)?;
        m.trim().trim_end_matches(')').trim().parse().ok()
    };
    format!(
        "charged at most {:.0} KiB memory, {} nodes",
        max("memory").unwrap_or(0) as f64 / 1024.0,
        max("nodes").unwrap_or(0)
    )
}

// ----- one scenario -------------------------------------------------------------

struct Row {
    scenario: String,
    who: String,
    /// What the n column shows when not the number of requests.
    count: Option<u64>,
    seen: Seen,
    rss_mib: f64,
    note: String,
}

fn run_scenario(args: &Args, exe: &Path, base: &Path, name: &str) -> std::io::Result<Vec<Row>> {
    let mut host = Host::start(exe, &base.join(name))?;
    let go = Gate::new();
    let stop = Arc::new(AtomicBool::new(false));
    let secs = Duration::from_secs_f64(args.secs);
    let result = (|| {
        // Victim guests.
        let mut victims = Vec::new();
        let mut first_victim = 0;
        for i in 0..args.guests {
            let stop = stop.clone();
            let (d, h) = host.guest(&go, move |mut g: Guest| {
                victim_loop(&stop, |t, p| g.request(t, 0, p), "data/bench")
            })?;
            if i == 0 {
                first_victim = d;
            }
            victims.push(h);
        }
        // The attacker (and its accomplice).
        let attack_stop = stop.clone();
        let attacker: Option<(u32, JoinHandle<Option<Attack>>)> = match name {
            "baseline" => None,
            "spin" | "spin-discard" => {
                let replies = if name == "spin" {
                    Replies::Never
                } else {
                    Replies::Discard
                };
                Some(host.guest(&go, move |mut g: Guest| {
                    // A node to read first, then READs pipelined.
                    let _ = g.request(MsgType::Write, 0, b"data/s\0x");
                    pipeline(&mut g, &attack_stop, replies, |i| {
                        Message::new(MsgType::Read as u32, i, 0, z("data/s"))
                    })
                })?)
            }
            "no-read-watcher" => {
                // The accomplice, a second guest, writes the watched node
                // flat out once the watches are set.
                let (ready_tx, ready_rx) = mpsc::channel::<u32>();
                let acc_stop = stop.clone();
                let (acc_d, acc) = host.guest(&go, move |mut g: Guest| {
                    let Ok(target) = ready_rx.recv_timeout(Duration::from_secs(60)) else {
                        return Attack::default();
                    };
                    let node = format!("/local/domain/{target}/w");
                    pipeline(&mut g, &acc_stop, Replies::Read, |i| {
                        let mut p = z(&node);
                        p.extend_from_slice(i.to_string().as_bytes());
                        Message::new(MsgType::Write as u32, i, 0, p)
                    })
                })?;
                let (d, h) = host.guest(&go, move |mut g: Guest| {
                    let mut a = Attack::default();
                    let me = g.domid;
                    let _ = g.request(MsgType::Write, 0, b"w\0x");
                    let _ = g.request(
                        MsgType::SetPerms,
                        0,
                        &zs(&["w", &format!("n{me}"), &format!("b{acc_d}")]),
                    );
                    let token = "k".repeat(4000);
                    let mut set = 0;
                    for i in 0..128 {
                        if let Some(m) = ask(
                            &mut g,
                            &mut a,
                            MsgType::Watch,
                            0,
                            &zs(&["w", &format!("{i}{token}")]),
                        ) {
                            if err_name(&m).is_none() {
                                set += 1;
                            }
                        }
                    }
                    a.note = format!("{set} watches with 4 KB tokens, then never reads");
                    g.take_events();
                    let _ = ready_tx.send(me);
                    while !attack_stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    a
                })?;
                let joined = std::thread::spawn(move || {
                    let mut a = h.join().ok().flatten()?;
                    let w = acc.join().ok().flatten().unwrap_or_default();
                    a.note.push_str(&format!(
                        "; accomplice guest d{acc_d} wrote the node {} times (pipelined): {}",
                        w.requests,
                        w.summary()
                    ));
                    Some(a)
                });
                Some((d, joined))
            }
            "tx-hoard" => Some(host.guest(&go, move |g: Guest| tx_hoard(g, &attack_stop))?),
            "deep-paths" => Some(host.guest(&go, move |g: Guest| deep_paths(g, &attack_stop))?),
            "flood-own-node" => Some(host.guest(&go, move |mut g: Guest| {
                let mut a = pipeline(&mut g, &attack_stop, Replies::Read, |i| {
                    let mut p = z(STATE_NODE);
                    p.extend_from_slice(i.to_string().as_bytes());
                    Message::new(MsgType::Write as u32, i, 0, p)
                });
                a.note = format!("writes its {STATE_NODE} pipelined; {}", a.note);
                a
            })?),
            other => return Err(std::io::Error::other(format!("unknown scenario {other}"))),
        };
        // The dom0 watcher watches the attacker's node (or a victim's).
        // A backend watching a frontend's state node: the attacker's in
        // every scenario (flood-own-node writes exactly that node), a
        // victim's in the baseline.
        let watched = match &attacker {
            Some((d, _)) => format!("/local/domain/{d}/{STATE_NODE}"),
            None => format!("/local/domain/{first_victim}/{STATE_NODE}"),
        };
        let pause = if name == "flood-own-node" {
            Duration::from_secs_f64(args.watcher_pause)
        } else {
            Duration::ZERO
        };
        let watch = watcher(
            &host.socket,
            &watched,
            args.watcher_watches,
            args.watcher_token,
            pause,
            go.clone(),
            stop.clone(),
        )?;
        // The dom0 victim.
        let mut dom0 = Sock::connect(&host.socket)?;
        let dom0_stop = stop.clone();
        let dom0_go = go.clone();
        let dom0_h = std::thread::spawn(move || {
            dom0_go.wait()?;
            Some(victim_loop(
                &dom0_stop,
                |t, p| dom0.call(t, 0, p),
                "/bench/dom0",
            ))
        });
        // RSS sampler.
        let pid = host.daemon.id();
        let before = rss_kib(pid);
        let peak = Arc::new(AtomicU64::new(before));
        let sampler = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
            })
        };
        go.open(true);
        std::thread::sleep(secs);
        stop.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        let rss_mib = peak.load(Ordering::Relaxed).saturating_sub(before) as f64 / 1024.0;

        let mut rows = Vec::new();
        let row = |who: &str, seen: Seen, note: String| Row {
            scenario: name.to_string(),
            who: who.to_string(),
            count: None,
            seen,
            rss_mib,
            note,
        };
        let dom0_seen = dom0_h.join().ok().flatten().unwrap_or_else(|| Seen {
            errors: vec!["dom0 client thread failed".into()],
            ..Seen::default()
        });
        rows.push(row("dom0", dom0_seen, String::new()));
        let mut all = Seen::default();
        for (i, v) in victims.into_iter().enumerate() {
            match v.join().ok().flatten() {
                Some(s) => {
                    all.lat_ms.extend(s.lat_ms);
                    all.errors
                        .extend(s.errors.into_iter().map(|e| format!("guest {i}: {e}")));
                    all.disconnected |= s.disconnected;
                }
                None => all.errors.push(format!("guest {i}: thread failed")),
            }
        }
        rows.push(row(&format!("{} guests", args.guests), all, String::new()));
        let (ws, events, bytes) = watch.join().unwrap_or_default();
        let mut w = row(
            "dom0 watcher",
            ws,
            format!(
                "n = events read ({:.1} MiB; {} watches on {watched})",
                bytes as f64 / 1048576.0,
                args.watcher_watches
            ),
        );
        w.count = Some(events);
        rows.push(w);
        if let Ok(Some(st)) = host.daemon.try_wait() {
            rows.push(Row {
                scenario: name.to_string(),
                who: "daemon".into(),
                count: Some(0),
                seen: Seen {
                    errors: vec![format!("the daemon exited: {st}")],
                    ..Seen::default()
                },
                rss_mib,
                note: String::new(),
            });
        }
        if let Some((d, h)) = attacker {
            let a = h.join().ok().flatten().unwrap_or_default();
            let charge = charged(&mut host.ts, d);
            rows.push(Row {
                scenario: name.to_string(),
                who: format!("attacker d{d}"),
                count: Some(a.requests),
                seen: Seen {
                    lat_ms: Vec::new(),
                    errors: Vec::new(),
                    disconnected: false,
                },
                rss_mib,
                note: format!("n = requests sent; {}; {charge}", a.summary()),
            });
        }
        Ok(rows)
    })();
    // Whatever happened, release every thread still at the gate.
    go.open(false);
    stop.store(true, Ordering::Relaxed);
    if result.is_err() {
        let log = host.log();
        if !log.is_empty() {
            eprintln!("daemon log:\n{log}");
        }
    }
    result
}

fn main() {
    let args = Args::parse();
    for s in &args.scenarios {
        if !ALL.contains(&s.as_str()) {
            eprintln!(
                "xsbench-noisy: unknown scenario {s} (known: {})",
                ALL.join(",")
            );
            std::process::exit(2);
        }
    }
    let exe = args.daemon.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|p| p.join("rxenstored")))
            .unwrap_or_else(|| PathBuf::from("rxenstored"))
    });
    let base = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("xsbench-noisy-{}", std::process::id()))
    });
    println!(
        "# {} victim guests + dom0 client + dom0 watcher ({} watches, {}-byte tokens), {} s per scenario; latency in ms",
        args.guests, args.watcher_watches, args.watcher_token, args.secs
    );
    println!(
        "{:<16} {:<14} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5}  attacker / notes",
        "scenario", "who", "n", "p50", "p99", "max", "RSS+MiB", "disc"
    );
    let mut csv = String::from(
        "scenario,who,n,p50_ms,p99_ms,max_ms,rss_growth_mib,disconnected,errors,notes\n",
    );
    let mut failed = false;
    for s in &args.scenarios {
        match run_scenario(&args, &exe, &base, s) {
            Ok(rows) => {
                for r in rows {
                    let mut lat = r.seen.lat_ms.clone();
                    lat.sort_by(|a, b| a.total_cmp(b));
                    let (p50, p99, max) = (
                        percentile(&lat, 0.5),
                        percentile(&lat, 0.99),
                        lat.last().copied().unwrap_or(f64::NAN),
                    );
                    let victim = !r.who.starts_with("attacker");
                    if victim && (r.seen.disconnected || !r.seen.errors.is_empty()) {
                        failed = true;
                    }
                    let mut note = r.note.clone();
                    if !r.seen.errors.is_empty() {
                        if !note.is_empty() {
                            note.push_str("; ");
                        }
                        note.push_str(&format!("ERRORS: {}", r.seen.errors.join(" | ")));
                    }
                    let n = r.count.unwrap_or(lat.len() as u64);
                    println!(
                        "{:<16} {:<14} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>5}  {}",
                        r.scenario,
                        r.who,
                        n,
                        p50,
                        p99,
                        max,
                        r.rss_mib,
                        if r.seen.disconnected { "YES" } else { "no" },
                        note
                    );
                    csv.push_str(&format!(
                        "{},{},{},{:.3},{:.3},{:.3},{:.2},{},{},\"{}\"\n",
                        r.scenario,
                        r.who,
                        n,
                        p50,
                        p99,
                        max,
                        r.rss_mib,
                        r.seen.disconnected,
                        r.seen.errors.len(),
                        note.replace('"', "'")
                    ));
                }
            }
            Err(e) => {
                failed = true;
                println!("{s:<16} error: {e}");
            }
        }
        let _ = std::io::stdout().flush();
    }
    if let Some(path) = &args.csv {
        if let Err(e) = std::fs::write(path, csv) {
            eprintln!("xsbench-noisy: {}: {e}", path.display());
            failed = true;
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    if failed {
        eprintln!("xsbench-noisy: a victim was disconnected or a request failed");
        std::process::exit(1);
    }
}
