//! The client against rxenstored on a socket (the daemon's own library,
//! run in a thread of the test).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use xenstore_client::{Client, Conn, Error, Tx};
use xenstore_proto::{Access, MsgType, PermList, XsError};

/// Starts a daemon on a fresh socket; returns its path.
fn daemon() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "xenstore-client-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let socket = dir.join("socket");
    let cfg = rxenstored::server::ServerConfig {
        socket: socket.clone(),
        store: xenstore_store::StoreConfig::default(),
        trace_file: None,
        trace_control: Vec::new(),
        file_base: dir.clone(),
        watch_event_timeout: None,
        xen: None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut srv = rxenstored::server::Server::new(cfg).expect("daemon");
        tx.send(()).expect("ready");
        let _ = srv.run();
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("daemon up");
    socket
}

fn client(socket: &Path) -> Client<Conn> {
    Client::connect(socket).expect("connect")
}

#[test]
fn every_operation_typed() {
    let s = daemon();
    let mut xs = client(&s);
    xs.write(Tx::NONE, "/a/b", b"1").expect("write");
    assert_eq!(xs.read(Tx::NONE, "/a/b").expect("read"), b"1");
    xs.mkdir(Tx::NONE, "/a/c").expect("mkdir");
    assert_eq!(xs.directory(Tx::NONE, "/a").expect("dir"), ["b", "c"]);
    let p = PermList::parse([&b"n0"[..], b"r5"]).expect("perms");
    xs.set_perms(Tx::NONE, "/a/b", &p).expect("set perms");
    let got = xs.get_perms(Tx::NONE, "/a/b").expect("get perms");
    assert_eq!(got.owner(), 0);
    assert_eq!(got.default_access(), Access::None);
    assert_eq!(got.to_string(), p.to_string());
    xs.rm(Tx::NONE, "/a").expect("rm");
    let e = xs.read(Tx::NONE, "/a/b").expect_err("gone");
    assert_eq!(e.xs(), Some(XsError::Enoent));
    assert_eq!(xs.get_domain_path(3).expect("path"), "/local/domain/3");
    // A request in a transaction that does not exist: the error, typed.
    assert!(matches!(
        xs.call(MsgType::Read, Tx(999), b"/x\0"),
        Err(Error::Xenstore(_))
    ));
}

#[test]
fn pipelined_requests_are_answered_by_id_in_any_order() {
    let s = daemon();
    let mut xs = client(&s);
    let ids: Vec<_> = (0..100)
        .map(|i| {
            let mut p = format!("/p/{i}").into_bytes();
            p.push(0);
            p.extend_from_slice(i.to_string().as_bytes());
            xs.send(MsgType::Write, Tx::NONE, &p).expect("send")
        })
        .collect();
    // Waited for last first.
    for id in ids.into_iter().rev() {
        assert_eq!(xs.wait(id).expect("reply"), b"OK\0");
    }
    let reads: Vec<_> = (0..100)
        .map(|i| {
            xs.send(MsgType::Read, Tx::NONE, format!("/p/{i}\0").as_bytes())
                .expect("send")
        })
        .collect();
    for (i, id) in reads.into_iter().enumerate() {
        assert_eq!(xs.wait(id).expect("reply"), i.to_string().as_bytes());
    }
}

#[test]
fn transactions_retry_on_eagain() {
    let s = daemon();
    let mut xs = client(&s);
    let mut other = client(&s);
    xs.write(Tx::NONE, "/counter", b"0").expect("write");
    let mut runs = 0;
    xs.transaction(|xs, tx| {
        runs += 1;
        let v: u32 = String::from_utf8_lossy(&xs.read(tx, "/counter")?)
            .parse()
            .unwrap_or(0);
        if runs == 1 {
            // Someone else changes what we read: the commit must fail.
            other.write(Tx::NONE, "/counter", b"10")?;
        }
        xs.write(tx, "/counter", (v + 1).to_string().as_bytes())
    })
    .expect("transaction");
    assert_eq!(runs, 2, "run again after EAGAIN");
    assert_eq!(xs.read(Tx::NONE, "/counter").expect("read"), b"11");
    // An error inside aborts and is returned.
    let e = xs
        .transaction(|xs, tx| xs.read(tx, "/missing"))
        .expect_err("ENOENT");
    assert_eq!(e.xs(), Some(XsError::Enoent));
}

#[test]
fn events_between_replies_are_kept_in_order() {
    let s = daemon();
    let mut w = client(&s);
    let mut other = client(&s);
    w.watch("/ev", "tok").expect("watch");
    for i in 0..10 {
        other
            .write(Tx::NONE, &format!("/ev/{i}"), b"x")
            .expect("write");
    }
    // A request whose reply comes after the events.
    w.write(Tx::NONE, "/unrelated", b"1").expect("write");
    let first = w.next_event().expect("initial");
    assert_eq!((first.path.as_str(), first.token.as_str()), ("/ev", "tok"));
    for i in 0..10 {
        let e = w.next_event().expect("event");
        assert_eq!(e.path, format!("/ev/{i}"));
    }
    w.unwatch("/ev", "tok").expect("unwatch");
}

