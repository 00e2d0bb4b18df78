//! xsbench-memory: what a node costs a Xenstore daemon, in resident memory.
//!
//! Starts a fresh daemon for each store shape (rxenstored by default, or
//! any command given with `--daemon-cmd`, e.g. C xenstored inside the
//! real-Xen dom0), fills it through its socket with 64 writes in flight,
//! and prints the growth of its resident set divided by the nodes written.
//! Shapes: `N:VALUE_BYTES`, nodes spread 500 to a directory
//! (`/mem/d<i/500>/n<i%500>`), so both the node records and the child
//! lists of large directories are counted.
//!
//! Then, each on a fresh daemon, the growth per watch (`--watches`
//! watches on distinct paths, registered by one connection) and per idle
//! connection (`--connections` sockets, each served one READ and then
//! left open).
//!
//! Figures are meant to be compared within one run (two daemons side by
//! side), not across machines.

use clap::Parser;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use xenstore_client::{Client, ReqId, Tx};
use xenstore_proto::MsgType;

/// Resident memory per node of a Xenstore daemon.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The rxenstored binary (default: next to this program).
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Run this instead (a shell command; `$SOCKET` is where it must
    /// listen), e.g. "XENSTORED_PATH=$SOCKET /usr/sbin/xenstored -N".
    #[arg(long)]
    daemon_cmd: Option<String>,
    /// Store shapes, NODES:VALUE_BYTES.
    #[arg(long, value_delimiter = ',', default_value = "200000:8,100000:100")]
    shapes: Vec<String>,
    /// Work directory (default: a temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Watches for the memory per watch (0: not measured).
    #[arg(long, default_value_t = 10_000)]
    watches: usize,
    /// Idle connections for the memory per connection (0: not measured).
    #[arg(long, default_value_t = 500)]
    connections: usize,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn start(args: &Args, socket: &Path) -> std::io::Result<Child> {
    let mut cmd = match &args.daemon_cmd {
        Some(c) => {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(format!("exec {c}")).env("SOCKET", socket);
            cmd
        }
        None => {
            let exe = args.daemon.clone().unwrap_or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|p| p.parent().map(|d| d.join("rxenstored")))
                    .unwrap_or_else(|| PathBuf::from("rxenstored"))
            });
            let mut cmd = Command::new(exe);
            cmd.args(["-N", "--no-xen", "--socket"])
                .arg(socket)
                .env("RXENSTORED_LOG", "warn");
            cmd
        }
    };
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(s) = UnixStream::connect(socket) {
            if Client::new(s).read(Tx::NONE, "/").is_ok() {
                return Ok(child);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(std::io::Error::other("the daemon did not answer"))
}

/// Writes `n` nodes of `value_len` bytes with 64 requests in flight.
fn fill(socket: &Path, n: usize, value_len: usize) -> Result<(), String> {
    let s = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    let mut xs = Client::new(s);
    let value = vec![b'v'; value_len];
    let mut in_flight: std::collections::VecDeque<ReqId> = Default::default();
    for i in 0..n {
        let mut p = format!("/mem/d{}/n{}", i / 500, i % 500).into_bytes();
        p.push(0);
        p.extend_from_slice(&value);
        in_flight.push_back(
            xs.send(MsgType::Write, Tx::NONE, &p)
                .map_err(|e| e.to_string())?,
        );
        if in_flight.len() >= 64 {
            if let Some(id) = in_flight.pop_front() {
                xs.wait(id).map_err(|e| format!("write {i}: {e}"))?;
            }
        }
    }
    for id in in_flight {
        xs.wait(id).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Registers `n` watches (`/watched/p<i>`, token `t<i>`) from one
/// connection, 64 in flight; the connection is returned open (its watches
/// live as long as it does).
fn watch_many(socket: &Path, n: usize) -> Result<Client<UnixStream>, String> {
    let s = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    let mut xs = Client::new(s);
    let mut in_flight: std::collections::VecDeque<ReqId> = Default::default();
    for i in 0..n {
        let p = format!("/watched/p{i}\0t{i}\0").into_bytes();
        in_flight.push_back(
            xs.send(MsgType::Watch, Tx::NONE, &p)
                .map_err(|e| e.to_string())?,
        );
        if in_flight.len() >= 64 {
            if let Some(id) = in_flight.pop_front() {
                xs.wait(id).map_err(|e| format!("watch {i}: {e}"))?;
            }
        }
    }
    for id in in_flight {
        xs.wait(id).map_err(|e| e.to_string())?;
    }
    Ok(xs)
}

/// Opens `n` connections, each served one READ; returned open.
fn connect_many(socket: &Path, n: usize) -> Result<Vec<Client<UnixStream>>, String> {
    (0..n)
        .map(|i| {
            let s = UnixStream::connect(socket).map_err(|e| format!("connection {i}: {e}"))?;
            let mut xs = Client::new(s);
            xs.read(Tx::NONE, "/")
                .map_err(|e| format!("connection {i}: {e}"))?;
            Ok(xs)
        })
        .collect()
}

/// The daemon's growth while `what` runs (and what it made is kept), in
/// bytes per item; a fresh daemon.
fn growth_per_item<T>(
    args: &Args,
    socket: &Path,
    n: usize,
    what: impl FnOnce(&Path) -> Result<T, String>,
) -> Result<(u64, u64, f64), String> {
    let _ = std::fs::remove_file(socket);
    let mut child = start(args, socket).map_err(|e| e.to_string())?;
    let before = rss_kib(child.id()).unwrap_or(0);
    let kept = what(socket);
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(child.id()).unwrap_or(0);
    // What was kept open is closed here.
    let done = kept.map(|_| ());
    let _ = child.kill();
    let _ = child.wait();
    done?;
    Ok((
        before,
        after,
        (after.saturating_sub(before) * 1024) as f64 / n.max(1) as f64,
    ))
}

fn main() {
    let args = Args::parse();
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("xsbench-memory-{}", std::process::id()))
    });
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("xsbench-memory: {}: {e}", dir.display());
        std::process::exit(1);
    }
    println!("shape,nodes,value_bytes,rss_before_kib,rss_after_kib,bytes_per_node,fill_s");
    let mut failed = false;
    for shape in &args.shapes {
        let parsed = shape
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
        let Some((n, len)) = parsed else {
            eprintln!("xsbench-memory: bad shape {shape:?} (NODES:VALUE_BYTES)");
            std::process::exit(2);
        };
        let socket = dir.join(format!("s-{n}-{len}.sock"));
        let _ = std::fs::remove_file(&socket);
        let mut child = match start(&args, &socket) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("xsbench-memory: {e}");
                std::process::exit(1);
            }
        };
        let before = rss_kib(child.id()).unwrap_or(0);
        let t0 = Instant::now();
        let r = fill(&socket, n, len);
        let secs = t0.elapsed().as_secs_f64();
        // Let the daemon settle (freed buffers, no requests in flight).
        std::thread::sleep(Duration::from_millis(300));
        let after = rss_kib(child.id()).unwrap_or(0);
        let _ = child.kill();
        let _ = child.wait();
        match r {
            Ok(()) => println!(
                "{shape},{n},{len},{before},{after},{:.0},{secs:.2}",
                (after.saturating_sub(before) * 1024) as f64 / n as f64
            ),
            Err(e) => {
                eprintln!("xsbench-memory: {shape}: {e}");
                failed = true;
            }
        }
    }
    println!("measure,count,rss_before_kib,rss_after_kib,bytes_each");
    let per = [("watch", args.watches), ("connection", args.connections)];
    for (measure, n) in per.into_iter().filter(|(_, n)| *n > 0) {
        let socket = dir.join(format!("{measure}.sock"));
        let r = match measure {
            "watch" => growth_per_item(&args, &socket, n, |s| watch_many(s, n)),
            _ => growth_per_item(&args, &socket, n, |s| connect_many(s, n)),
        };
        match r {
            Ok((before, after, each)) => {
                println!("{measure},{n},{before},{after},{each:.0}")
            }
            Err(e) => {
                eprintln!("xsbench-memory: {measure}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
