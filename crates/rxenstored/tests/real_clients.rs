//! End-to-end tests with clients nobody here wrote: Debian's
//! `xenstore-utils`, Xen's own `test-xenstore`, and `pyxs`. `.ci/run`
//! installs them; a missing tool fails the test.

mod common;
use common::{run_tool, Daemon};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const TEST_XENSTORE: &str = "/usr/lib/xen-4.17/bin/test-xenstore";
/// The real binary: `/usr/bin/xenstore-control` is a wrapper that insists
/// on finding a hypervisor in sysfs.
const XENSTORE_CONTROL: &str = "/usr/lib/xen-4.17/bin/xenstore-control";

fn ok(d: &Daemon, prog: &str, args: &[&str]) -> String {
    let (success, out, err) = run_tool(d, prog, args);
    assert!(success, "{prog} {args:?} failed: {err}\n{out}");
    out
}

fn fails(d: &Daemon, prog: &str, args: &[&str]) -> String {
    let (success, out, err) = run_tool(d, prog, args);
    assert!(!success, "{prog} {args:?} should fail: {out}");
    err
}

#[test]
fn xenstore_utils_session() {
    let d = Daemon::start(&[]);
    ok(
        &d,
        "xenstore-write",
        &["/vm/a/name", "guest-a", "/vm/a/mem", "1024"],
    );
    assert_eq!(ok(&d, "xenstore-read", &["/vm/a/name"]), "guest-a\n");
    assert_eq!(
        ok(&d, "xenstore-read", &["/vm/a/name", "/vm/a/mem"]),
        "guest-a\n1024\n"
    );
    assert_eq!(ok(&d, "xenstore-list", &["/vm/a"]), "name\nmem\n");
    ok(&d, "xenstore-exists", &["/vm/a/mem"]);
    fails(&d, "xenstore-exists", &["/vm/a/nope"]);
    let err = fails(&d, "xenstore-read", &["/vm/a/nope"]);
    assert!(
        err.contains("No such file") || err.contains("couldn't read"),
        "{err}"
    );

    // Permissions through xenstore-chmod and xenstore-ls -p.
    ok(&d, "xenstore-chmod", &["/vm/a", "n0", "r0"]);
    let ls = ok(&d, "xenstore-ls", &["-p", "/vm"]);
    assert!(ls.contains("a = \"\""), "{ls}");
    assert!(ls.contains("(n0,r0)"), "{ls}");
    // A permission naming a domain that does not exist as the owner.
    fails(&d, "xenstore-chmod", &["/vm/a", "n31000"]);

    // Full listing of the tree shows the initial nodes.
    let ls = ok(&d, "xenstore-ls", &["-f", "/"]);
    for p in [
        "/local/domain",
        "/tool/xenstored",
        "/vm/a/name = \"guest-a\"",
    ] {
        assert!(ls.contains(p), "{p} missing in\n{ls}");
    }

    // Watch with xenstore-watch: the initial event, then one per write.
    let mut watch = Command::new("xenstore-watch")
        .args(["-n", "3", "/vm/a"])
        .env("XENSTORED_PATH", &d.socket)
        .stdout(Stdio::piped())
        .spawn()
        .expect("xenstore-watch");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().expect("line").expect("io"), "/vm/a");
    ok(&d, "xenstore-write", &["/vm/a/mem", "2048"]);
    assert_eq!(lines.next().expect("line").expect("io"), "/vm/a/mem");
    ok(&d, "xenstore-rm", &["/vm/a"]);
    assert_eq!(lines.next().expect("line").expect("io"), "/vm/a");
    assert!(watch.wait().expect("wait").success());

    fails(&d, "xenstore-exists", &["/vm/a"]);
    assert_eq!(ok(&d, "xenstore-list", &["/vm"]), "");

    // Binary-safe values through xenstore-write's escapes.
    ok(&d, "xenstore-write", &["/bin", "a\\x01b"]);
    assert_eq!(ok(&d, "xenstore-read", &["/bin"]), "a\\001b\n");

    // xenstore-control speaks CONTROL.
    let help = ok(&d, XENSTORE_CONTROL, &["help"]);
    assert!(help.contains("quota"), "{help}");
    let q = ok(&d, XENSTORE_CONTROL, &["quota"]);
    assert!(q.contains("Quota settings:") && q.contains("nodes"), "{q}");
    fails(&d, XENSTORE_CONTROL, &["bogus"]);
}

