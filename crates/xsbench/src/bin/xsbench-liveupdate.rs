//! xsbench-liveupdate: how long a live update stops the daemon.
//!
//! For each store size, starts a fresh rxenstored on a socket, fills it
//! (`/lu/d<i/500>/n<i%500>`, 8-byte values, 64 writes in flight), keeps a
//! watcher connected, then times `live-update -s` from the request to its
//! `OK` (sent by the new binary, after the state went through the stream
//! file and `exec`), and checks that the watcher's watch still fires and
//! that the process is the same. Prints one CSV row per size: the pause,
//! the state file's size and the daemon's resident memory before.

use clap::Parser;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use xenstore_client::{Client, ReqId, Tx};
use xenstore_proto::MsgType;

/// The pause of a live update, by store size.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The rxenstored binary (default: next to this program); it updates
    /// to itself.
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Store sizes (nodes).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    sizes: Vec<usize>,
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

fn connect(socket: &Path) -> Result<Client<UnixStream>, String> {
    let s = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    Ok(Client::new(s))
}

fn one(exe: &Path, n: usize) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("xsbench-lu-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let socket = dir.join("socket");
    let mut child = Command::new(exe)
        .args(["-N", "--no-xen", "--socket"])
        .arg(&socket)
        // XSBENCH_DAEMON_LOG=info shows the daemon's own timing of the
        // update's phases on standard error.
        .env(
            "RXENSTORED_LOG",
            std::env::var("XSBENCH_DAEMON_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let result = (|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut xs = loop {
            if let Ok(mut c) = connect(&socket) {
                if c.read(Tx::NONE, "/").is_ok() {
                    break c;
                }
            }
            if Instant::now() > deadline {
                return Err("the daemon did not start".to_string());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut in_flight: std::collections::VecDeque<ReqId> = Default::default();
        for i in 0..n {
            let p = format!("/lu/d{}/n{}\0vvvvvvvv", i / 500, i % 500);
            in_flight.push_back(
                xs.send(MsgType::Write, Tx::NONE, p.as_bytes())
                    .map_err(|e| e.to_string())?,
            );
            if in_flight.len() >= 64 {
                if let Some(id) = in_flight.pop_front() {
                    xs.wait(id).map_err(|e| e.to_string())?;
                }
            }
        }
        for id in in_flight {
            xs.wait(id).map_err(|e| e.to_string())?;
        }
        let mut watcher = connect(&socket)?;
        watcher.watch("/lu/d0", "w").map_err(|e| e.to_string())?;
        watcher.next_event().map_err(|e| e.to_string())?;
        let rss = rss_kib(child.id());
        let exe_s = exe.display().to_string();
        let ok = xs
            .control(&["live-update", "-f", &exe_s])
            .map_err(|e| e.to_string())?;
        if ok != "OK" {
            return Err(format!("-f: {ok}"));
        }
        let state_file = dir.join("state_dump");
        let t0 = Instant::now();
        let answer = xs
            .control(&["live-update", "-s"])
            .map_err(|e| e.to_string())?;
        let pause = t0.elapsed();
        if answer != "OK" {
            return Err(format!("-s: {answer}"));
        }
        let cmd = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
        if !String::from_utf8_lossy(&cmd).split('\0').any(|a| a == "-U") {
            return Err("the daemon's process is not the updated one".into());
        }
        if state_file.exists() {
            return Err("the state file was left behind".into());
        }
        xs.write(Tx::NONE, "/lu/d0/n1", b"after")
            .map_err(|e| e.to_string())?;
        let e = watcher.next_event().map_err(|e| e.to_string())?;
        if e.path != "/lu/d0/n1" {
            return Err(format!("unexpected event {e:?}"));
        }
        Ok(format!("{n},{:.2},{rss}", pause.as_secs_f64() * 1e3))
    })();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn main() {
    let args = Args::parse();
    let exe = args.daemon.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("rxenstored")))
            .unwrap_or_else(|| PathBuf::from("rxenstored"))
    });
    println!("nodes,pause_ms,rss_before_kib");
    for n in &args.sizes {
        match one(&exe, *n) {
            Ok(row) => println!("{row}"),
            Err(e) => {
                eprintln!("xsbench-liveupdate: {n} nodes: {e}");
                std::process::exit(1);
            }
        }
    }
}
