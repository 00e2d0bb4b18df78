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
    // 100,000 nodes in 2,000 directories (issue 10's store; every
    // listing fits in one DIRECTORY reply), every 1,000th with an ACL of
    // its own, written pipelined.
    const N: usize = 100_000;
    let node = |i: usize| format!("/lu/d{}/e{}/n{i}", i % 50, (i / 50) % 40);
    for chunk in (0..N).collect::<Vec<_>>().chunks(256) {
        for &i in chunk {
            a.send(
                MsgType::Write as u32,
                0,
                &[z(&node(i)), i.to_string().into_bytes()].concat(),
            );
        }
        for _ in chunk {
            assert_eq!(a.reply().ok(), b"OK\0");
        }
    }
    for i in (0..N).step_by(1000) {
        a.req(MsgType::SetPerms, &zs(&[&node(i), "n0", "r0", "b0"]))
            .ok();
    }
    let before = tree(&mut a);
    assert!(before.len() > N, "{} nodes", before.len());
    let report = accounting(&mut a, true);
    a.req(MsgType::Watch, &zs(&["/lu", "tok"])).ok();
    assert!(a.next_event(2000).is_some(), "initial event");
    // B has sent half a request when the update happens.
    let read = Message::new(MsgType::Read as u32, 77, 0, z("/lu/d42/e0/n42")).encode();
    b.send_raw(&read[..9]);
    std::thread::sleep(Duration::from_millis(100));

    // To another binary: a copy of this build under a name of its own.
    let next = d.dir.join("rxenstored-next");
    std::fs::copy(binary(), &next).expect("copy the binary");
    let out = Command::new(XENSTORE_CONTROL)
        .args(["live-update"])
        .arg(&next)
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
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe"),
        next
    );
    // B's request is answered once its second half arrives.
    b.send_raw(&read[9..]);
    let r = b.reply();
    assert_eq!((r.header.req_id, r.ok()), (77, &b"42"[..]));
    // Every node with its value and permissions, and the accounting, as
    // they were.
    same_tree(&before, &tree(&mut b));
    assert_eq!(accounting(&mut b, true), report);
    // A's watch is there.
    b.write("/lu/d7/n7", b"x").ok();
    assert_eq!(a.next_event(2000), Some(("/lu/d7/n7".into(), "tok".into())));
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

// ----- guests over rings (the simulator) ----------------------------------

use common::Host;
use std::collections::BTreeMap;
use xenstore_proto::ring::{self as r, RingPage};

/// Node `i` of the big tree (directories small enough for DIRECTORY).
fn lu(i: usize) -> String {
    format!("/lu/d{}/n{i}", i % 12)
}

fn text(m: &Message) -> String {
    String::from_utf8_lossy(&m.payload).replace('\0', "|")
}

/// `xenstore-control live-update <binary>` against the host's daemon.
fn xenstore_control_live_update(h: &Host) {
    let out = Command::new(XENSTORE_CONTROL)
        .args(["live-update"])
        .arg(binary())
        .env("XENSTORED_PATH", &h.daemon.socket)
        .output()
        .expect("xenstore-control (xen-utils-4.17)");
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        h.daemon.log()
    );
}

/// Every node: its value and permissions, walked over the protocol.
fn tree(c: &mut common::Client) -> BTreeMap<String, (Vec<u8>, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec!["/".to_string()];
    while let Some(p) = stack.pop() {
        let value = c.read(&p).ok().to_vec();
        let perms = c.req(MsgType::GetPerms, &z(&p)).text();
        let children = c.req(MsgType::Directory, &z(&p));
        for child in children.ok().split(|&b| b == 0).filter(|s| !s.is_empty()) {
            let child = String::from_utf8_lossy(child);
            stack.push(if p == "/" {
                format!("/{child}")
            } else {
                format!("{p}/{child}")
            });
        }
        out.insert(p, (value, perms));
    }
    out
}

/// Asserts two trees are equal, naming the first differences only.
fn same_tree(a: &BTreeMap<String, (Vec<u8>, String)>, b: &BTreeMap<String, (Vec<u8>, String)>) {
    let diff: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {v:?} / {:?}", b.get(k)))
        .chain(
            b.keys()
                .filter(|k| !a.contains_key(*k))
                .map(|k| format!("{k}: missing")),
        )
        .take(10)
        .collect();
    assert!(
        diff.is_empty(),
        "{} vs {} nodes: {diff:#?}",
        a.len(),
        b.len()
    );
}

