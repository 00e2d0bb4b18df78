//! xsbench: drives a Xenstore daemon over its Unix socket and reports
//! throughput and latency. Figures from one run are meant to be compared
//! with each other (ratios), not with figures from another machine or run.

use clap::{Parser, ValueEnum};
use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xenstore_client::{Client, Tx};
use xenstore_proto::{Message, MsgType};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Workload {
    /// WRITE then READ of a per-client key.
    Rw,
    /// START, READ, WRITE, END(T); EAGAIN retried and counted.
    Tx,
    /// 64 READs sent back to back, then their replies.
    Pipeline,
    /// WRITE under a watched subtree; latency until the event arrives.
    Watch,
    /// The full child list of `/bench/list` (`--children` entries, made
    /// before measuring): DIRECTORY, or DIRECTORY_PART in parts when it is
    /// too long for one reply, as libxenstore reads it.
    Listing,
    /// Watch fan-out: `--watchers` connections watch `/bench/fan`; one
    /// WRITE under it; latency until the last watcher has its event
    /// (`--clients` is ignored: one writer).
    Fanout,
}

/// Load generator for Xenstore daemons.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Socket of the daemon (default: $XENSTORED_PATH).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Client connections, one thread each.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Duration of the measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// What each client does.
    #[arg(long, value_enum, default_value_t = Workload::Rw)]
    workload: Workload,
    /// Nodes written before measuring, to show costs do not grow with the
    /// store.
    #[arg(long, default_value_t = 0)]
    prefill: usize,
    /// Children of `/bench/list` for the `listing` workload.
    #[arg(long, default_value_t = 10_000)]
    children: usize,
    /// Watching connections for the `fanout` workload.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
}

/// One connection: `xenstore-client` over the socket, with replies as the
/// daemon sent them (errors are results here, not failures).
struct Conn {
    xs: Client<UnixStream>,
}

impl Conn {
    fn open(p: &PathBuf) -> io::Result<Conn> {
        Ok(Conn {
            xs: Client::new(UnixStream::connect(p)?),
        })
    }

    fn call(&mut self, t: MsgType, tx: u32, payload: Vec<u8>) -> io::Result<Message> {
        let id = self.xs.send(t, Tx(tx), &payload).map_err(io_err)?;
        self.xs.wait_message(id).map_err(io_err)
    }
}

fn io_err(e: xenstore_client::Error) -> io::Error {
    match e {
        xenstore_client::Error::Io(e) => e,
        e => io::Error::other(e),
    }
}

fn z(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn write_payload(path: &str, value: &[u8]) -> Vec<u8> {
    let mut v = z(path);
    v.extend_from_slice(value);
    v
}

fn is_error(m: &Message, name: &str) -> bool {
    m.kind() == Some(MsgType::Error) && m.payload.strip_suffix(b"\0") == Some(name.as_bytes())
}

#[derive(Default)]
struct Stats {
    ops: u64,
    retries: u64,
    lat_ns: Vec<u64>,
    /// Seconds measured, when not the whole run (fanout: its setup is not).
    measured: Option<f64>,
}

fn client(args: &Args, socket: &PathBuf, id: usize, until: Instant) -> io::Result<Stats> {
    let mut c = Conn::open(socket)?;
    let mut st = Stats::default();
    let key = format!("/bench/c{id}/key");
    if let Workload::Watch = args.workload {
        let r = c.call(
            MsgType::Watch,
            0,
            [z(&format!("/bench/c{id}")), z("t")].concat(),
        )?;
        if r.kind() == Some(MsgType::Error) {
            return Err(io::Error::other("WATCH refused"));
        }
        c.xs.next_event().map_err(io_err)?; // the initial event
    }
    let mut n: u64 = 0;
    while Instant::now() < until {
        let t0 = Instant::now();
        match args.workload {
            Workload::Rw => {
                c.call(
                    MsgType::Write,
                    0,
                    write_payload(&key, n.to_string().as_bytes()),
                )?;
                c.call(MsgType::Read, 0, z(&key))?;
                st.ops += 2;
            }
            Workload::Tx => loop {
                let r = c.call(MsgType::TransactionStart, 0, z(""))?;
                let tx: u32 =
                    std::str::from_utf8(r.payload.strip_suffix(b"\0").unwrap_or_default())
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| io::Error::other("bad TRANSACTION_START reply"))?;
                c.call(MsgType::Read, tx, z(&key))?;
                c.call(
                    MsgType::Write,
                    tx,
                    write_payload(&key, n.to_string().as_bytes()),
                )?;
                let r = c.call(MsgType::TransactionEnd, tx, z("T"))?;
                st.ops += 4;
                if is_error(&r, "EAGAIN") {
                    st.retries += 1;
                    continue;
                }
                break;
            },
            Workload::Pipeline => {
                let path = z("/bench");
                let ids =
                    c.xs.send_batch((0..64).map(|_| (MsgType::Read, Tx::NONE, &path[..])))
                        .map_err(io_err)?;
                for id in ids {
                    c.xs.wait_message(id).map_err(io_err)?;
                }
                st.ops += 64;
            }
            Workload::Listing => {
                let names = c.xs.directory(Tx::NONE, "/bench/list").map_err(io_err)?;
                if names.len() != args.children {
                    return Err(io::Error::other(format!(
                        "listing gave {} children, not {}",
                        names.len(),
                        args.children
                    )));
                }
                st.ops += 1;
            }
            Workload::Fanout => return Err(io::Error::other("fanout runs on its own")),
            Workload::Watch => {
                let id =
                    c.xs.send(MsgType::Write, Tx::NONE, &write_payload(&key, b"x"))
                        .map_err(io_err)?;
                // Reply and event, in either order.
                c.xs.wait_message(id).map_err(io_err)?;
                c.xs.next_event().map_err(io_err)?;
                st.ops += 1;
            }
        }
        st.lat_ns.push(t0.elapsed().as_nanos() as u64);
        n += 1;
    }
    Ok(st)
}

