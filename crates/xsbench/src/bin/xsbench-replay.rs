//! xsbench-replay: the toolstack's own traffic, replayed for many domains
//! (issue 9).
//!
//! The template (`crates/xsbench/data/pv-guest-life.txt`, cut from the
//! real-Xen scenario's trace by `data/extract-pv-guest-life.py`) is one PV
//! guest's life as xenstored saw it: `xl create` with its transactions and
//! SET_PERMS, INTRODUCE, xenconsoled, dom0's kernel, the guest's kernel over
//! its own ring, `xl shutdown`, the death that xl's monitor hears of through
//! `@releaseDomain`, and its removal of the domain's nodes.
//!
//! The program starts a simulator and a daemon on it (the release
//! `rxenstored` next to this program, or `--daemon-cmd`), sets up the host
//! (dom0's kernel on dom0's ring, xenconsoled on the socket), and for each N
//! of `--sizes` brings the population to N domains by replaying the
//! template's `create` phase; those domains stay (their guests fall silent,
//! xl's monitor keeps its connection and its `@releaseDomain` watch as on a
//! real host). At that population it then runs `--batch` measured lives,
//! one after the other (so the population stays at N, plus the one being
//! measured): the `create` phase, then the `destroy` phase, recording wall
//! time and the daemon's CPU time (`/proc/<pid>/stat` utime+stime, and
//! `/proc/<pid>/schedstat` in nanoseconds) around each. Before each reading
//! of the CPU time the daemon is let settle (asleep, neither running nor
//! waiting for a CPU for 6 ms), so that work a phase leaves queued (events
//! to thousands of watchers) counts in that phase.
//!
//! Each request is sent in the template's order and waited for (the
//! daemon saw them interleaved from several processes; this is one valid
//! order of them). A transaction whose commit answers EAGAIN is run again,
//! as libxl does. A reply whose outcome (OK or the error) differs from the
//! trace's is counted as a mismatch.

use clap::Parser;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use xensim::{Guest, ShutdownReason, Sim};
use xenstore_client::{Client, Tx};
use xenstore_proto::{Message, MsgType};

/// The template recorded from the real-Xen scenario.
const TEMPLATE: &str = include_str!("../../data/pv-guest-life.txt");

/// Replay a PV guest's life for many coexisting domains.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The rxenstored binary (default: next to this program).
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Run this instead (a shell command). It gets `$SOCKET` (where it must
    /// listen), `$XENSIM_SOCKET`, `$XEN_LIB_DIR` (the simulator's stand-ins
    /// for libxenevtchn, libxengnttab, libxenmanage, libxencall),
    /// `$XSD_KVA` and `$XSD_PORT` (dom0's ring page and port). C xenstored
    /// and oxenstored also need libxenctrl, which the simulator does not
    /// stand in for: they run only on Xen.
    #[arg(long)]
    daemon_cmd: Option<String>,
    /// Label of the daemon in the output.
    #[arg(long, default_value = "rxenstored")]
    label: String,
    /// Populations of coexisting domains to measure at.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000,10000")]
    sizes: Vec<usize>,
    /// Measured lives per population (each created, then destroyed).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// The template (default: the one built in).
    #[arg(long)]
    template: Option<PathBuf>,
    /// Close xl's monitor connection of the population's domains once
    /// created (a toolstack without a process per domain) instead of
    /// keeping it with its `@releaseDomain` watch as `xl create` does.
    #[arg(long)]
    no_monitors: bool,
    /// Write the CSV here as well (for xsbench-plot).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Work directory (default: a temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Exit nonzero unless every measured domain's nodes are gone and no
    /// reply differed from the trace's.
    #[arg(long)]
    check: bool,
    /// Profile one phase only: write `enable`/`disable` around each
    /// measured life's PHASE (`create` or `destroy`) to the FIFO CTL and
    /// wait for perf's `ack` on ACK, as `perf record --control
    /// fifo:CTL,ACK -D -1` reads and answers them.
    #[arg(long, value_name = "CTL,ACK")]
    perf_ctl: Option<String>,
    /// The phase `--perf-ctl` profiles.
    #[arg(long, default_value = "create")]
    perf_phase: String,
}

// ------------------------------------------------------------------ template

/// Who sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    /// The host's set-up (a toolstack connection before any guest).
    Host,
    /// `xl create`'s connection (kept by the process it forks).
    Xl,
    /// The process `xl create` forks to wait for the domain's death.
    XlMon,
    /// `xl shutdown`.
    XlCmd,
    /// xenconsoled (one for the host).
    Consoled,
    /// dom0's kernel, over dom0's ring (one for the host).
    Dom0,
    /// The guest's kernel, over the guest's ring.
    Guest,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "host" => Role::Host,
            "xl" => Role::Xl,
            "xlmon" => Role::XlMon,
            "xlcmd" => Role::XlCmd,
            "consoled" => Role::Consoled,
            "dom0" => Role::Dom0,
            "guest" => Role::Guest,
            _ => return None,
        })
    }
}

/// One request of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Req {
    role: Role,
    /// The transaction's label (per role), if in one; for
    /// TRANSACTION_START, the label of the one it starts.
    tx: Option<String>,
    /// The trace's outcome: `OK` or the error's name.
    expect: String,
    ty: MsgType,
    /// `RM?`: libxl's clean-up of a parent, done only if the role's
    /// DIRECTORY of the path just listed nothing.
    if_empty: bool,
    /// The arguments as written (with `$PARAMETERS`).
    args: String,
}

