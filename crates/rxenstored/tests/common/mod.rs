//! Shared end-to-end test support: start the real `rxenstored` binary on a
//! temporary socket, and talk the raw protocol to it.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use xenstore_proto::{Header, Message, MsgType};

/// A running daemon, killed (SIGTERM) and cleaned up on drop.
pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A fresh temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("rxs-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_rxenstored")
}

impl Daemon {
    /// Starts `rxenstored -N --socket <tmp>/socket <extra...>` and waits
    /// until the socket accepts connections.
    pub fn start(extra: &[&str]) -> Daemon {
        Daemon::start_env(extra, &[])
    }

    /// Like [`Daemon::start`], with extra environment variables.
    pub fn start_env(extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Daemon {
        Daemon::start_cmd(Command::new(binary()), extra, env)
    }

    /// Like [`Daemon::start`], with at most `nofile` open descriptors.
    pub fn start_limited(nofile: u32, extra: &[&str]) -> Daemon {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(binary());
        Daemon::start_cmd(c, extra, &[])
    }

    fn start_cmd(mut cmd: Command, extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Daemon {
        let dir = temp_dir("d");
        let socket = dir.join("socket");
        let log = std::fs::File::create(dir.join("daemon.log")).expect("log");
        let child = cmd
            .arg("-N")
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rxenstored");
        let d = Daemon { child, dir, socket };
        d.wait_ready();
        d
    }

    /// Waits until the daemon answers a request: the socket accepts
    /// connections as soon as it is bound, before start-up (Xen, the local
    /// ring, domains found at start) is finished; an answer comes only from
    /// the running event loop.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(s) = UnixStream::connect(&self.socket) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                if xenstore_client::Client::new(s)
                    .read(xenstore_client::Tx::NONE, "/")
                    .is_ok()
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not start; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket)
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("daemon did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A raw-protocol client: `xenstore-client` over the daemon's socket, with
/// the assertions the tests want (replies as sent, panics on I/O errors).
pub struct Client {
    xs: xenstore_client::Client<UnixStream>,
    /// Watch events taken out of the client's queue by [`Client::reply`]
    /// callers that want to look at them.
    pub events: Vec<(String, String)>,
}

/// A reply: its type and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub header: Header,
    pub payload: Vec<u8>,
}

impl From<Message> for Reply {
    fn from(m: Message) -> Reply {
        Reply {
            header: m.header,
            payload: m.payload,
        }
    }
}

impl Reply {
    /// The error name, if this is an ERROR reply.
    pub fn error(&self) -> Option<String> {
        (self.header.msg_type == MsgType::Error as u32).then(|| {
            String::from_utf8_lossy(self.payload.strip_suffix(b"\0").unwrap_or(&self.payload))
                .into_owned()
        })
    }

    /// The payload as text, for assertions.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// Asserts success and returns the payload.
    pub fn ok(&self) -> &[u8] {
        assert!(
            self.error().is_none(),
            "unexpected error {:?}",
            self.error()
        );
        &self.payload
    }
}

const READ_TIMEOUT: Duration = Duration::from_secs(20);

impl Client {
    pub fn connect(path: &Path) -> Client {
        let xs = xenstore_client::Client::connect(path).expect("connect");
        let xenstore_client::Conn::Socket(stream) = xs.into_inner() else {
            unreachable!("connect gives a socket")
        };
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("timeout");
        Client {
            xs: xenstore_client::Client::new(stream),
            events: Vec::new(),
        }
    }

    /// A client on a connected socket (e.g. one end of a pair).
    pub fn from_stream(stream: UnixStream) -> Client {
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("timeout");
        Client {
            xs: xenstore_client::Client::new(stream),
            events: Vec::new(),
        }
    }

    /// The socket (timeouts, raw reads).
    pub fn stream(&mut self) -> &mut UnixStream {
        self.xs.get_mut()
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, b: &[u8]) {
        self.xs.get_mut().write_all(b).expect("write");
    }

    /// Sends a request of any type number, returns the req_id used.
    pub fn send(&mut self, t: u32, tx: u32, payload: &[u8]) -> u32 {
        self.xs
            .send_message(t, xenstore_client::Tx(tx), payload)
            .expect("write")
            .0
    }

    /// Reads one message of any kind, in the order the daemon sent them.
    pub fn read_message(&mut self) -> Result<Reply, xenstore_client::Error> {
        self.xs.next_message().map(Reply::from)
    }

    /// The next reply (whatever its request), keeping events seen
    /// meanwhile for [`Client::next_event`].
    pub fn reply(&mut self) -> Reply {
        self.xs.next_reply().expect("read reply").into()
    }

    /// A request and its reply.
    pub fn req(&mut self, t: MsgType, payload: &[u8]) -> Reply {
        self.req_tx(t, 0, payload)
    }

    /// A request in a transaction and its reply.
    pub fn req_tx(&mut self, t: MsgType, tx: u32, payload: &[u8]) -> Reply {
        let id = self
            .xs
            .send_message(t as u32, xenstore_client::Tx(tx), payload)
            .expect("write");
        self.xs.wait_message(id).expect("read reply").into()
    }

    pub fn write(&mut self, path: &str, value: &[u8]) -> Reply {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        p.extend_from_slice(value);
        self.req(MsgType::Write, &p)
    }

    pub fn read(&mut self, path: &str) -> Reply {
        self.req(MsgType::Read, &z(path))
    }

    /// Waits up to `ms` for one more event (returns it), None on timeout.
    pub fn next_event(&mut self, ms: u64) -> Option<(String, String)> {
        if !self.events.is_empty() {
            return Some(self.events.remove(0));
        }
        if self.xs.kept_events() == 0 {
            self.stream()
                .set_read_timeout(Some(Duration::from_millis(ms.max(1))))
                .expect("timeout");
        }
        let r = self.xs.next_event();
        self.stream()
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("timeout");
        match r {
            Ok(e) => Some((e.path, e.token)),
            Err(e) if e.is_timeout() => None,
            Err(e) => panic!("expected an event, got {e}"),
        }
    }
}

/// A NUL-terminated string.
pub fn z(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Several NUL-terminated strings.
pub fn zs(parts: &[&str]) -> Vec<u8> {
    parts.iter().flat_map(|s| z(s)).collect()
}

pub fn split_event(p: &[u8]) -> (String, String) {
    let mut it = p.split(|&b| b == 0);
    let path = String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
    let token = String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
    (path, token)
}

/// Runs a command with XENSTORED_PATH pointing at the daemon; returns
/// (status success, stdout, stderr).
pub fn run_tool(d: &Daemon, prog: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(prog)
        .args(args)
        .env("XENSTORED_PATH", &d.socket)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e} (install xenstore-utils / xen-utils-4.17 / python3-pyxs, see .ci/run)"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ----- simulated hosts ----------------------------------------------------

/// The stand-in libraries under their sonames, next to the binary under
/// test (`cargo build --workspace` makes them).
pub fn stand_ins(tmp: &Path) -> PathBuf {
    stand_ins_but(tmp, &[])
}

/// The stand-ins, leaving out `without` (a host whose Xen lacks a
/// library, as Xen before 4.21 lacks libxenmanage).
pub fn stand_ins_but(tmp: &Path, without: &[&str]) -> PathBuf {
    let target = Path::new(binary()).parent().expect("target dir");
    xensim::stand_ins::link(target, &tmp.join("lib"), without).expect("stand-ins")
}

/// A simulated host: the simulator in this process, the daemon on its
/// stand-ins.
pub struct Host {
    pub sim: xensim::Sim,
    pub daemon: Daemon,
    pub tmp: PathBuf,
}

impl Host {
    pub fn start() -> Host {
        Host::start_after(|_| {})
    }

    /// Starts the simulator, runs `prepare` on it, then starts the daemon.
    pub fn start_after(prepare: impl FnOnce(&xensim::Sim)) -> Host {
        Host::start_with(&[], prepare)
    }

    /// Like [`Host::start_after`], with extra daemon arguments.
    pub fn start_with(extra: &[&str], prepare: impl FnOnce(&xensim::Sim)) -> Host {
        Host::start_full(extra, &[], prepare)
    }

    /// A host on Xen `major.minor` whose Xen installation lacks the
    /// libraries `without` (e.g. `libxenmanage` before 4.21).
    pub fn start_xen(version: (u32, u32), without: &[&str], extra: &[&str]) -> Host {
        Host::start_full(extra, without, |sim| {
            sim.with(|h| h.set_version(version.0, version.1))
        })
    }

    fn start_full(extra: &[&str], without: &[&str], prepare: impl FnOnce(&xensim::Sim)) -> Host {
        let tmp = temp_dir("host");
        let sim = xensim::Sim::start(&tmp.join("sim"), 0x5eed).expect("simulator");
        prepare(&sim);
        let libs = stand_ins_but(&tmp, without);
        let sock = sim.socket();
        let dir = sim.dir().to_path_buf();
        let kva = dir.join("xsd_kva");
        let port = dir.join("xsd_port");
        let daemon = Daemon::start_env(
            &[
                "--xen-lib-dir",
                libs.to_str().expect("utf8"),
                "--xsd-kva",
                kva.to_str().expect("utf8"),
                "--xsd-port",
                port.to_str().expect("utf8"),
            ]
            .into_iter()
            .chain(extra.iter().copied())
            .collect::<Vec<_>>(),
            &[("XENSIM_SOCKET", sock.as_os_str())],
        );
        Host { sim, daemon, tmp }
    }

    /// Builds a domain and introduces it as libxl does: home nodes owned
    /// by the guest, then INTRODUCE.
    pub fn guest(&self, toolstack: &mut Client) -> xensim::Guest {
        let d = self.sim.create_domain(None, 0).expect("create");
        let g = xensim::Guest::attach(&self.sim.socket(), d, 0).expect("guest");
        let home = format!("/local/domain/{d}");
        toolstack.req(MsgType::Mkdir, &z(&home)).ok();
        toolstack
            .req(MsgType::SetPerms, &zs(&[&home, &format!("n{d}")]))
            .ok();
        let r = toolstack.req(
            MsgType::Introduce,
            &zs(&[&d.to_string(), "0", &g.port.to_string()]),
        );
        assert_eq!(
            r.ok(),
            b"OK\0",
            "INTRODUCE {d}; daemon log:\n{}",
            self.daemon.log()
        );
        g
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}
