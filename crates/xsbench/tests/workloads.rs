//! Every xsbench workload runs against the real rxenstored (built next to
//! xsbench by `cargo build --release --workspace`) and reports operations;
//! a workload that sees a wrong reply or a missing or extra watch event
//! exits with an error. Nothing here is timed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn daemon(name: &str) -> Option<(Daemon, PathBuf)> {
    let xsbench = PathBuf::from(env!("CARGO_BIN_EXE_xsbench"));
    let exe = xsbench.parent()?.join("rxenstored");
    assert!(
        exe.exists(),
        "{} is not built: run `cargo build --release --workspace` first",
        exe.display()
    );
    let dir = std::env::temp_dir().join(format!("xsbench-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).ok()?;
    let socket = dir.join("socket");
    let child = Command::new(exe)
        .args(["-N", "--no-xen", "--socket"])
        .arg(&socket)
        .env("RXENSTORED_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let d = Daemon { child, dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((d, socket))
}

fn run(socket: &PathBuf, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_xsbench"))
        .arg("--socket")
        .arg(socket)
        .args(["--seconds", "0.3"])
        .args(args)
        .output()
        .expect("xsbench runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "xsbench {args:?}: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn ops(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("ops="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn every_workload_runs_against_rxenstored() {
    let Some((_d, socket)) = daemon("all") else {
        return;
    };
    for w in [
        &["--workload", "rw"][..],
        &["--workload", "tx"],
        &["--workload", "pipeline"],
        &["--workload", "watch"],
        &[
            "--workload",
            "listing",
            "--children",
            "3000",
            "--clients",
            "1",
        ],
        &["--workload", "fanout", "--watchers", "1"],
        &["--workload", "fanout", "--watchers", "300"],
    ] {
        let line = run(&socket, w);
        assert!(ops(&line) > 0, "{w:?}: {line}");
        if w.contains(&"fanout") {
            assert!(line.contains(&format!("watchers={}", w[3])), "{line}");
        }
    }
}