/// One step of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Req(Req),
    /// A socket connection opens.
    Open(Role),
    /// A socket connection closes.
    Close(Role),
    /// The domain builder makes the domain (and the guest attaches).
    Create,
    /// The guest powers off; xl's monitor waits for `@releaseDomain`.
    Shutdown,
    /// xl destroys the domain; xl's monitor waits for `@releaseDomain`.
    Destroy,
}

/// The template, by phase.
#[derive(Debug, Default)]
struct Template {
    host: Vec<Step>,
    create: Vec<Step>,
    destroy: Vec<Step>,
}

fn parse_template(text: &str) -> Result<Template, String> {
    let mut t = Template::default();
    let mut phase: Option<&str> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let at = |why: &str| format!("template line {}: {why}: {line:?}", n + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(p) = line.strip_prefix("== ") {
            match p.trim() {
                "host" | "create" | "destroy" => phase = Some(p.trim()),
                _ => return Err(at("unknown phase")),
            }
            continue;
        }
        let step = if let Some(bang) = line.strip_prefix('!') {
            let mut w = bang.split_whitespace();
            match (w.next(), w.next()) {
                (Some("create"), None) => Step::Create,
                (Some("shutdown"), _) => Step::Shutdown,
                (Some("destroy"), None) => Step::Destroy,
                (Some("open"), Some(r)) => Step::Open(Role::parse(r).ok_or_else(|| at("role"))?),
                (Some("close"), Some(r)) => Step::Close(Role::parse(r).ok_or_else(|| at("role"))?),
                _ => return Err(at("unknown step")),
            }
        } else {
            // Roles are padded with spaces.
            let (role, rest) = line.split_once(' ').ok_or_else(|| at("no fields"))?;
            let rest = rest.trim_start();
            let mut f = rest.splitn(4, ' ');
            let (Some(tx), Some(expect), Some(ty)) = (f.next(), f.next(), f.next()) else {
                return Err(at("want ROLE TX EXPECT TYPE ARGS"));
            };
            let args = f.next().unwrap_or("").to_owned();
            let if_empty = ty == "RM?";
            let ty = MsgType::ALL
                .iter()
                .copied()
                .find(|m| m.name() == ty.trim_end_matches('?'))
                .filter(|_| !ty.ends_with('?') || if_empty)
                .ok_or_else(|| at("unknown message type"))?;
            Step::Req(Req {
                role: Role::parse(role).ok_or_else(|| at("unknown role"))?,
                tx: (tx != "-").then(|| tx.to_owned()),
                expect: expect.to_owned(),
                ty,
                if_empty,
                args,
            })
        };
        match phase {
            Some("host") => t.host.push(step),
            Some("create") => t.create.push(step),
            Some("destroy") => t.destroy.push(step),
            _ => return Err(at("a step before any `== PHASE`")),
        }
    }
    if !t.create.contains(&Step::Create) {
        return Err("the template has no `!create`".into());
    }
    Ok(t)
}

/// A domain's parameters.
#[derive(Debug, Clone)]
struct Params {
    domid: u32,
    uuid: String,
    name: String,
    store_ring_ref: u64,
    store_port: u32,
    console_ring_ref: u64,
    console_port: u32,
}

impl Params {
    fn apply(&self, s: &str) -> String {
        if !s.contains('$') {
            return s.to_owned();
        }
        s.replace("$DOMID", &self.domid.to_string())
            .replace("$UUID", &self.uuid)
            .replace("$NAME", &self.name)
            .replace("$STORE_RING_REF", &self.store_ring_ref.to_string())
            .replace("$STORE_PORT", &self.store_port.to_string())
            .replace("$CONSOLE_RING_REF", &self.console_ring_ref.to_string())
            .replace("$CONSOLE_PORT", &self.console_port.to_string())
    }
}

/// libxl's clean-up walk (`libxl__xs_path_cleanup`): after removing a
/// node it goes up, READ, DIRECTORY and RM of each parent, and stops at the
/// first parent that has a value or children. The template recorded the
/// walk on a host where the parents were empty; on a host with other
/// domains it stops earlier. True if `r` is not taken.
fn skip_cleanup(l: &mut Life, r: &Req) -> bool {
    let path = l.p.apply(&r.args);
    if let Some((role, stop)) = &l.stopped {
        let above = stop.starts_with(&path) && stop.as_bytes().get(path.len()) == Some(&b'/');
        if *role == r.role
            && matches!(r.ty, MsgType::Read | MsgType::Directory | MsgType::Rm)
            && (above || (r.if_empty && *stop == path))
        {
            return true;
        }
        if *role == r.role {
            l.stopped = None;
        }
    }
    if r.if_empty {
        let empty = l
            .listed
            .get(&r.role)
            .is_some_and(|(p, empty)| *p == path && *empty);
        if !empty {
            l.stopped = Some((r.role, path));
            return true;
        }
    }
    false
}

/// RM of a node that does not exist answers OK when its parent exists and
/// ENOENT when it does not: the trace's first guest found no `/vm` and no
/// `/libxl`, later guests find them. Not a difference.
fn rm_of_nothing(r: &Req, got: &str) -> bool {
    r.ty == MsgType::Rm && r.expect == "ENOENT" && got == "OK"
}

/// `\xHH` escapes (the trace's non-printable bytes) back to bytes.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            if let Some(v) = s
                .get(i + 2..i + 4)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The wire payload of a request: NUL-terminated fields; WRITE's value