/// The daemon's accounting report: one line per domain (`domid
/// introduced nodes watches transactions memory shutdown`), the memory
/// column left out unless `memory`.
fn accounting(c: &mut common::Client, memory: bool) -> Vec<String> {
    let report = control(c, &["memreport"]);
    report
        .lines()
        .skip(3)
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.iter()
                .enumerate()
                .filter(|(i, _)| memory || *i != 5)
                .map(|(_, c)| *c)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// The guest writes `data/x` = `g<domid>`.
fn set_own(g: &mut xensim::Guest) {
    let p = [z("data/x"), format!("g{}", g.domid).into_bytes()].concat();
    assert_eq!(
        text(&g.request(MsgType::Write, 0, &p).expect("write")),
        "OK|"
    );
}

/// Waits until the daemon has consumed everything in the guest's request
/// ring.
fn wait_consumed(g: &xensim::Guest) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while g.page().load_u32(r::REQ_CONS) != g.page().load_u32(r::REQ_PROD) {
        assert!(Instant::now() < deadline, "the daemon does not read");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a guest does to send `msg` (which fits), through the page's file
/// rather than a mapping: the bytes, then the producer index.
fn guest_write_file(ring: &std::path::Path, msg: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(ring)
        .expect("ring page");
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, r::REQ_PROD as u64).expect("read");
    let prod = u32::from_ne_bytes(b);
    for (i, byte) in msg.iter().enumerate() {
        let at = (prod as usize + i) % r::RING_SIZE as usize;
        f.write_all_at(&[*byte], (r::REQ + at) as u64)
            .expect("write");
    }
    let prod = prod.wrapping_add(msg.len() as u32);
    f.write_all_at(&prod.to_ne_bytes(), r::REQ_PROD as u64)
        .expect("write");
}

#[test]
fn guests_keep_their_rings_watches_and_bytes_in_flight_across_live_update() {
    let h = Host::start();
    let pid = h.daemon.pid();
    let mut ts = h.daemon.client();
    // 1200 nodes, some with ACLs.
    for i in 0..1200 {
        ts.send(
            MsgType::Write as u32,
            0,
            &[z(&lu(i)), i.to_string().into_bytes()].concat(),
        );
    }
    for _ in 0..1200 {
        assert_eq!(ts.reply().ok(), b"OK\0");
    }
    // A socket watcher, and a socket client half-way through a request.
    let mut w = h.daemon.client();
    w.req(MsgType::Watch, &zs(&["/lu", "sock"])).ok();
    assert!(w.next_event(2000).is_some(), "initial event");
    let mut half = h.daemon.client();
    let read = Message::new(MsgType::Read as u32, 77, 0, z(&lu(42))).encode();
    half.send_raw(&read[..9]);

    // g1: a watch (relative), a node, a quota of its own.
    let mut g1 = h.guest(&mut ts);
    let d1 = g1.domid.to_string();
    set_own(&mut g1);
    assert_eq!(
        text(
            &g1.request(MsgType::Watch, 0, &zs(&["data", "w1"]))
                .expect("watch")
        ),
        "OK|"
    );
    g1.next_message(Duration::from_secs(5))
        .expect("io")
        .expect("initial event");
    assert_eq!(
        ts.req(MsgType::SetQuota, &zs(&[&d1, "nodes", "77"])).ok(),
        b"OK\0"
    );
    ts.req(MsgType::SetPerms, &zs(&[&lu(5), "n0", &format!("r{d1}")]))
        .ok();
    assert_eq!(w.next_event(5000), Some((lu(5), "sock".into())));
    // g2: half a request read by the daemon (in its input); it acts for
    // g1 (SET_TARGET: a device model).
    let mut g2 = h.guest(&mut ts);
    let d2 = g2.domid.to_string();
    set_own(&mut g2);
    assert_eq!(
        ts.req(MsgType::SetTarget, &zs(&[&g2.domid.to_string(), &d1]))
            .ok(),
        b"OK\0"
    );
    let g1_x = format!("/local/domain/{d1}/data/x");
    assert_eq!(
        text(&g2.request(MsgType::Read, 0, &z(&g1_x)).expect("read")),
        format!("g{d1}")
    );
    let g2_read = Message::new(MsgType::Read as u32, 4242, 0, z("data/x")).encode();
    g2.send_raw(&g2_read[..20], Duration::from_secs(5))
        .expect("send");
    wait_consumed(&g2);
    // g3: writes a whole request into its ring during the switch, and
    // signals nobody (bytes in flight: the next binary must find them).
    let mut g3 = h.guest(&mut ts);
    set_own(&mut g3);
    let g3_write = [z("data/inflight"), b"yes".to_vec()].concat();
    let g3_read = Message::new(MsgType::Write as u32, 4343, 0, g3_write).encode();
    let g3_ring = h.sim.ring_path(g3.domid);
    let g3_bytes = g3_read.clone();
    h.sim
        .when_virq_unbound(move || guest_write_file(&g3_ring, &g3_bytes));
    // g4: does not read; 100 watch events for it, more than its ring
    // holds, wait in the daemon.
    let mut g4 = h.guest(&mut ts);
    set_own(&mut g4);
    let d4 = g4.domid;
    assert_eq!(
        text(
            &g4.request(MsgType::Watch, 0, &zs(&["data", "w4"]))
                .expect("watch")
        ),
        "OK|"
    );
    g4.next_message(Duration::from_secs(5))
        .expect("io")
        .expect("initial event");
    let names: Vec<String> = (0..100)
        .map(|i| format!("/local/domain/{d4}/data/event-with-a-long-name-{i:03}"))
        .collect();
    for n in &names {
        assert_eq!(ts.write(n, b"v").ok(), b"OK\0");
    }
    // The guest's response ring is full and the rest waits in the daemon.
    let unread = g4
        .page()
        .load_u32(r::RSP_PROD)
        .wrapping_sub(g4.page().load_u32(r::RSP_CONS));
    assert!(unread > 1000, "{unread} bytes in g4's ring");

    // dom0's kernel on the local ring (xsd_kva), with a watch.
    let dir = h.sim.dir().to_path_buf();
    let kport: u32 = std::fs::read_to_string(dir.join("xsd_port"))
        .expect("xsd_port")
        .trim()
        .parse()
        .expect("port");
    let mut kernel = xensim::Guest::attach_port(&h.sim.socket(), 0, kport, &dir.join("xsd_kva"))
        .expect("kernel");
    assert_eq!(
        text(
            &kernel
                .request(MsgType::Watch, 0, &zs(&["/kernel", "k"]))
                .expect("watch")
        ),
        "OK|"
    );
    kernel
        .next_message(Duration::from_secs(5))
        .expect("io")
        .expect("initial event");

    let before = tree(&mut ts);
    assert!(before.len() > 1200, "{}", before.len());
    let acc_before = accounting(&mut ts, false);
    assert!(acc_before.len() >= 5, "{acc_before:?}");

    xenstore_control_live_update(&h);

    assert_eq!(h.daemon.pid(), pid);
    assert!(cmdline(pid).contains(" -U"), "{}", cmdline(pid));
    let log = h.daemon.log();
    // Four guests and the local domain's own ring.
    assert!(log.contains("5 ring(s)"), "{log}");
    // g3's request, left in its ring, is answered.
    let m = g3
        .next_message(Duration::from_secs(10))
        .expect("io")
        .expect("g3's reply");
    assert_eq!((m.header.req_id, text(&m)), (4343, "OK|".to_string()));
    let inflight = format!("/local/domain/{}/data/inflight", g3.domid);
    assert_eq!(ts.read(&inflight).ok(), b"yes");
    // (Gone again, for the comparisons below.)
    assert_eq!(ts.req(MsgType::Rm, &z(&inflight)).ok(), b"OK\0");
    // g2's request completes with its second half.
    g2.send_raw(&g2_read[20..], Duration::from_secs(5))
        .expect("send");
    let m = g2
        .next_message(Duration::from_secs(10))
        .expect("io")
        .expect("g2's reply");
    assert_eq!(
        (m.header.req_id, text(&m)),
        (4242, format!("g{}", g2.domid))
    );
    // The socket's half request too.
    half.send_raw(&read[9..]);
    let rep = half.reply();
    assert_eq!((rep.header.req_id, rep.ok()), (77, &b"42"[..]));
    // Every node and permission, every domain's accounting, is as before.
    same_tree(&tree(&mut ts), &before);
    assert_eq!(accounting(&mut ts, false), acc_before);
    // g4 gets all of its 100 events, in order, none lost.
    for n in &names {
        let m = g4
            .next_message(Duration::from_secs(10))
            .expect("io")
            .unwrap_or_else(|| panic!("event for {n}; log:\n{}", h.daemon.log()));
        let rel = n.trim_start_matches(&format!("/local/domain/{d4}/"));
        assert_eq!(text(&m), format!("{rel}|w4|"));
    }
    // The watches set before fire after; every guest answers.
    ts.write(&format!("/local/domain/{d1}/data/after"), b"1")
        .ok();
    let m = g1
        .next_message(Duration::from_secs(10))
        .expect("io")
        .expect("g1's event");
    assert_eq!(text(&m), "data/after|w1|");
    assert_eq!(
        text(&g2.request(MsgType::Read, 0, &z(&g1_x)).expect("read")),
        format!("g{d1}"),
        "g2 still acts for g1"
    );
    ts.write("/kernel/x", b"1").ok();
    let m = kernel
        .next_message(Duration::from_secs(10))
        .expect("io")
        .expect("the kernel's event");
    assert_eq!(text(&m), "/kernel/x|k|");
    let m = kernel
        .request(MsgType::Read, 0, &z("/kernel/x"))
        .expect("read");
    assert_eq!(text(&m), "1");
    ts.write(&lu(9), b"changed").ok();
    assert_eq!(w.next_event(5000), Some((lu(9), "sock".into())));
    for g in [&mut g1, &mut g2, &mut g3, &mut g4] {
        let m = g.request(MsgType::Read, 0, &z(&lu(5))).expect("read");
        // Readable by g1, and by g2 acting for it.
        let want = if [&d1, &d2].contains(&&g.domid.to_string()) {
            "5"
        } else {
            "EACCES|"
        };
        assert_eq!(text(&m), want, "domain {}", g.domid);
    }
    assert_eq!(
        ts.req(MsgType::GetQuota, &zs(&[&d1, "nodes"])).ok(),
        b"77\0"
    );
    for g in [&g1, &g2, &g3, &g4] {
        assert_eq!(
            ts.req(MsgType::IsDomainIntroduced, &z(&g.domid.to_string()))
                .ok(),
            b"T\0"
        );
    }
    assert!(!h.daemon.dir.join("state_dump").exists());
    // Once more, every queue drained: the memory charged is as before too
    // (a message half written when the state is handed over is charged
    // for its unwritten tail only).
    let before = tree(&mut ts);
    let acc_before = accounting(&mut ts, true);
    xenstore_control_live_update(&h);
    assert_eq!(h.daemon.pid(), pid);
    same_tree(&tree(&mut ts), &before);
    assert_eq!(accounting(&mut ts, true), acc_before);
    for g in [&mut g1, &mut g2, &mut g3, &mut g4] {
        let m = g.request(MsgType::Read, 0, &z("data/x")).expect("read");
        assert_eq!(text(&m), format!("g{}", g.domid));
    }
}

/// Builds a domain, has `attach` make its guest (in whatever thread it
/// runs), introduces it as libxl does once the guest's port is known.
fn introduce(h: &Host, ts: &mut common::Client, d: u32, port: u32) {
    let home = format!("/local/domain/{d}");
    ts.req(MsgType::Mkdir, &z(&home)).ok();
    ts.req(MsgType::SetPerms, &zs(&[&home, &format!("n{d}")]))
        .ok();
    let r = ts.req(
        MsgType::Introduce,
        &zs(&[&d.to_string(), "0", &port.to_string()]),
    );
    assert_eq!(r.ok(), b"OK\0", "INTRODUCE {d}; log:\n{}", h.daemon.log());
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_guest_flooding_requests_loses_nothing_across_live_update() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let h = Host::start();
    let pid = h.daemon.pid();
    let mut ts = h.daemon.client();
    let d = h.sim.create_domain(None, 0).expect("create");
    let acked = AtomicU32::new(0);
    let stop = AtomicBool::new(false);
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let written = std::thread::scope(|s| {
        let (acked, stop, sim) = (&acked, &stop, &h.sim);
        let flood = s.spawn(move || {
            let mut g = xensim::Guest::attach(&sim.socket(), d, 0).expect("guest");
            port_tx.send(g.port).expect("port");
            go_rx.recv().expect("introduced");
            // Eight writes in flight at a time, as fast as they are
            // answered, until told to stop.
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let ids: Vec<_> = (n..n + 8)
                    .map(|i| {
                        let p =
                            [z(&format!("data/f{}", i % 100)), i.to_string().into_bytes()].concat();
                        g.xs()
                            .send_message(MsgType::Write as u32, xenstore_client::Tx(0), &p)
                            .expect("send")
                    })
                    .collect();
                for id in ids {
                    let m = g.xs().wait_message(id).expect("reply");
                    assert_eq!(text(&m), "OK|", "write {n}");
                    n += 1;
                    acked.store(n, Ordering::SeqCst);
                }
            }
            n
        });
        let port = port_rx.recv().expect("port");
        introduce(&h, &mut ts, d, port);
        go_tx.send(()).expect("go");
        wait_for("the flood", || acked.load(Ordering::SeqCst) >= 200);
        xenstore_control_live_update(&h);
        let at_update = acked.load(Ordering::SeqCst);
        // The flood goes on, answered by the new binary.
        wait_for("the flood after the update", || {
            acked.load(Ordering::SeqCst) >= at_update + 400
        });
        stop.store(true, Ordering::SeqCst);
        flood.join().expect("flood")
    });
    assert_eq!(h.daemon.pid(), pid);
    assert!(cmdline(pid).contains(" -U"), "{}", cmdline(pid));
    // Every acknowledged write is there: each of the 100 nodes holds the
    // last value written to it.
    assert!(written >= 600, "{written}");
    for i in written - 100..written {
        assert_eq!(
            ts.read(&format!("/local/domain/{d}/data/f{}", i % 100))
                .ok(),
            i.to_string().as_bytes(),
            "write {i} of {written}"
        );
    }
}

