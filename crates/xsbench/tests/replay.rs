//! xsbench-replay end to end: one PV guest's life replayed against the
//! release rxenstored on the simulator leaves nothing of the domain behind,
//! and every reply matches the trace's outcome (`--check`).
//!
//! Needs `rxenstored` and the simulator's stand-ins next to the program
//! (`cargo build --release --workspace` first, as CI does).

use std::process::Command;

#[test]
fn one_life_on_the_simulator_leaves_no_node() {
    let exe = env!("CARGO_BIN_EXE_xsbench-replay");
    let dir = std::env::temp_dir().join(format!("xsbench-replay-test-{}", std::process::id()));
    let out = Command::new(exe)
        .args(["--sizes", "0", "--batch", "1", "--check", "--dir"])
        .arg(&dir)
        .output()
        .expect("run xsbench-replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "xsbench-replay failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // The CSV line of the one point: one life, nothing left behind.
    let header = stdout
        .lines()
        .find(|l| l.starts_with("strategy,"))
        .expect("CSV header");
    let cols: Vec<&str> = header.split(',').collect();
    let row: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("rxenstored,"))
        .expect("CSV row")
        .split(',')
        .collect();
    let col = |name: &str| {
        let i = cols.iter().position(|c| *c == name).expect(name);
        row[i]
    };
    assert_eq!(col("n"), "0");
    assert_eq!(col("lives"), "1");
    assert_eq!(col("not_gone"), "0");
    assert!(!stderr.contains("differed from the trace"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
