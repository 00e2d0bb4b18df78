//! The daemon's contract with the scripts and service managers that start
//! it: forking with a pid file, systemd readiness, signals, refusing a
//! second instance, command-line errors.

mod common;
use common::{binary, temp_dir, Client, Daemon};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::Command;
use std::time::{Duration, Instant};
use xenstore_proto::MsgType;

fn pid_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn forks_writes_pid_file_and_cleans_up_on_sigterm() {
    let dir = temp_dir("fork");
    let socket = dir.join("socket");
    let pid_file = dir.join("xenstored.pid");
    let st = Command::new(binary())
        .arg("--socket")
        .arg(&socket)
        .arg("--pid-file")
        .arg(&pid_file)
        .status()
        .expect("run");
    assert!(st.success(), "parent must exit 0 once the daemon serves");
    // The pid file names the daemon, which already serves.
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file written before the parent returned")
        .trim()
        .parse()
        .expect("pid");
    assert!(pid_alive(pid));
    let mut c = Client::connect(&socket);
    assert_eq!(c.write("/x", b"1").ok(), b"OK\0");
    // Socket mode 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A new session: the daemon is detached from ours.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        fields.get(3),
        Some(&pid.to_string().as_str()),
        "daemon is its session leader"
    );
    drop(c);
    let p = rustix::process::Pid::from_raw(pid).expect("pid");
    rustix::process::kill_process(p, rustix::process::Signal::TERM).expect("kill");
    assert!(wait_until(|| !pid_alive(pid)), "daemon stops on SIGTERM");
    assert!(!socket.exists(), "socket removed on exit");
    assert!(!pid_file.exists(), "pid file removed on exit");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fork_reports_start_up_failure() {
    let dir = temp_dir("forkfail");
    let out = Command::new(binary())
        .arg("--socket")
        .arg(dir.join("no/such/../../socket-dir-is-fine/s"))
        .arg("--pid-file")
        .arg("/proc/definitely/not/writable")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pid file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn notifies_systemd_readiness() {
    let dir = temp_dir("notify");
    let notify = dir.join("notify");
    let listener = UnixDatagram::bind(&notify).expect("bind");
    listener
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let socket = dir.join("socket");
    let mut child = Command::new(binary())
        .arg("-N")
        .arg("--socket")
        .arg(&socket)
        .env("NOTIFY_SOCKET", &notify)
        .spawn()
        .expect("spawn");
    let mut buf = [0u8; 64];
    let n = listener.recv(&mut buf).expect("READY datagram");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means serving.
    assert!(UnixStream::connect(&socket).is_ok());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refuses_second_instance_on_same_socket() {
    let d = Daemon::start(&[]);
    let out = Command::new(binary())
        .arg("-N")
        .arg("--socket")
        .arg(&d.socket)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already listening"));
    // The first one is unharmed.
    assert_eq!(d.client().write("/still", b"here").ok(), b"OK\0");
}

#[test]
fn replaces_stale_socket_file() {
    let dir = temp_dir("stale");
    let socket = dir.join("socket");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("stale"));
    assert!(socket.exists());
    let mut child = Command::new(binary())
        .arg("-N")
        .arg("--socket")
        .arg(&socket)
        .spawn()
        .expect("spawn");
    assert!(wait_until(|| UnixStream::connect(&socket).is_ok()));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn trace_file_logs_requests_and_reopens_on_sighup() {
    let dir = temp_dir("trace");
    let trace = dir.join("trace.log");
    let mut d = Daemon::start(&["-T", trace.to_str().expect("utf8")]);
    let mut c = d.client();
    c.write("/traced", b"v1").ok();
    let first = std::fs::read_to_string(&trace).expect("trace");
    assert!(
        first.contains("WRITE") && first.contains("/traced v1"),
        "{first}"
    );
    assert!(first.contains("OUT"), "{first}");
    // Rotate, then SIGHUP: new lines go to a new file.
    let rotated = dir.join("trace.log.1");
    std::fs::rename(&trace, &rotated).expect("rename");
    let pid = rustix::process::Pid::from_raw(d.child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("hup");
    assert!(wait_until(|| trace.exists()), "trace reopened");
    c.write("/after", b"v2").ok();
    let second = std::fs::read_to_string(&trace).expect("trace");
    assert!(second.contains("/after v2"), "{second}");
    // CONTROL log switches io off.
    c.req(MsgType::Control, &common::zs(&["log", "-io"])).ok();
    c.write("/silent", b"v3").ok();
    let third = std::fs::read_to_string(&trace).expect("trace");
    assert!(!third.contains("/silent"), "{third}");
    assert!(d.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_options_are_refused() {
    for args in [
        &["-N", "-Q", "bogus=1"][..],
        &["-N", "-w", "other=1"],
        &["-N", "--trace-control", "+nope"],
    ] {
        let dir = temp_dir("badopt");
        let out = Command::new(binary())
            .args(args)
            .arg("--socket")
            .arg(dir.join("s"))
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(!out.stderr.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
    let out = Command::new(binary()).arg("-H").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--no-fork",
        "--pid-file",
        "--trace-file",
        "--quota",
        "--quota-soft",
        "--timeout",
        "--entry-nb",
    ] {
        assert!(help.contains(opt), "{opt} missing from help");
    }
}

#[test]
fn quota_options_reach_the_store() {
    let d = Daemon::start(&["-E", "77", "-Q", "watches=9", "-q", "memory=12345"]);
    let mut c = d.client();
    assert_eq!(c.req(MsgType::GetQuota, &common::z("nodes")).ok(), b"77\0");
    assert_eq!(c.req(MsgType::GetQuota, &common::z("watches")).ok(), b"9\0");
    assert_eq!(
        c.req(MsgType::GetQuota, &common::z("soft-memory")).ok(),
        b"12345\0"
    );
}

#[test]
fn socket_path_from_environment() {
    // XENSTORED_PATH wins; else XENSTORED_RUNDIR/socket.
    let dir = temp_dir("env");
    let by_path = dir.join("by-path");
    let rundir = dir.join("run");
    let mut a = Command::new(binary())
        .arg("-N")
        .env("XENSTORED_PATH", &by_path)
        .env("XENSTORED_RUNDIR", &rundir)
        .spawn()
        .expect("spawn");
    assert!(wait_until(|| UnixStream::connect(&by_path).is_ok()));
    assert!(!rundir.join("socket").exists());
    let _ = a.kill();
    let _ = a.wait();
    let mut b = Command::new(binary())
        .arg("-N")
        .env_remove("XENSTORED_PATH")
        .env("XENSTORED_RUNDIR", &rundir)
        .spawn()
        .expect("spawn");
    assert!(wait_until(
        || UnixStream::connect(rundir.join("socket")).is_ok()
    ));
    let _ = b.kill();
    let _ = b.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Stable interfaces only: the binary links no Xen library and references
/// no symbol of the unstable ones (libxenctrl, libxencall,
/// libxenforeignmemory). Xen libraries are only ever loaded at run time.
#[test]
fn binary_links_no_xen_library() {
    let out = Command::new("readelf")
        .args(["--dynamic", "--dyn-syms", "--wide"])
        .arg(binary())
        .output()
        .expect("readelf (binutils) is needed for this test");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = text.lines().filter(|l| l.contains("(NEEDED)")).collect();
    assert!(!needed.is_empty(), "no NEEDED entries parsed:\n{text}");
    for l in &needed {
        assert!(!l.contains("libxen"), "links a Xen library: {l}");
    }
    for sym in [
        "xc_",
        "xencall_",
        "xenforeignmemory_",
        "xenevtchn_",
        "xengnttab_",
        "xenmanage_",
    ] {
        let hits: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .last()
                    .is_some_and(|s| s.starts_with(sym))
            })
            .collect();
        assert!(hits.is_empty(), "references {sym}* symbols: {hits:?}");
    }
}

#[test]
fn serves_with_no_xen_libraries_at_all() {
    let d = Daemon::start(&["--xen-lib-dir", "/nonexistent/xen/libs"]);
    let mut c = d.client();
    assert_eq!(c.write("/no/xen", b"fine").ok(), b"OK\0");
    assert!(d.log().contains("serving the socket only"), "{}", d.log());
    // Domain operations answer errors, never a fake success.
    assert_eq!(
        c.req(MsgType::Introduce, &common::zs(&["5", "0", "7"]))
            .error()
            .as_deref(),
        Some("EINVAL")
    );
}