/// (the rest of the line) without one.
fn payload(ty: MsgType, args: &str) -> Vec<u8> {
    if ty == MsgType::Write {
        let (path, value) = args.split_once(' ').unwrap_or((args, ""));
        let mut p = unescape(path);
        p.push(0);
        p.extend_from_slice(&unescape(value));
        return p;
    }
    if args.is_empty() {
        return vec![0];
    }
    let mut p = Vec::with_capacity(args.len() + 4);
    for f in args.split(' ') {
        p.extend_from_slice(&unescape(f));
        p.push(0);
    }
    p
}

// ------------------------------------------------------------------ the host

fn io_err(e: xenstore_client::Error) -> String {
    e.to_string()
}

/// CPU time of a process: (utime+stime in clock ticks, schedstat ns).
fn cpu(pid: u32) -> (u64, u64) {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses.
            let rest = s.get(s.rfind(')')? + 2..)?.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 (1-based) of the line,
            // 12 and 13 after the state (field 3).
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    let ns = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0);
    (ticks, ns)
}

/// The process's state letter and its schedstat (run ns, run-queue wait
/// ns): runnable-but-waiting shows as a growing wait, not as idle.
fn sched(pid: u32) -> (char, u64, u64) {
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.get(s.rfind(')')? + 2..)?.chars().next())
        .unwrap_or('?');
    let st = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap_or_default();
    let mut f = st.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
    (state, f.next().unwrap_or(0), f.next().unwrap_or(0))
}

/// Waits until the daemon is idle: asleep, and neither running nor waiting
/// for a CPU over two readings 3 ms apart (at most 2 s). Work a phase left
/// behind (events still being written to many watchers, a second
/// `VIRQ_DOM_EXC`) is then counted in that phase, not the next, even when
/// other processes keep the machine's CPUs busy.
fn settle(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = sched(pid);
    let mut quiet = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(3));
        let now = sched(pid);
        if now.0 == 'S' && now.1 == last.1 && now.2 == last.2 {
            quiet += 1;
            if quiet >= 2 {
                return;
            }
        } else {
            quiet = 0;
        }
        last = now;
    }
}

