//! Live update with the real binary, driven by Xen's own
//! `xenstore-control live-update` and by the raw CONTROL commands: the
//! same process runs the new binary, and every socket client, watch,
//! node and half-sent request is still there afterwards; transactions
//! hold the update back as in C.

mod common;
use common::{binary, z, zs, Daemon};
use std::process::Command;
use std::time::{Duration, Instant};
use xenstore_proto::{Message, MsgType};

const XENSTORE_CONTROL: &str = "/usr/lib/xen-4.17/bin/xenstore-control";

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn control(c: &mut common::Client, words: &[&str]) -> String {
    let r = c.req(MsgType::Control, &zs(words));
    r.error()
        .unwrap_or_else(|| r.text().trim_end_matches('\0').to_string())
}

#[test]
fn xenstore_control_live_update_keeps_everything() {
    let d = Daemon::start(&["--no-xen"]);
    let pid = d.pid();
    let mut a = d.client();
    let mut b = d.client();
    for i in 0..2000 {
        let p = format!("/lu/n{i}");
        a.send(
            MsgType::Write as u32,
            0,
            &[z(&p), i.to_string().into_bytes()].concat(),
        );
    }
    for _ in 0..2000 {
        assert_eq!(a.reply().ok(), b"OK\0");
    }
    a.req(MsgType::Watch, &zs(&["/lu", "tok"])).ok();
    assert!(a.next_event(2000).is_some(), "initial event");
    // B has sent half a request when the update happens.
    let read = Message::new(MsgType::Read as u32, 77, 0, z("/lu/n42")).encode();
    b.send_raw(&read[..9]);
    std::thread::sleep(Duration::from_millis(100));

    let out = Command::new(XENSTORE_CONTROL)
        .args(["live-update"])
        .arg(binary())
        .env("XENSTORED_PATH", &d.socket)
        .output()
        .expect("xenstore-control (xen-utils-4.17)");
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    // The same process, now the new binary started with -U.
    assert_eq!(d.pid(), pid);
    assert!(cmdline(pid).contains(" -U"), "{}", cmdline(pid));
    // B's request is answered once its second half arrives.
    b.send_raw(&read[9..]);
    let r = b.reply();
    assert_eq!((r.header.req_id, r.ok()), (77, &b"42"[..]));
    // A's watch is there, every node is.
    b.write("/lu/n7", b"x").ok();
    assert_eq!(a.next_event(2000), Some(("/lu/n7".into(), "tok".into())));
    for i in (0..2000).step_by(97) {
        assert_eq!(a.read(&format!("/lu/n{i}")).ok(), i.to_string().as_bytes());
    }
    assert!(d.log().contains("took over"), "{}", d.log());
    assert!(
        !d.dir.join("state_dump").exists(),
        "the state file is removed"
    );
}

#[test]
fn an_open_transaction_holds_the_update_back_until_the_timeout() {
    let d = Daemon::start(&["--no-xen"]);
    let mut admin = d.client();
    let mut holder = d.client();
    let mut late = d.client();
    let tx: u32 = holder
        .req(MsgType::TransactionStart, &z(""))
        .text()
        .trim_end_matches('\0')
        .parse()
        .expect("tx id");
    assert_eq!(
        control(&mut admin, &["live-update", "-f", "/nonexistent"]),
        "File not accessible."
    );
    assert_eq!(
        control(&mut admin, &["live-update", "-s"]),
        "Not in live-update session."
    );
    let bin = binary().to_string();
    assert_eq!(control(&mut admin, &["live-update", "-f", &bin]), "OK");
    assert_eq!(
        control(&mut late, &["live-update", "-f", &bin]),
        "live-update session already active."
    );
    // -s with a 1 s timeout: the reply waits.
    let t0 = Instant::now();
    admin.send(
        MsgType::Control as u32,
        0,
        &zs(&["live-update", "-s", "-t", "1"]),
    );
    // A new transaction is held while the update waits.
    late.send(MsgType::TransactionStart as u32, 0, &z(""));
    let r = admin.reply();
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "answered before the timeout"
    );
    assert!(
        r.text()
            .starts_with("Domains with long running transactions:\nDomain 0: 1 s"),
        "{:?}",
        r.text()
    );
    // The held TRANSACTION_START goes on now.
    let started = late.reply();
    assert!(started.error().is_none(), "{started:?}");
    // The old transaction is intact.
    assert_eq!(
        holder.req_tx(MsgType::TransactionEnd, tx, &z("T")).ok(),
        b"OK\0"
    );
    assert_eq!(
        control(&mut admin, &["live-update", "-a"]),
        "No live-update session active."
    );
}

#[test]
fn a_forced_update_goes_at_the_timeout_and_drops_transactions() {
    let d = Daemon::start(&["--no-xen"]);
    let pid = d.pid();
    let mut admin = d.client();
    let mut holder = d.client();
    let tx: u32 = holder
        .req(MsgType::TransactionStart, &z(""))
        .text()
        .trim_end_matches('\0')
        .parse()
        .expect("tx id");
    holder
        .req_tx(MsgType::Write, tx, &[z("/in-tx"), b"1".to_vec()].concat())
        .ok();
    let bin = binary().to_string();
    assert_eq!(control(&mut admin, &["live-update", "-f", &bin]), "OK");
    assert_eq!(
        control(&mut admin, &["live-update", "-s", "-t", "1", "-F"]),
        "OK"
    );
    assert_eq!(d.pid(), pid);
    assert!(cmdline(pid).contains(" -U"), "{}", cmdline(pid));
    // The transaction is gone (as in C), its write never happened.
    assert!(holder
        .req_tx(MsgType::TransactionEnd, tx, &z("T"))
        .error()
        .is_some());
    assert_eq!(holder.read("/in-tx").error().as_deref(), Some("ENOENT"));
    // Aborting a session works too.
    assert_eq!(control(&mut admin, &["live-update", "-f", &bin]), "OK");
    assert_eq!(control(&mut admin, &["live-update", "-a"]), "OK");
}