mod fanout {
    //! One writer, many watching connections: the time from a WRITE to the
    //! event at the last watcher. The watchers' sockets are registered
    //! once with epoll and read as they become readable, so what is timed
    //! is the daemon's delivery plus one read per watcher.

    use super::{io_err, write_payload, Stats};
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    use std::io::{self, Read};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::path::Path;
    use std::time::{Duration, Instant};
    use xenstore_client::{Client, Tx};
    use xenstore_proto::{MsgType, HEADER_SIZE};

    /// A watcher: its socket and the bytes of a message not yet whole.
    struct Watcher {
        sock: UnixStream,
        partial: Vec<u8>,
    }

    impl Watcher {
        /// Reads what is there; the number of whole WATCH_EVENT messages.
        /// A read that does not fill the buffer emptied the socket, and
        /// epoll (edge-triggered, as mio registers) reports any later
        /// bytes: so one read per event, not a second one to learn the
        /// socket is empty (the same client measures every daemon).
        fn events(&mut self) -> io::Result<usize> {
            let mut buf = [0u8; 4096];
            let mut n = 0;
            loop {
                match self.sock.read(&mut buf) {
                    Ok(0) => return Err(io::Error::other("a watcher's connection closed")),
                    Ok(k) => {
                        self.partial.extend_from_slice(&buf[..k]);
                        if k < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            while self.partial.len() >= HEADER_SIZE {
                let word = |i: usize| {
                    self.partial
                        .get(i..i + 4)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, u32::from_le_bytes)
                };
                let (kind, len) = (word(0), word(12) as usize);
                if self.partial.len() < HEADER_SIZE + len {
                    break;
                }
                self.partial.drain(..HEADER_SIZE + len);
                if kind == MsgType::WatchEvent as u32 {
                    n += 1;
                } else {
                    return Err(io::Error::other(format!(
                        "a watcher got message type {kind}"
                    )));
                }
            }
            Ok(n)
        }
    }

    /// Raises the soft limit on open files to the hard one (a thousand
    /// watchers are a thousand descriptors).
    fn raise_nofile() {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let mut l = getrlimit(Resource::Nofile);
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }

    pub fn run(socket: &Path, watchers: usize, seconds: Duration) -> io::Result<Stats> {
        raise_nofile();
        let mut writer = Client::new(UnixStream::connect(socket)?);
        writer.write(Tx::NONE, "/bench/fan", b"").map_err(io_err)?;
        let mut ws = Vec::with_capacity(watchers);
        for i in 0..watchers {
            let mut c = Client::new(UnixStream::connect(socket)?);
            c.watch("/bench/fan", "f").map_err(io_err)?;
            c.next_event().map_err(io_err)?; // the initial event
            let sock = c.into_inner();
            sock.set_nonblocking(true)?;
            ws.push(Watcher {
                sock,
                partial: Vec::new(),
            });
            if i % 100 == 99 {
                // Let the daemon keep up with the connections.
                std::thread::yield_now();
            }
        }
        let payload = write_payload("/bench/fan/v", b"x");
        let mut poll = Poll::new()?;
        for (i, w) in ws.iter_mut().enumerate() {
            poll.registry().register(
                &mut SourceFd(&w.sock.as_raw_fd()),
                Token(i),
                Interest::READABLE,
            )?;
        }
        let mut events = Events::with_capacity(1024);
        let mut st = Stats::default();
        let mut done = vec![false; ws.len()];
        let until = Instant::now() + seconds;
        while Instant::now() < until {
            done.iter_mut().for_each(|d| *d = false);
            let mut left = ws.len();
            let t0 = Instant::now();
            let id = writer
                .send(MsgType::Write, Tx::NONE, &payload)
                .map_err(io_err)?;
            while left > 0 {
                poll.poll(&mut events, Some(Duration::from_secs(10)))?;
                if events.is_empty() {
                    return Err(io::Error::other(format!(
                        "{left} watchers had no event after 10 s"
                    )));
                }
                for ev in events.iter() {
                    let i = ev.token().0;
                    let Some(w) = ws.get_mut(i) else { continue };
                    match w.events()? {
                        0 => {}
                        1 if !done[i] => {
                            done[i] = true;
                            left -= 1;
                        }
                        k => {
                            return Err(io::Error::other(format!(
                                "a watcher got {k} events for one write"
                            )))
                        }
                    }
                }
            }
            st.lat_ns.push(t0.elapsed().as_nanos() as u64);
            writer.wait(id).map_err(io_err)?;
            st.ops += 1;
        }
        st.measured = Some((Instant::now() - (until - seconds)).as_secs_f64());
        Ok(st)
    }
}

fn pct(v: &[u64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)] as f64 / 1000.0
}

fn main() {
    let args = Args::parse();
    let Some(socket) = args
        .socket
        .clone()
        .or_else(|| std::env::var_os("XENSTORED_PATH").map(PathBuf::from))
    else {
        eprintln!("xsbench: give --socket or set XENSTORED_PATH");
        std::process::exit(2);
    };
    if args.prefill > 0 {
        let mut c = match Conn::open(&socket) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("xsbench: {}: {e}", socket.display());
                std::process::exit(1);
            }
        };
        for i in 0..args.prefill {
            let p = format!("/prefill/d{}/n{}", i / 500, i % 500);
            if let Err(e) = c.call(MsgType::Write, 0, write_payload(&p, b"v")) {
                eprintln!("xsbench: prefill: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Workload::Listing = args.workload {
        let made = Conn::open(&socket).and_then(|mut c| {
            c.xs.rm(Tx::NONE, "/bench/list").ok();
            let mut names: Vec<Vec<u8>> = Vec::new();
            for i in 0..args.children {
                names.push(format!("/bench/list/child-{i:05}\0").into_bytes());
            }
            for batch in names.chunks(64) {
                let ids =
                    c.xs.send_batch(batch.iter().map(|p| (MsgType::Mkdir, Tx::NONE, &p[..])))
                        .map_err(io_err)?;
                for id in ids {
                    c.xs.wait(id).map_err(io_err)?;
                }
            }
            Ok(())
        });
        if let Err(e) = made {
            eprintln!("xsbench: making /bench/list: {e}");
            std::process::exit(1);
        }
    }
    let until = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let clients = if let Workload::Fanout = args.workload {
        1
    } else {
        args.clients
    };
    let results: Vec<io::Result<Stats>> = if let Workload::Fanout = args.workload {
        // The watchers are set up first; the measurement lasts --seconds
        // from then.
        vec![fanout::run(
            &socket,
            args.watchers,
            Duration::from_secs_f64(args.seconds),
        )]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..args.clients)
                .map(|i| {
                    let (a, sock) = (&args, &socket);
                    s.spawn(move || client(a, sock, i, until))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("client thread panicked")))
                })
                .collect()
        })
    };
    let mut elapsed = started.elapsed().as_secs_f64();
    let mut all = Stats::default();
    for r in results {
        match r {
            Ok(s) => {
                if let Some(m) = s.measured {
                    elapsed = m;
                }
                all.ops += s.ops;
                all.retries += s.retries;
                all.lat_ns.extend(s.lat_ns);
            }
            Err(e) => {
                eprintln!("xsbench: client failed: {e}");
                std::process::exit(1);
            }
        }
    }
    all.lat_ns.sort_unstable();
    println!(
        "workload={:?} clients={} prefill={} seconds={:.2} ops={} ops_per_s={:.0} iterations={} p50_us={:.1} p99_us={:.1} max_us={:.1} eagain={}{}",
        args.workload,
        clients,
        args.prefill,
        elapsed,
        all.ops,
        all.ops as f64 / elapsed,
        all.lat_ns.len(),
        pct(&all.lat_ns, 0.5),
        pct(&all.lat_ns, 0.99),
        pct(&all.lat_ns, 1.0),
        all.retries,
        match args.workload {
            Workload::Fanout => format!(" watchers={}", args.watchers),
            _ => String::new(),
        }
    );
}