#[test]
fn a_domain_destroyed_during_the_switch_is_torn_down_after_it_and_broken_rings_stay_broken() {
    let h = Host::start();
    let mut ts = h.daemon.client();
    let mut w = h.daemon.client();
    w.req(MsgType::Watch, &zs(&["@releaseDomain", "rel"])).ok();
    assert!(w.next_event(2000).is_some(), "initial event");
    let doomed = h.guest(&mut ts);
    let d = doomed.domid;
    let mut other = h.guest(&mut ts);
    set_own(&mut other);
    // A guest cut off for garbage indices.
    let mut broken = h.guest(&mut ts);
    let prod = broken.page().load_u32(r::REQ_CONS).wrapping_add(5000);
    broken.page().store_u32(r::REQ_PROD, prod);
    broken.notify().expect("notify");
    wait_for("the ring to break", || {
        broken.ring_error() == r::ERROR_RINGIDX
    });
    // A guest whose re-INTRODUCE could not bind (garbage port in its
    // page): parked, introduced, not served.
    let mut parked = h.guest(&mut ts);
    let pd = parked.domid.to_string();
    parked.page().store_u32(r::EVTCHN_PORT, 999);
    assert_eq!(
        ts.req(
            MsgType::Introduce,
            &zs(&[&pd, "0", &parked.port.to_string()])
        )
        .error()
        .as_deref(),
        Some("EINVAL")
    );
    // The domain dies while the VIRQ is unbound: right before the exec.
    h.sim.destroy_when_virq_unbound(d);

    xenstore_control_live_update(&h);

    // Its death is found by the start-up check: torn down, released.
    assert_eq!(
        w.next_event(10_000),
        Some(("@releaseDomain".into(), "rel".into())),
        "{}",
        h.daemon.log()
    );
    assert_eq!(
        ts.req(MsgType::IsDomainIntroduced, &z(&d.to_string())).ok(),
        b"F\0"
    );
    assert_eq!(
        ts.read(&format!("/local/domain/{d}")).error().as_deref(),
        Some("ENOENT")
    );
    let log = h.daemon.log();
    assert!(log.contains("changed during the switch"), "{log}");
    // The others are as they were: one served, one still cut off.
    let m = other.request(MsgType::Read, 0, &z("data/x")).expect("read");
    assert_eq!(text(&m), format!("g{}", other.domid));
    assert_eq!(broken.ring_error(), r::ERROR_RINGIDX);
    let cons = broken.page().load_u32(r::REQ_CONS);
    broken.notify().expect("notify");
    assert_eq!(
        other
            .request(MsgType::Read, 0, &z("data/x"))
            .map(|m| text(&m))
            .ok(),
        Some(format!("g{}", other.domid))
    );
    assert_eq!(broken.page().load_u32(r::REQ_CONS), cons, "not read");
    let b = broken.domid.to_string();
    assert_eq!(ts.req(MsgType::IsDomainIntroduced, &z(&b)).ok(), b"T\0");
    // INTRODUCE again serves it afresh.
    let r = ts.req(
        MsgType::Introduce,
        &zs(&[&b, "0", &broken.port.to_string()]),
    );
    assert_eq!(r.ok(), b"OK\0", "{}", h.daemon.log());
    set_own(&mut broken);
    // The parked one too, once its page is sane.
    assert_eq!(ts.req(MsgType::IsDomainIntroduced, &z(&pd)).ok(), b"T\0");
    parked.page().store_u32(r::EVTCHN_PORT, 0);
    let r = ts.req(
        MsgType::Introduce,
        &zs(&[&pd, "0", &parked.port.to_string()]),
    );
    assert_eq!(r.ok(), b"OK\0", "{}", h.daemon.log());
    set_own(&mut parked);
}