fn clock_ticks_per_sec() -> u64 {
    // getconf CLK_TCK; 100 on every Linux configuration that matters.
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// A simulator and a daemon on it.
struct Machine {
    sim: Sim,
    child: Child,
    socket: PathBuf,
    dir: PathBuf,
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_machine(
    daemon: &Path,
    daemon_cmd: Option<&str>,
    dir: &Path,
    stand_ins_from: &Path,
) -> Result<Machine, String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let sim = Sim::start(&dir.join("sim"), 0x5eed).map_err(|e| format!("simulator: {e}"))?;
    let libs = xensim::stand_ins::link(stand_ins_from, &dir.join("lib"), &[])
        .map_err(|e| e.to_string())?;
    let socket = dir.join("xs.sock");
    let kva = sim.dir().join("xsd_kva");
    let port = sim.dir().join("xsd_port");
    let log = std::fs::File::create(dir.join("daemon.log")).map_err(|e| e.to_string())?;
    let mut cmd = match daemon_cmd {
        Some(c) => {
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(format!("exec {c}"))
                .env("SOCKET", &socket)
                .env("XEN_LIB_DIR", &libs)
                .env("XSD_KVA", &kva)
                .env("XSD_PORT", &port);
            cmd
        }
        None => {
            let mut cmd = Command::new(daemon);
            cmd.args(["-N", "--socket"])
                .arg(&socket)
                .arg("--xen-lib-dir")
                .arg(&libs)
                .arg("--xsd-kva")
                .arg(&kva)
                .arg("--xsd-port")
                .arg(&port)
                .env("RXENSTORED_LOG", "warn");
            cmd
        }
    };
    let child = cmd
        .env(xensim::protocol::ENV_SOCKET, sim.socket())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting the daemon: {e}"))?;
    let m = Machine {
        sim,
        child,
        socket,
        dir: dir.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(s) = UnixStream::connect(&m.socket) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            if Client::new(s).read(Tx::NONE, "/").is_ok() {
                return Ok(m);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    Err(format!("the daemon did not answer; its log:\n{log}"))
}

/// A socket connection, as the toolstack's processes have.
fn connect(socket: &Path) -> Result<Client<UnixStream>, String> {
    let s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    Ok(Client::new(s))
}

/// Reads and drops whatever arrives on the population's monitor
/// connections (the `@releaseDomain` events xl's monitors get), on a
/// thread of its own.
struct Drainer {
    tx: Option<mpsc::Sender<UnixStream>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drainer {
    fn start() -> Result<Drainer, String> {
        use rustix::event::epoll;
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel::<UnixStream>();
        let thread = std::thread::Builder::new()
            .name("drainer".into())
            .spawn(move || {
                let mut streams: HashMap<u64, UnixStream> = HashMap::new();
                let mut next = 0u64;
                let mut events = Vec::with_capacity(256);
                let mut buf = vec![0u8; 65536];
                let timeout = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 50_000_000,
                };
                loop {
                    loop {
                        match rx.try_recv() {
                            Ok(s) => {
                                if s.set_nonblocking(true).is_ok()
                                    && epoll::add(
                                        &ep,
                                        &s,
                                        epoll::EventData::new_u64(next),
                                        epoll::EventFlags::IN,
                                    )
                                    .is_ok()
                                {
                                    streams.insert(next, s);
                                    next += 1;
                                }
                            }
                            Err(mpsc::TryRecvError::Empty) => break,
                            Err(mpsc::TryRecvError::Disconnected) => return,
                        }
                    }
                    events.clear();
                    if epoll::wait(
                        &ep,
                        rustix::buffer::spare_capacity(&mut events),
                        Some(&timeout),
                    )
                    .is_err()
                    {
                        continue;
                    }
                    for ev in &events {
                        let key = ev.data.u64();
                        let mut gone = false;
                        if let Some(s) = streams.get_mut(&key) {
                            loop {
                                match s.read(&mut buf) {
                                    Ok(0) => {
                                        gone = true;
                                        break;
                                    }
                                    Ok(_) => {}
                                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                                    Err(_) => {
                                        gone = true;
                                        break;
                                    }
                                }
                            }
                        }
                        if gone {
                            if let Some(s) = streams.remove(&key) {
                                let _ = epoll::delete(&ep, &s);
                            }
                        }
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Drainer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn add(&self, s: UnixStream) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(s);
        }
    }
}

impl Drop for Drainer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The host: the daemon, the simulator, dom0's kernel and xenconsoled.
struct Host<'a> {
    m: &'a Machine,
    pid: u32,
    consoled: Client<UnixStream>,
    setup: Client<UnixStream>,
    dom0: Guest,
    /// Replies whose outcome differed from the trace's, and the first few.
    mismatches: u64,
    mismatch_examples: Vec<String>,
    /// Transactions run again after EAGAIN.
    retries: u64,
    /// Listings read with DIRECTORY_PART after E2BIG.
    parts: u64,
    serial: u64,
}

/// A domain whose life is being replayed.
struct Life {
    p: Params,
    guest: Option<Guest>,
    xl: Option<Client<UnixStream>>,
    xlmon: Option<Client<UnixStream>>,
    xlcmd: Option<Client<UnixStream>>,
    tx: HashMap<(Role, String), u32>,
    /// The last DIRECTORY's path and whether it listed nothing, by role.
    listed: HashMap<Role, (String, bool)>,
    /// A clean-up walk that stopped at this path (role, path): its steps
    /// further up are not taken.
    stopped: Option<(Role, String)>,
}

fn drop_events(c: &mut Client<UnixStream>) {
    while c.kept_events() > 0 {
        if c.next_event().is_err() {
            break;
        }
    }
}

impl<'a> Host<'a> {
    fn new(m: &'a Machine) -> Result<Host<'a>, String> {
        let dir = m.sim.dir();
        let port: u32 = std::fs::read_to_string(dir.join("xsd_port"))
            .map_err(|e| format!("xsd_port: {e}"))?
            .trim()
            .parse()
            .map_err(|_| "xsd_port: not a number".to_owned())?;
        let dom0 = Guest::attach_port(&m.sim.socket(), 0, port, &dir.join("xsd_kva"))
            .map_err(|e| format!("dom0's ring: {e}"))?;
        Ok(Host {
            m,
            pid: m.child.id(),
            consoled: connect(&m.socket)?,
            setup: connect(&m.socket)?,
            dom0,
            mismatches: 0,
            mismatch_examples: Vec::new(),
            retries: 0,
            parts: 0,
            serial: 0,
        })
    }

    fn new_life(&mut self) -> Life {
        self.serial += 1;
        let k = self.serial;
        Life {
            p: Params {
                domid: 0,
                uuid: format!(
                    "{:08x}-{:04x}-4{:03x}-8000-{:012x}",
                    0x5eed_0000u32 | (k as u32 & 0xffff),
                    (k >> 16) & 0xffff,
                    k & 0xfff,
                    k
                ),
                name: format!("g{k}"),
                store_ring_ref: 0,
                store_port: 0,
                console_ring_ref: 0,
                console_port: 0,
            },
            guest: None,
            xl: None,
            xlmon: None,
            xlcmd: None,
            tx: HashMap::new(),
            listed: HashMap::new(),
            stopped: None,
        }
    }

    /// Sends one request from its role's connection; the reply.
    fn send(&mut self, life: Option<&mut Life>, r: &Req, tx: u32) -> Result<Message, String> {
        let (args, label) = match &life {
            Some(l) => (l.p.apply(&r.args), l.p.name.clone()),
            None => (r.args.clone(), "host".to_owned()),
        };
        let body = payload(r.ty, &args);
        let what = || format!("{label}: {:?} {} {args}", r.role, r.ty.name());
        let sock = |c: &mut Client<UnixStream>| -> Result<Message, String> {
            let id = c
                .send(r.ty, Tx(tx), &body)
                .map_err(|e| format!("{}: {e}", what()))?;
            let m = c.wait_message(id).map_err(|e| format!("{}: {e}", what()))?;
            drop_events(c);
            Ok(m)
        };
        match r.role {
            Role::Host => sock(&mut self.setup),
            Role::Consoled => sock(&mut self.consoled),
            Role::Dom0 => {
                let m = self
                    .dom0
                    .request(r.ty, tx, &body)
                    .map_err(|e| format!("{}: {e}", what()))?;
                self.dom0.take_events();
                Ok(m)
            }
            role => {
                let Some(l) = life else {
                    return Err(format!("{}: needs a domain", what()));
                };
                match role {
                    Role::Guest => {
                        let g = l
                            .guest
                            .as_mut()
                            .ok_or_else(|| format!("{}: no guest", what()))?;
                        let m = g
                            .request(r.ty, tx, &body)
                            .map_err(|e| format!("{}: {e}", what()))?;
                        g.take_events();
                        Ok(m)
                    }
                    Role::Xl => sock(
                        l.xl.as_mut()
                            .ok_or_else(|| format!("{}: not open", what()))?,
                    ),
                    Role::XlMon => sock(
                        l.xlmon
                            .as_mut()
                            .ok_or_else(|| format!("{}: not open", what()))?,
                    ),
                    _ => sock(
                        l.xlcmd
                            .as_mut()
                            .ok_or_else(|| format!("{}: not open", what()))?,
                    ),
                }
            }
        }
    }

    /// DIRECTORY_PART over the role's connection; the outcome.
    fn directory_parts(
        &mut self,
        life: Option<&mut Life>,
        r: &Req,
        tx: u32,
    ) -> Result<String, String> {
        let path = life
            .as_ref()
            .map_or_else(|| r.args.clone(), |l| l.p.apply(&r.args));
        let res = match (r.role, life) {
            (Role::Host, _) => self.setup.directory_parts(Tx(tx), &path),
            (Role::Consoled, _) => self.consoled.directory_parts(Tx(tx), &path),
            (Role::Dom0, _) => self.dom0.xs().directory_parts(Tx(tx), &path),
            (Role::Guest, Some(l)) => match l.guest.as_mut() {
                Some(g) => g.xs().directory_parts(Tx(tx), &path),
                None => return Err("no guest".into()),
            },
            (role, Some(l)) => {
                let c = match role {
                    Role::Xl => l.xl.as_mut(),
                    Role::XlMon => l.xlmon.as_mut(),
                    _ => l.xlcmd.as_mut(),
                };
                match c {
                    Some(c) => {
                        let r = c.directory_parts(Tx(tx), &path);
                        drop_events(c);
                        r
                    }
                    None => return Err(format!("{role:?} not open")),
                }
            }
            (role, None) => return Err(format!("{role:?} outside a domain's life")),
        };
        Ok(match res {
            Ok(_) => "OK".to_owned(),
            Err(e) => e
                .xs()
                .map_or_else(|| e.to_string(), |x| x.name().to_owned()),
        })
    }

    /// Runs one request; the outcome (`OK` or the error's name).
    fn request(&mut self, mut life: Option<&mut Life>, r: &Req) -> Result<String, String> {
        let tx = match (&r.tx, r.ty) {
            (Some(_), MsgType::TransactionStart) | (None, _) => 0,
            (Some(label), _) => {
                let l = life
                    .as_ref()
                    .ok_or_else(|| "a transaction outside a domain's life".to_owned())?;
                *l.tx
                    .get(&(r.role, label.clone()))
                    .ok_or_else(|| format!("transaction {label} of {:?} not started", r.role))?
            }
        };
        let m = self.send(life.as_deref_mut(), r, tx)?;
        let mut outcome = if m.kind() == Some(MsgType::Error) {
            String::from_utf8_lossy(m.payload.strip_suffix(&[0]).unwrap_or(&m.payload)).into_owned()
        } else {
            "OK".to_owned()
        };
        if r.ty == MsgType::Directory && outcome == "E2BIG" {
            // libxenstore's xs_directory reads a list too long for one
            // reply with DIRECTORY_PART (a host of many domains: xl's
            // clean-up lists /local/domain/0/backend/console).
            self.parts += 1;
            outcome = self.directory_parts(life.as_deref_mut(), r, tx)?;
        }
        if r.ty == MsgType::Directory {
            if let Some(l) = life.as_deref_mut() {
                let empty = outcome == "OK" && m.payload.iter().all(|&b| b == 0);
                l.listed.insert(r.role, (l.p.apply(&r.args), empty));
            }
        }
        if r.ty == MsgType::TransactionStart && outcome == "OK" {
            let id: u32 =
                String::from_utf8_lossy(m.payload.strip_suffix(&[0]).unwrap_or(&m.payload))
                    .trim()
                    .parse()
                    .map_err(|_| "TRANSACTION_START answered no number".to_owned())?;
            if let (Some(l), Some(label)) = (life, &r.tx) {
                l.tx.insert((r.role, label.clone()), id);
            }
        }
        Ok(outcome)
    }

    fn note_mismatch(&mut self, r: &Req, got: &str, life: Option<&Life>) {
        self.mismatches += 1;
        if self.mismatch_examples.len() < 10 {
            let args = life.map_or_else(|| r.args.clone(), |l| l.p.apply(&r.args));
            self.mismatch_examples.push(format!(
                "{:?} {} {args}: {got}, the trace had {}",
                r.role,
                r.ty.name(),
                r.expect
            ));
        }
    }

    /// Runs a phase's steps.
    fn run(&mut self, steps: &[Step], mut life: Option<&mut Life>) -> Result<(), String> {
        for (i, s) in steps.iter().enumerate() {
            match s {
                Step::Req(r) => {
                    if let Some(l) = life.as_deref_mut() {
                        if skip_cleanup(l, r) {
                            continue;
                        }
                    }
                    let got = self.request(life.as_deref_mut(), r)?;
                    if r.ty == MsgType::TransactionEnd && got == "EAGAIN" {
                        self.retry(steps, i, life.as_deref_mut())?;
                    } else if got != r.expect && r.expect != "*" && !rm_of_nothing(r, &got) {
                        self.note_mismatch(r, &got, life.as_deref());
                    }
                }
                other => {
                    let l = life
                        .as_deref_mut()
                        .ok_or_else(|| format!("{other:?} outside a domain's life"))?;
                    self.step(other, l)?;
                }
            }
        }
        Ok(())
    }

    /// Runs the transaction ending at `steps[end]` again until it commits
    /// (its own requests only), as libxl's and the kernel's loops do.
    fn retry(
        &mut self,
        steps: &[Step],
        end: usize,
        mut life: Option<&mut Life>,
    ) -> Result<(), String> {
        let Step::Req(last) = &steps[end] else {
            return Err("retry of a non-request".into());
        };
        let label = last.tx.clone();
        let start = steps[..end]
            .iter()
            .rposition(|s| matches!(s, Step::Req(r) if r.role == last.role && r.ty == MsgType::TransactionStart && r.tx == label))
            .ok_or_else(|| "a transaction's end without its start".to_owned())?;
        for _ in 0..100 {
            self.retries += 1;
            let mut committed = false;
            for s in &steps[start..=end] {
                if let Step::Req(r) = s {
                    if r.role == last.role && r.tx == label {
                        let got = self.request(life.as_deref_mut(), r)?;
                        if r.ty == MsgType::TransactionEnd {
                            committed = got != "EAGAIN";
                        }
                    }
                }
            }
            if committed {
                return Ok(());
            }
        }
        Err("a transaction still EAGAIN after 100 tries".into())
    }

    fn step(&mut self, s: &Step, l: &mut Life) -> Result<(), String> {
        let sim = &self.m.sim;
        match s {
            Step::Create => {
                let d = sim
                    .create_domain(None, 0)
                    .map_err(|e| format!("create_domain: {e}"))?;
                let g =
                    Guest::attach(&sim.socket(), d, 0).map_err(|e| format!("guest {d}: {e}"))?;
                l.p.domid = d;
                l.p.store_port = g.port;
                // Grant references of Xen's reserved entries; the
                // simulator maps the ring by domain.
                l.p.store_ring_ref = 0x10_0000 + u64::from(d);
                l.p.console_ring_ref = 0x10_0001 + u64::from(d);
                l.p.console_port = g.port + 1;
                l.guest = Some(g);
            }
            Step::Shutdown | Step::Destroy => {
                let d = l.p.domid;
                if let Some(c) = l.xlmon.as_mut() {
                    drop_events(c);
                }
                if *s == Step::Shutdown {
                    sim.with(|h| h.shutdown(d, ShutdownReason::Poweroff))
                        .map_err(|e| format!("shutdown {d}: {e:?}"))?;
                } else {
                    sim.destroy_domain(d)
                        .map_err(|e| format!("destroy {d}: {e}"))?;
                    l.guest = None;
                }
                // xl's monitor hears of it through @releaseDomain.
                if let Some(c) = l.xlmon.as_mut() {
                    loop {
                        let ev = c.next_event().map_err(|e| {
                            format!("{}: waiting for @releaseDomain: {e}", l.p.name)
                        })?;
                        if ev.path.starts_with("@releaseDomain") {
                            break;
                        }
                    }
                }
            }
            Step::Open(r) => {
                let c = connect(&self.m.socket)?;
                match r {
                    Role::Xl => l.xl = Some(c),
                    Role::XlMon => l.xlmon = Some(c),
                    Role::XlCmd => l.xlcmd = Some(c),
                    _ => return Err(format!("cannot open {r:?}")),
                }
            }
            Step::Close(r) => match r {
                Role::Xl => l.xl = None,
                Role::XlMon => l.xlmon = None,
                Role::XlCmd => l.xlcmd = None,
                _ => return Err(format!("cannot close {r:?}")),
            },
            Step::Req(_) => {}
        }
        Ok(())
    }

    /// True if nothing of the domain is left in the store.
    fn gone(&mut self, p: &Params) -> Result<bool, String> {
        for path in [
            format!("/local/domain/{}", p.domid),
            format!("/libxl/{}", p.domid),
            format!("/vm/{}", p.uuid),
            format!("/local/domain/0/backend/console/{}", p.domid),
        ] {
            match self.setup.read(Tx::NONE, &path) {
                Err(e) if e.xs() == Some(xenstore_proto::XsError::Enoent) => {}
                Ok(_) => return Ok(false),
                Err(e) => return Err(io_err(e)),
            }
        }
        let intro = self.setup.is_domain_introduced(p.domid).map_err(io_err)?;
        Ok(!intro)
    }
}

// ------------------------------------------------------------------ the run

#[derive(Debug, Default, Clone)]
struct Point {
    n: usize,
    lives: usize,
    create_wall_s: f64,
    destroy_wall_s: f64,
    create_ticks: u64,
    destroy_ticks: u64,
    create_ns: u64,
    destroy_ns: u64,
    rss_kib: u64,
    build_s: f64,
    not_gone: usize,
    /// Per life, schedstat ns.
    create_each: Vec<u64>,
    destroy_each: Vec<u64>,
}

fn median_us(v: &[u64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2] as f64 / 1e3,
        n => (v[n / 2 - 1] + v[n / 2]) as f64 / 2e3,
    }
}

fn run(args: &Args, template: &Template) -> Result<(Vec<Point>, u64, Vec<String>), String> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let daemon = args
        .daemon
        .clone()
        .unwrap_or_else(|| exe_dir.join("rxenstored"));
    // The stand-ins are built next to the programs (target/<profile>).
    // tmpfs if there is one: a ring page file per domain, 10,000 of them.
    let dir = args.dir.clone().unwrap_or_else(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        base.join(format!("xsbench-replay-{}", std::process::id()))
    });
    let m = start_machine(&daemon, args.daemon_cmd.as_deref(), &dir, &exe_dir)?;
    let mut host = Host::new(&m)?;
    host.run(&template.host, None)?;
    let drainer = Drainer::start()?;
    // Domains created and left to live (their monitors' connections, if
    // kept, are the drainer's).
    let mut population = 0usize;
    let mut points = Vec::new();
    let mut sizes = args.sizes.clone();
    sizes.sort_unstable();
    for &n in &sizes {
        let t = Instant::now();
        while population < n {
            let mut life = host.new_life();
            host.run(&template.create, Some(&mut life))?;
            // The guest falls silent (its ring stays mapped by the daemon);
            // xl's first connection closes (the fd budget: one per domain);
            // the monitor stays, or not.
            life.guest = None;
            life.xl = None;
            if let Some(c) = life.xlmon.take() {
                if !args.no_monitors {
                    drainer.add(c.into_inner());
                }
            }
            population += 1;
            if population % 1000 == 0 {
                eprintln!(
                    "xsbench-replay: {population} domains ({:.0} s)",
                    t.elapsed().as_secs_f64()
                );
            }
        }
        let build_s = t.elapsed().as_secs_f64();
        let mut p = Point {
            n,
            build_s,
            ..Point::default()
        };
        let mut perf = match &args.perf_ctl {
            Some(spec) => {
                let (c, a) = spec
                    .split_once(',')
                    .ok_or_else(|| "--perf-ctl wants CTL,ACK".to_owned())?;
                let ctl = std::fs::OpenOptions::new()
                    .write(true)
                    .open(c)
                    .map_err(|e| format!("{c}: {e}"))?;
                let ack = std::fs::File::open(a).map_err(|e| format!("{a}: {e}"))?;
                Some((ctl, ack))
            }
            None => None,
        };
        let mut ctl = |phase: &str, what: &str| {
            if let Some((c, a)) = perf.as_mut() {
                if args.perf_phase == phase && c.write_all(what.as_bytes()).is_ok() {
                    // perf answers "ack\n" once it has switched.
                    let mut b = [0u8; 5];
                    let _ = a.read_exact(&mut b[..4]);
                }
            }
        };
        for _ in 0..args.batch {
            let mut life = host.new_life();
            settle(host.pid);
            ctl("create", "enable\n");
            let (t0, c0) = (Instant::now(), cpu(host.pid));
            host.run(&template.create, Some(&mut life))?;
            let created = t0.elapsed();
            settle(host.pid);
            ctl("create", "disable\n");
            ctl("destroy", "enable\n");
            let (t1, c1) = (Instant::now(), cpu(host.pid));
            host.run(&template.destroy, Some(&mut life))?;
            drop(life.xl.take());
            drop(life.xlmon.take());
            let destroyed = t1.elapsed();
            settle(host.pid);
            ctl("destroy", "disable\n");
            let c2 = cpu(host.pid);
            p.lives += 1;
            p.create_wall_s += created.as_secs_f64();
            p.destroy_wall_s += destroyed.as_secs_f64();
            p.create_ticks += c1.0 - c0.0;
            p.destroy_ticks += c2.0 - c1.0;
            p.create_ns += c1.1 - c0.1;
            p.destroy_ns += c2.1 - c1.1;
            p.create_each.push(c1.1 - c0.1);
            p.destroy_each.push(c2.1 - c1.1);
            if !host.gone(&life.p)? {
                p.not_gone += 1;
            }
        }
        // The measured lives left the population alone (libxl's clean-up
        // stops at a parent that still has other domains' nodes).
        let consoles = host
            .setup
            .directory(Tx::NONE, "/local/domain/0/backend/console")
            .map_or(0, |v| v.len());
        if population > 0 && consoles != population {
            eprintln!("xsbench-replay: N={n}: {consoles} console backends left, want {population}");
            p.not_gone += 1;
        }
        p.rss_kib = rss_kib(host.pid);
        eprintln!(
            "xsbench-replay: N={n}: {:.0} us CPU per creation, {:.0} per destruction",
            p.create_ns as f64 / 1e3 / p.lives.max(1) as f64,
            p.destroy_ns as f64 / 1e3 / p.lives.max(1) as f64
        );
        points.push(p);
    }
    drop(drainer);
    eprintln!(
        "xsbench-replay: {} transactions run again after EAGAIN, {} listings read with DIRECTORY_PART after E2BIG",
        host.retries, host.parts
    );
    Ok((points, host.mismatches, host.mismatch_examples.clone()))
}

fn main() {
    let args = Args::parse();
    let text = match &args.template {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("xsbench-replay: {}: {e}", p.display());
                std::process::exit(2);
            }
        },
        None => TEMPLATE.to_owned(),
    };
    let template = match parse_template(&text) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("xsbench-replay: {e}");
            std::process::exit(2);
        }
    };
    let (points, mismatches, examples) = match run(&args, &template) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xsbench-replay: {e}");
            std::process::exit(1);
        }
    };
    let hz = clock_ticks_per_sec() as f64;
    let base = points.iter().find(|p| p.lives > 0).map(|p| {
        (
            p.create_ns as f64 / 1e3 / p.lives as f64,
            median_us(&p.create_each),
        )
    });
    let mut csv = String::from(
        "strategy,n,lives,creates_per_s,cpu_us_per_create,cpu_us_per_create_median,cpu_us_per_destroy,cpu_us_per_destroy_median,cpu_stat_us_per_create,cpu_stat_us_per_destroy,create_cost_ratio,create_cost_ratio_median,destroys_per_s,rss_kib,build_s,not_gone\n",
    );
    let reqs = |v: &[Step]| v.iter().filter(|s| matches!(s, Step::Req(_))).count();
    println!(
        "# {}: {} requests per life ({} create, {} destroy); {} lives per point, each created then destroyed at population N; CPU: the daemon's, mean / median per life",
        args.label,
        reqs(&template.create) + reqs(&template.destroy),
        reqs(&template.create),
        reqs(&template.destroy),
        args.batch
    );
    println!(
        "| N | created/s | CPU us/creation | CPU us/destruction | creation cost vs N={} (mean / median) | daemon RSS MiB |",
        points.first().map_or(0, |p| p.n)
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for p in &points {
        let k = p.lives.max(1) as f64;
        let per_create = p.create_ns as f64 / 1e3 / k;
        let per_destroy = p.destroy_ns as f64 / 1e3 / k;
        let (med_c, med_d) = (median_us(&p.create_each), median_us(&p.destroy_each));
        let (ratio, ratio_med) =
            base.map_or((f64::NAN, f64::NAN), |(b, bm)| (per_create / b, med_c / bm));
        let rate = k / p.create_wall_s.max(1e-9);
        println!(
            "| {} | {rate:.1} | {per_create:.0} / {med_c:.0} | {per_destroy:.0} / {med_d:.0} | {ratio:.2} / {ratio_med:.2} | {:.1} |",
            p.n,
            p.rss_kib as f64 / 1024.0
        );
        csv.push_str(&format!(
            "{},{},{},{rate:.2},{per_create:.1},{med_c:.1},{per_destroy:.1},{med_d:.1},{:.1},{:.1},{ratio:.3},{ratio_med:.3},{:.2},{},{:.1},{}\n",
            args.label,
            p.n,
            p.lives,
            p.create_ticks as f64 * 1e6 / hz / k,
            p.destroy_ticks as f64 * 1e6 / hz / k,
            k / p.destroy_wall_s.max(1e-9),
            p.rss_kib,
            p.build_s,
            p.not_gone
        ));
    }
    println!();
    print!("{csv}");
    if let Some(path) = &args.csv {
        if let Err(e) = std::fs::write(path, &csv) {
            eprintln!("xsbench-replay: {}: {e}", path.display());
        }
    }
    if mismatches > 0 {
        eprintln!("xsbench-replay: {mismatches} replies differed from the trace's, e.g.:");
        for e in &examples {
            eprintln!("  {e}");
        }
    }
    let not_gone: usize = points.iter().map(|p| p.not_gone).sum();
    if not_gone > 0 {
        eprintln!("xsbench-replay: {not_gone} destroyed domains left nodes behind");
    }
    if args.check && (not_gone > 0 || mismatches > 0) {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses() {
        let t = parse_template(TEMPLATE).expect("parses");
        let reqs = |v: &[Step]| v.iter().filter(|s| matches!(s, Step::Req(_))).count();
        assert!(reqs(&t.host) >= 2, "{:?}", t.host);
        assert!(reqs(&t.create) > 100);
        assert!(reqs(&t.destroy) > 30);
        for s in [Step::Create, Step::Open(Role::Xl), Step::Open(Role::XlMon)] {
            assert!(t.create.contains(&s), "{s:?}");
        }
        for s in [Step::Shutdown, Step::Destroy, Step::Close(Role::XlMon)] {
            assert!(t.destroy.contains(&s), "{s:?}");
        }
        let all = || t.create.iter().chain(&t.destroy);
        // Every role that talks in a life, and INTRODUCE with its parameters.
        for role in [
            Role::Xl,
            Role::XlMon,
            Role::XlCmd,
            Role::Consoled,
            Role::Dom0,
            Role::Guest,
        ] {
            assert!(
                all().any(|s| matches!(s, Step::Req(r) if r.role == role)),
                "{role:?}"
            );
        }
        assert!(
            all().any(|s| matches!(s, Step::Req(r) if r.ty == MsgType::Introduce
            && r.args == "$DOMID $STORE_RING_REF $STORE_PORT"))
        );
        assert!(all().any(|s| matches!(s, Step::Req(r) if r.ty == MsgType::SetPerms)));
        // Transactions start before they are used.
        let mut started = std::collections::HashSet::new();
        for s in all() {
            if let Step::Req(r) = s {
                if let Some(l) = &r.tx {
                    if r.ty == MsgType::TransactionStart {
                        started.insert((r.role, l.clone()));
                    } else {
                        assert!(started.contains(&(r.role, l.clone())), "{r:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn payloads() {
        assert_eq!(payload(MsgType::Write, "/a/b x y"), b"/a/b\0x y");
        assert_eq!(payload(MsgType::Write, "/a/b"), b"/a/b\0");
        assert_eq!(payload(MsgType::TransactionStart, ""), b"\0");
        assert_eq!(payload(MsgType::SetPerms, "/a n0 r1"), b"/a\0n0\0r1\0");
        assert_eq!(payload(MsgType::Write, "/a \\x01\\x7f"), b"/a\0\x01\x7f");
        let p = Params {
            domid: 7,
            uuid: "u".into(),
            name: "g".into(),
            store_ring_ref: 1,
            store_port: 2,
            console_ring_ref: 3,
            console_port: 4,
        };
        assert_eq!(
            p.apply("$DOMID $STORE_RING_REF $STORE_PORT /vm/$UUID $NAME $CONSOLE_PORT"),
            "7 1 2 /vm/u g 4"
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(parse_template("xl - OK READ /a\n").is_err());
        assert!(parse_template("== create\n!create\nxl - OK NOPE /a\n").is_err());
        assert!(parse_template("== create\n!create\nnobody - OK READ /a\n").is_err());
        assert!(parse_template("== create\n!fly\n").is_err());
        assert!(parse_template("== create\nxl - OK READ /a\n").is_err());
    }
}