#[test]
fn test_xenstore_all_tests() {
    let d = Daemon::start(&[]);
    let (success, out, err) = run_tool(&d, TEST_XENSTORE, &[]);
    assert!(success, "test-xenstore failed:\n{out}\n{err}");
    for t in ["read 1", "write 2000", "dir", "rm dir", "ta rmw", "ta err"] {
        assert!(out.contains(t), "test {t} did not run:\n{out}");
    }
}

#[test]
fn test_xenstore_iterations() {
    let d = Daemon::start(&[]);
    let (success, out, err) = run_tool(&d, TEST_XENSTORE, &["-i", "20"]);
    assert!(success, "test-xenstore -i 20 failed:\n{out}\n{err}");
}

#[test]
fn test_xenstore_random() {
    let d = Daemon::start(&[]);
    let (success, out, err) = run_tool(&d, TEST_XENSTORE, &["-r", "10"]);
    assert!(success, "test-xenstore -r 10 failed:\n{out}\n{err}");
}

const PYXS_SCRIPT: &str = r#"
import sys, threading
from pyxs import Client, PyXSError

with Client(unix_socket_path=sys.argv[1]) as c:
    # Plain operations.
    c.write(b"/py/a", b"1")
    assert c.read(b"/py/a") == b"1"
    assert c.list(b"/py") == [b"a"]
    assert c.exists(b"/py/a")
    c.mkdir(b"/py/dir")
    c.set_perms(b"/py/dir", [b"n0", b"r0"])
    assert c.get_perms(b"/py/dir") == [b"n0", b"r0"]
    assert c.get_domain_path(7) == b"/local/domain/7"

    # A committed transaction.
    c.transaction()
    c.write(b"/py/tx", b"in-tx")
    assert c.read(b"/py/tx") == b"in-tx"
    assert c.commit() is True
    assert c.read(b"/py/tx") == b"in-tx"

    # A conflicting transaction gets EAGAIN.
    with Client(unix_socket_path=sys.argv[1]) as other:
        c.transaction()
        assert c.read(b"/py/a") == b"1"
        other.write(b"/py/a", b"2")
        assert c.read(b"/py/a") == b"1", "transaction must keep its view"
        c.write(b"/py/a", b"3")
        # pyxs maps EAGAIN on TRANSACTION_END to False.
        assert c.commit() is False, "commit should have failed with EAGAIN"
        assert other.read(b"/py/a") == b"2"

    # Aborted transaction leaves nothing.
    c.transaction()
    c.write(b"/py/aborted", b"x")
    c.rollback()
    assert not c.exists(b"/py/aborted")

    # Watches: initial event, then one per change.
    with Client(unix_socket_path=sys.argv[1]) as w:
        m = w.monitor()
        m.watch(b"/py/w", b"tok")
        events = m.wait()
        first = next(events)
        assert first == (b"/py/w", b"tok"), first
        c.write(b"/py/w/x", b"1")
        ev = next(events)
        assert ev == (b"/py/w/x", b"tok"), ev
        c.delete(b"/py/w")
        ev = next(events)
        assert ev == (b"/py/w", b"tok"), ev
        m.unwatch(b"/py/w", b"tok")

    # Errors come back as errno.
    try:
        c.read(b"/py/missing")
        raise SystemExit("read of missing node should fail")
    except PyXSError as e:
        assert e.args[0] == 2, e
print("pyxs ok")
"#;

#[test]
fn pyxs_session() {
    let d = Daemon::start(&[]);
    let dir = common::temp_dir("py");
    let script = dir.join("session.py");
    std::fs::write(&script, PYXS_SCRIPT).expect("script");
    let sock = d.socket.to_string_lossy().into_owned();
    let (success, out, err) = run_tool(&d, "/usr/bin/python3", &[&script.to_string_lossy(), &sock]);
    assert!(
        success,
        "pyxs session failed:\n{out}\n{err}\ndaemon log:\n{}",
        d.log()
    );
    assert!(out.contains("pyxs ok"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
    std::thread::sleep(Duration::from_millis(10));
}