#[test]
fn without_xenevtchn_fdopen_an_update_with_guests_is_refused_up_front() {
    // The stand-ins, with a libxenevtchn.so.1 as Xen before 4.15 ships
    // it: its dynamic symbol table has no xenevtchn_fdopen.
    let tmp = common::temp_dir("host");
    let sim = xensim::Sim::start(&tmp.join("sim"), 0x5eed).expect("simulator");
    let libs = common::stand_ins(&tmp);
    let so = libs.join("libxenevtchn.so.1");
    let mut bytes = std::fs::read(&so).expect("stand-in");
    let (from, to) = (b"\0xenevtchn_fdopen\0", b"\0xenevtchn_fdopeX\0");
    let at: Vec<usize> = bytes
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| w == from)
        .map(|(i, _)| i)
        .collect();
    assert!(!at.is_empty(), "the stand-in exports xenevtchn_fdopen");
    for i in at {
        bytes[i..i + to.len()].copy_from_slice(to);
    }
    std::fs::remove_file(&so).expect("link");
    std::fs::write(&so, &bytes).expect("patched stand-in");
    let dir = sim.dir().to_path_buf();
    let daemon = common::Daemon::start_env(
        &[
            "--xen-lib-dir",
            libs.to_str().expect("utf8"),
            "--xsd-kva",
            dir.join("xsd_kva").to_str().expect("utf8"),
            "--xsd-port",
            dir.join("xsd_port").to_str().expect("utf8"),
        ],
        &[("XENSIM_SOCKET", sim.socket().as_os_str())],
    );
    let h = Host { sim, daemon, tmp };
    let pid = h.daemon.pid();
    let mut ts = h.daemon.client();
    let mut g = h.guest(&mut ts);
    set_own(&mut g);
    let bin = binary().to_string();
    assert_eq!(control(&mut ts, &["live-update", "-f", &bin]), "OK");
    let why = control(&mut ts, &["live-update", "-s"]);
    assert!(
        why.starts_with(
            "Dump state error: 2 guest ring connection(s): libxenevtchn.so.1 has no \
                         xenevtchn_fdopen"
        ),
        "{why}"
    );
    // Nothing was torn down: same process, not restarted, the guest and
    // its watches served as before.
    assert_eq!(h.daemon.pid(), pid);
    assert!(!cmdline(pid).contains(" -U"), "{}", cmdline(pid));
    assert!(!h.daemon.dir.join("state_dump").exists());
    assert_eq!(
        text(
            &g.request(MsgType::Watch, 0, &zs(&["data", "w"]))
                .expect("watch")
        ),
        "OK|"
    );
    g.next_message(Duration::from_secs(5))
        .expect("io")
        .expect("initial event");
    ts.write(&format!("/local/domain/{}/data/y", g.domid), b"1")
        .ok();
    let m = g
        .next_message(Duration::from_secs(5))
        .expect("io")
        .expect("event");
    assert_eq!(text(&m), "data/y|w|");
    // The session is over; a new one may start.
    assert_eq!(control(&mut ts, &["live-update", "-f", &bin]), "OK");
    assert_eq!(control(&mut ts, &["live-update", "-a"]), "OK");
}