/// 100,000 events to one client: none lost, in order.
#[test]
fn a_watch_storm_loses_nothing() {
    const N: usize = 100_000;
    let s = daemon();
    let mut w = client(&s);
    w.watch("/storm", "s").expect("watch");
    assert_eq!(w.next_event().expect("initial").path, "/storm");
    let writer_socket = s.clone();
    let writer = std::thread::spawn(move || {
        let mut xs = client(&writer_socket);
        // Pipelined, 1000 in flight at a time.
        for chunk in 0..N / 1000 {
            let ids: Vec<_> = (0..1000)
                .map(|k| {
                    let i = chunk * 1000 + k;
                    xs.send(
                        MsgType::Write,
                        Tx::NONE,
                        format!("/storm/{i}\0v").as_bytes(),
                    )
                    .expect("send")
                })
                .collect();
            for id in ids {
                xs.wait(id).expect("write");
            }
        }
    });
    for i in 0..N {
        let e = w.next_event().expect("event");
        assert_eq!(e.path, format!("/storm/{i}"), "event {i}");
        assert_eq!(e.token, "s");
    }
    writer.join().expect("writer");
}

/// A child list over one reply's 4096 bytes: DIRECTORY answers E2BIG and
/// the client reads it with DIRECTORY_PART, whole and in creation order;
/// short and empty lists read in parts give what DIRECTORY gives.
#[test]
fn a_long_directory_is_read_in_parts() {
    let s = daemon();
    let mut xs = client(&s);
    let names: Vec<String> = (0..1500)
        .map(|i| format!("a-child-with-a-long-name-{:04}", 1499 - i))
        .collect();
    let ids: Vec<_> = names
        .iter()
        .map(|n| {
            xs.send(MsgType::Mkdir, Tx::NONE, format!("/big/{n}\0").as_bytes())
                .expect("send")
        })
        .collect();
    for id in ids {
        xs.wait(id).expect("mkdir");
    }
    assert_eq!(
        xs.call(MsgType::Directory, Tx::NONE, b"/big\0")
            .expect_err("too long for one reply")
            .xs(),
        Some(XsError::E2big)
    );
    assert_eq!(xs.directory(Tx::NONE, "/big").expect("listing"), names);
    // Inside a transaction too.
    let tx = xs.transaction_start().expect("start");
    assert_eq!(xs.directory(tx, "/big").expect("listing"), names);
    xs.transaction_end(tx, false).expect("abort");
    xs.write(Tx::NONE, "/small/x", b"").expect("write");
    xs.mkdir(Tx::NONE, "/empty").expect("mkdir");
    for p in ["/small", "/empty"] {
        assert_eq!(
            xs.directory_parts(Tx::NONE, p).expect("parts"),
            xs.directory(Tx::NONE, p).expect("dir"),
            "{p}"
        );
    }
    assert!(xs
        .directory_parts(Tx::NONE, "/empty")
        .expect("parts")
        .is_empty());
}

/// The domain, feature, quota and control operations, typed, on a daemon
/// without Xen.
#[test]
fn domain_quota_and_control_operations_typed() {
    let s = daemon();
    let mut xs = client(&s);
    assert!(xs.is_domain_introduced(0).expect("dom0"));
    assert!(!xs.is_domain_introduced(7).expect("no domain 7"));
    assert!(xs
        .quota_names()
        .expect("names")
        .iter()
        .any(|n| n == "nodes"));
    xs.set_quota(None, "nodes", 2345).expect("set global");
    assert_eq!(xs.get_quota(None, "nodes").expect("get global"), 2345);
    assert_eq!(
        xs.get_quota(None, "no-such-quota")
            .expect_err("unknown quota")
            .xs(),
        Some(XsError::Einval)
    );
    assert!(xs.get_feature(None).is_ok());
    // No Xen: no domain 7 to introduce or release.
    assert!(xs.introduce(7, 1234, 5).expect_err("no Xen").xs().is_some());
    assert!(xs.release(7).expect_err("not introduced").xs().is_some());
    let answer = xs.control(&["quota"]).expect("control quota");
    assert!(answer.contains("nodes"), "{answer}");
    assert!(xs.control(&["no-such-command"]).is_err());

    // RESET_WATCHES: the watch is gone, so a later write fires nothing;
    // a new watch shows the connection still works.
    xs.watch("/w", "t").expect("watch");
    assert_eq!(xs.next_event().expect("initial").token, "t");
    xs.reset_watches().expect("reset");
    xs.write(Tx::NONE, "/w", b"1").expect("write");
    xs.watch("/v", "u").expect("watch");
    let e = xs.next_event().expect("initial of the new watch");
    assert_eq!((e.path.as_str(), e.token.as_str()), ("/v", "u"));
}