/// What C xenstored 4.17 and 4.20 accept on `-U`, checked on raw bytes
/// (independently of `xenstore-migrate`): xenstored_control.c
/// lu_read_state (4.20: lu.c) wants "xenstore", version 1 in big endian,
/// flags 0 (little endian); records are walked by their length up to END;
/// C's writer rounds every length to 8 (ROUNDUP(len, 3)), and only the
/// types GLOBAL, CONN, WATCH, TA (ignored), NODE exist. Then, per record:
/// read_state_connection (xenstored_domain.c): a ring's `domid` is
/// introduced with its port kept (new_domain, restore), the master
/// domain's ring makes the store (introduce_domain -> setup_structure), so
/// it must precede every NODE; read_state_buffered_data: in + out lengths
/// within the record, the partial response within the output, whole
/// messages after it; read_state_watch (xenstored_watch.c): its
/// connection already read; read_state_node (xenstored_core.c): the parent
/// already restored (read_node), the owner a domain that exists
/// (domain_entry_inc -> find_or_alloc_existing_domain), '@' names take
/// permissions only. Returns the GLOBAL descriptors and whether some
/// socket connection's output ends with an `OK` CONTROL reply.
fn check_as_c_reads(b: &[u8], existing: &[u16]) -> Result<((i32, i32), bool), String> {
    let u16_at = |o: usize| -> Result<u16, String> {
        b.get(o..o + 2)
            .map(|x| u16::from_le_bytes([x[0], x[1]]))
            .ok_or_else(|| format!("truncated at {o}"))
    };
    let u32_at = |o: usize| -> Result<u32, String> {
        b.get(o..o + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
            .ok_or_else(|| format!("truncated at {o}"))
    };
    if b.get(..8) != Some(b"xenstore") {
        return Err("ident".into());
    }
    if b.get(8..12) != Some(&[0, 0, 0, 1][..]) {
        return Err(format!("version {:?} (C 4.17-4.20 want 1)", b.get(8..12)));
    }
    if u32_at(12)? != 0 {
        return Err("flags: not little endian".into());
    }
    let mut o = 16;
    let mut global = None;
    let mut conns = std::collections::HashSet::new();
    let mut master_ring = false;
    let mut nodes = std::collections::HashSet::new();
    let mut ok_reply = false;
    loop {
        let (ty, len) = (u32_at(o)?, u32_at(o + 4)? as usize);
        let body = o + 8;
        if ty == 0 {
            break;
        }
        if len % 8 != 0 || body + len > b.len() {
            return Err(format!("record at {o}: length {len}"));
        }
        match ty {
            1 => {
                if len != 8 {
                    return Err("GLOBAL length".into());
                }
                global = Some((u32_at(body)? as i32, u32_at(body + 4)? as i32));
            }
            2 => {
                let id = u32_at(body)?;
                let ctype = u16_at(body + 4)?;
                if u16_at(body + 6)? != 0 {
                    return Err(format!("CONN {id}: pad (fields) not 0"));
                }
                if ctype == 0 {
                    let (domid, tdomid, port) =
                        (u16_at(body + 8)?, u16_at(body + 10)?, u32_at(body + 12)?);
                    if tdomid != 0x7ff4 && !existing.contains(&tdomid) {
                        return Err(format!("CONN {id}: target {tdomid}"));
                    }
                    if domid == 0 && port != 0 {
                        master_ring = true;
                    }
                } else if ctype != 1 {
                    return Err(format!("CONN {id}: type {ctype}"));
                }
                let (inl, resp, outl) = (
                    u16_at(body + 16)? as usize,
                    u16_at(body + 18)? as usize,
                    u32_at(body + 20)? as usize,
                );
                if 24 + inl + outl > len || resp > outl {
                    return Err(format!("CONN {id}: data lengths"));
                }
                let mut m = body + 24 + inl + resp;
                let end = body + 24 + inl + outl;
                while m < end {
                    let (t, plen) = (u32_at(m)?, u32_at(m + 12)? as usize);
                    if m + 16 + plen > end {
                        return Err(format!("CONN {id}: output message past its data"));
                    }
                    if ctype == 1
                        && t == MsgType::Control as u32
                        && &b[m + 16..m + 16 + plen] == b"OK\0"
                    {
                        ok_reply = true;
                    }
                    m += 16 + plen;
                }
                conns.insert(id);
            }
            3 => {
                let id = u32_at(body)?;
                if !conns.contains(&id) {
                    return Err(format!("WATCH of connection {id} not read yet"));
                }
                let (pl, tl) = (u16_at(body + 4)? as usize, u16_at(body + 6)? as usize);
                if 8 + pl + tl > len || b[body + 8 + pl - 1] != 0 || b[body + 8 + pl + tl - 1] != 0
                {
                    return Err(format!("WATCH of {id}: strings"));
                }
            }
            5 => {
                if !master_ring {
                    return Err("NODE before the master domain's ring (no store yet)".into());
                }
                if (u32_at(body)?, u32_at(body + 4)?, u16_at(body + 12)?) != (0, 0, 0) {
                    return Err("NODE in a transaction".into());
                }
                let (pl, dl, pn) = (
                    u16_at(body + 8)? as usize,
                    u16_at(body + 10)? as usize,
                    u16_at(body + 14)? as usize,
                );
                let pstart = body + 16 + 4 * pn;
                if pn == 0 || pstart + pl + dl > body + len || b[pstart + pl - 1] != 0 {
                    return Err("NODE lengths".into());
                }
                for i in 0..pn {
                    let p = body + 16 + 4 * i;
                    if !b"nrwb".contains(&b[p]) || b[p + 1] & !1 != 0 {
                        return Err("NODE permission".into());
                    }
                }
                let path = String::from_utf8_lossy(&b[pstart..pstart + pl - 1]).into_owned();
                if !path.starts_with('@') {
                    let owner = u16_at(body + 18)?;
                    if !existing.contains(&owner) {
                        return Err(format!("NODE {path}: owner {owner} does not exist"));
                    }
                    if path != "/" {
                        let parent = match path.rfind('/') {
                            Some(0) => "/".to_string(),
                            Some(i) => path[..i].to_string(),
                            None => return Err(format!("NODE {path}: relative")),
                        };
                        if !nodes.contains(&parent) {
                            return Err(format!("NODE {path} before its parent"));
                        }
                    }
                    nodes.insert(path);
                }
            }
            t => return Err(format!("record type {t} C does not know")),
        }
        o = body + len;
    }
    if !nodes.contains("/") {
        return Err("no root".into());
    }
    Ok((global.ok_or("no GLOBAL")?, ok_reply))
}

#[test]
fn a_hand_back_to_c_gets_what_c_reads_and_its_command_line() {
    let h = Host::start();
    let pid = h.daemon.pid();
    let mut ts = h.daemon.client();
    let mut g1 = h.guest(&mut ts);
    let d1 = g1.domid;
    set_own(&mut g1);
    assert_eq!(
        text(
            &g1.request(MsgType::Watch, 0, &zs(&["data", "w1"]))
                .expect("watch")
        ),
        "OK|"
    );
    g1.next_message(Duration::from_secs(5))
        .expect("io")
        .expect("initial event");
    // A node of g1's outside its home (owners must exist for C).
    ts.write("/owned", b"x").ok();
    let r = ts.req(MsgType::SetPerms, &zs(&["/owned", &format!("n{d1}"), "r0"]));
    assert!(r.error().is_none(), "{r:?}");
    // "C": a program named xenstored that keeps what it was given, then
    // runs rxenstored on that same state (with the options a test host
    // needs), so the host is served again.
    let fake = h.tmp.join("xenstored");
    let keep = h.tmp.join("handback");
    let libs = h.tmp.join("libs");
    let dir = h.sim.dir();
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\ncp '{state}' '{keep}.state'\necho \"$*\" >'{keep}.argv'\n\
             ls /proc/$$/fd | tr '\\n' ' ' >'{keep}.fds'\n\
             exec '{bin}' \"$@\" --socket '{sock}' --xen-lib-dir '{libs}' --xsd-kva '{kva}' --xsd-port '{port}'\n",
            state = h.daemon.dir.join("state_dump").display(),
            keep = keep.display(),
            bin = binary(),
            sock = h.daemon.socket.display(),
            libs = common::stand_ins(&h.tmp).display(),
            kva = dir.join("xsd_kva").display(),
            port = dir.join("xsd_port").display(),
        ),
    )
    .expect("fake");
    let _ = libs;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = Command::new(XENSTORE_CONTROL)
        .args(["live-update"])
        .arg(&fake)
        .env("XENSTORED_PATH", &h.daemon.socket)
        .output()
        .expect("xenstore-control (xen-utils-4.17)");
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        h.daemon.log()
    );
    let state = std::fs::read(keep.with_extension("state")).expect("state kept by the fake");
    let argv = std::fs::read_to_string(keep.with_extension("argv")).expect("argv");
    let fds = std::fs::read_to_string(keep.with_extension("fds")).expect("fds");
    // C's options only, C's -U.
    assert_eq!(argv.trim(), "--no-fork -U");
    let ((sock_fd, evtchn_fd), ok) = check_as_c_reads(&state, &[0, d1 as u16])
        .unwrap_or_else(|e| panic!("{e}\n{}", h.daemon.log()));
    assert!(ok, "the OK for xenstore-control is in the state");
    let fds: Vec<&str> = fds.split_whitespace().collect();
    for fd in [sock_fd, evtchn_fd] {
        assert!(
            fds.contains(&fd.to_string().as_str()),
            "{fd} not open in C: {fds:?}"
        );
    }
    // The host is served again (by the binary the fake ran), same process.
    assert_eq!(h.daemon.pid(), pid);
    let r = ts.req(MsgType::GetPerms, &z("/owned"));
    assert_eq!(r.ok(), &zs(&[&format!("n{d1}"), "r0"])[..]);
    ts.write(&format!("/local/domain/{d1}/data/x"), b"1").ok();
    let ev = g1
        .next_message(Duration::from_secs(10))
        .expect("io")
        .expect("g1's watch fires after the hand-back");
    assert!(text(&ev).starts_with("data/x|w1"), "{}", text(&ev));
}
