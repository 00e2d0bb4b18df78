//! Checks this crate against a live xenstored, the way a program using it
//! would: on the daemon's socket, or on the kernel's `/dev/xen/xenbus` in
//! dom0 or in a guest. The real-Xen scenario (`tests/realxen/`) runs it.
//!
//! ```text
//! xs-client-check [--socket PATH | --xenbus [PATH]] [--timeout SECS] BASE
//! ```
//!
//! Without `--socket` or `--xenbus` it connects with `Client::open()`.
//! BASE is where it may write (created and removed again): an absolute path
//! in dom0, a path relative to the domain's home in a guest (`data/client`).
//! It prints `PASS <check>` or `FAIL <check>: <why>` per check, then a
//! summary line, and exits with status 1 if any check failed. A check that
//! gets no answer within the timeout (default 120 s) fails and ends the run.
//!
//! What a check expects depends on who runs it, which the program learns
//! from the `domid` node of its own home (read with the relative path):
//! domain 0 is privileged; any other domain is held to its home
//! (`EACCES` elsewhere) and to the node-size quota of 2048 bytes that C
//! xenstored and rxenstored give guests by default (`ENOSPC` beyond it).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use xenstore_client::{Client, Conn, Error, Tx, WatchEvent};
use xenstore_proto::{MsgType, PermList, XsError};

/// Writes whose watch events the event check waits for.
const EVENTS: usize = 1000;
/// The event check writes distinct nodes, this many under one parent that
/// it then removes (a guest may own 1000 nodes in all). Distinct, because
/// C xenstored drops an event identical to one still queued for the same
/// connection (same path, same token).
const EVENT_BATCH: usize = 100;
/// Requests in flight in the pipelining check.
const PIPELINED: usize = 64;
/// Writes in flight at a time while the event check writes.
const WRITE_BATCH: usize = 25;
/// Longest value written by a privileged client.
const BIG: usize = 4000;
/// Longest value written by a guest: within the node-size quota (2048
/// bytes for the record: value, permissions, child names, header).
const GUEST_BIG: usize = 1900;
/// Longest reason printed on a FAIL line.
const REASON_MAX: usize = 160;

enum Transport {
    Open,
    Socket(PathBuf),
    Xenbus(PathBuf),
}

impl Transport {
    fn connect(&self) -> xenstore_client::Result<Client<Conn>> {
        match self {
            Transport::Open => Client::open(),
            Transport::Socket(p) => Client::connect(p),
            Transport::Xenbus(p) => Client::xenbus(p),
        }
    }

    fn describe(&self) -> String {
        match self {
            Transport::Open => "Client::open()".into(),
            Transport::Socket(p) => format!("socket {}", p.display()),
            Transport::Xenbus(p) => format!("device {}", p.display()),
        }
    }
}

struct Args {
    transport: Transport,
    base: String,
    timeout: Duration,
}

fn usage() -> ! {
    eprintln!("usage: xs-client-check [--socket PATH | --xenbus [PATH]] [--timeout SECS] BASE");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut transport = Transport::Open;
    let mut base = None;
    let mut timeout = Duration::from_secs(120);
    let mut args = std::env::args().skip(1).peekable();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--socket" => {
                transport = Transport::Socket(args.next().unwrap_or_else(|| usage()).into());
            }
            "--xenbus" => {
                let path = match args.peek() {
                    Some(p) if p.starts_with("/dev/") => args.next().unwrap_or_default(),
                    _ => xenstore_client::XENBUS_DEVICE.to_string(),
                };
                transport = Transport::Xenbus(path.into());
            }
            "--timeout" => {
                let s = args.next().unwrap_or_else(|| usage());
                timeout = Duration::from_secs(s.parse().unwrap_or_else(|_| usage()));
            }
            "-h" | "--help" => usage(),
            _ if base.is_none() && !a.starts_with('-') => base = Some(a),
            _ => usage(),
        }
    }
    let base = base.unwrap_or_else(|| usage());
    let base = base.trim_end_matches('/').to_string();
    if base.is_empty() {
        usage();
    }
    Args {
        transport,
        base,
        timeout,
    }
}

type Check = Result<(), String>;

/// An error as the FAIL line shows it: the protocol's errno name, or what
/// went wrong with the connection.
fn show(e: &Error) -> String {
    match e {
        Error::Xenstore(x) => x.name().to_string(),
        other => other.to_string(),
    }
}

/// Maps a client error to a reason naming the operation.
fn op(what: impl std::fmt::Display) -> impl FnOnce(Error) -> String {
    move |e| format!("{what}: {}", show(&e))
}

/// A value as a FAIL line shows it.
fn bytes(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    if s.len() > 40 {
        format!(
            "{:?}... ({} bytes)",
            s.chars().take(32).collect::<String>(),
            v.len()
        )
    } else {
        format!("{s:?}")
    }
}

/// `r` must be the daemon's error `want`.
fn expect_err<T>(what: &str, r: xenstore_client::Result<T>, want: XsError) -> Check {
    match r {
        Err(Error::Xenstore(e)) if e == want => Ok(()),
        Err(e) => Err(format!("{what}: {}, want {}", show(&e), want.name())),
        Ok(_) => Err(format!("{what}: succeeded, want {}", want.name())),
    }
}

fn expect_value(xs: &mut Client<Conn>, path: &str, want: &[u8]) -> Check {
    let got = xs
        .read(Tx::NONE, path)
        .map_err(op(format!("read {path}")))?;
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "read {path}: {}, want {}",
            bytes(&got),
            bytes(want)
        ))
    }
}

fn expect_event(got: &WatchEvent, path: &str, token: &str, what: &str) -> Check {
    if got.path == path && got.token == token {
        Ok(())
    } else {
        Err(format!(
            "{what}: ({}, {}), want ({path}, {token})",
            got.path, got.token
        ))
    }
}

/// What the watchdog looks at: the running check and since when.
struct Current {
    name: String,
    since: Instant,
    /// Said by the event check's writer thread if it failed.
    note: Option<String>,
}

type Shared = Arc<Mutex<Current>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Current> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Runner {
    passed: u32,
    failed: u32,
    current: Shared,
}

impl Runner {
    fn run(&mut self, name: &str, f: impl FnOnce() -> Check) {
        {
            let mut c = lock(&self.current);
            c.name = name.to_string();
            c.since = Instant::now();
            c.note = None;
        }
        match f() {
            Ok(()) => {
                self.passed += 1;
                println!("PASS {name}");
            }
            Err(why) => {
                self.failed += 1;
                let mut why = why.replace('\n', " ");
                if why.len() > REASON_MAX {
                    let mut cut = REASON_MAX;
                    while !why.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    why.truncate(cut);
                    why.push_str("...");
                }
                println!("FAIL {name}: {why}");
            }
        }
    }

    fn finish(&self) -> ! {
        println!(
            "xs-client-check: {} passed, {} failed",
            self.passed, self.failed
        );
        std::process::exit(if self.failed == 0 { 0 } else { 1 })
    }
}

/// Ends the run with a FAIL line when a check takes longer than `limit`
/// (a lost watch event or reply would otherwise block for ever).
fn watchdog(current: Shared, limit: Duration) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        let c = lock(&current);
        if c.since.elapsed() > limit {
            let note = c
                .note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            println!(
                "FAIL {}: no answer within {} s{note}",
                c.name,
                limit.as_secs()
            );
            println!("xs-client-check: stopped by the timeout");
            std::process::exit(1);
        }
    });
}

fn main() {
    let args = parse_args();
    let b = args.base.clone();
    let p = |rel: &str| format!("{b}/{rel}");
    let current = Arc::new(Mutex::new(Current {
        name: "connect".into(),
        since: Instant::now(),
        note: None,
    }));
    watchdog(current.clone(), args.timeout);
    let mut r = Runner {
        passed: 0,
        failed: 0,
        current: current.clone(),
    };
    println!(
        "xs-client-check: transport {}, base {b}",
        args.transport.describe()
    );

    let mut conns = None;
    r.run("connect: two connections", || {
        let a = args.transport.connect().map_err(op("first"))?;
        let o = args.transport.connect().map_err(op("second"))?;
        conns = Some((a, o));
        Ok(())
    });
    let Some((mut xs, mut other)) = conns else {
        r.finish()
    };

    let mut domid = None;
    r.run("own domid from the relative node `domid`", || {
        let v = xs.read(Tx::NONE, "domid").map_err(op("read domid"))?;
        let s = String::from_utf8_lossy(&v);
        domid = Some(
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("domid is {}", bytes(&v)))?,
        );
        Ok(())
    });
    let Some(domid) = domid else { r.finish() };
    let guest = domid != 0;
    println!(
        "xs-client-check: domid {domid} ({})",
        if guest { "a guest" } else { "privileged" }
    );

    // A fresh start: what an earlier run may have left (no check; the
    // checks below find out whether the base is usable).
    let _ = xs.rm(Tx::NONE, &b);

    r.run("write/read round trip", || {
        xs.write(Tx::NONE, &p("small"), b"hello")
            .map_err(op("write"))?;
        expect_value(&mut xs, &p("small"), b"hello")
    });
    r.run("write/read an empty value", || {
        xs.write(Tx::NONE, &p("empty"), b"x")
            .map_err(op("write x"))?;
        xs.write(Tx::NONE, &p("empty"), b"")
            .map_err(op("write empty"))?;
        expect_value(&mut xs, &p("empty"), b"")
    });
    r.run("write/read all 256 byte values", || {
        let v: Vec<u8> = (0..=255u8).collect();
        xs.write(Tx::NONE, &p("bin"), &v).map_err(op("write"))?;
        expect_value(&mut xs, &p("bin"), &v)
    });
    let big = if guest { GUEST_BIG } else { BIG };
    r.run(&format!("write/read a {big}-byte value"), || {
        let v: Vec<u8> = (0..big).map(|i| b'a' + (i % 26) as u8).collect();
        xs.write(Tx::NONE, &p("big"), &v).map_err(op("write"))?;
        expect_value(&mut xs, &p("big"), &v)
    });
    if guest {
        r.run(
            &format!("ENOSPC for a {BIG}-byte value (guests' node-size quota)"),
            || {
                let v = vec![b'q'; BIG];
                expect_err("write", xs.write(Tx::NONE, &p("huge"), &v), XsError::Enospc)
            },
        );
    }
    let home = format!("/local/domain/{domid}");
    if !b.starts_with('/') {
        r.run("a relative path is the same node under the home", || {
            expect_value(&mut xs, &format!("{home}/{b}/small"), b"hello")
        });
    }

    r.run("mkdir: a new empty node, an existing value kept", || {
        xs.mkdir(Tx::NONE, &p("dir/zeta")).map_err(op("mkdir"))?;
        expect_value(&mut xs, &p("dir/zeta"), b"")?;
        xs.mkdir(Tx::NONE, &p("small"))
            .map_err(op("mkdir existing"))?;
        expect_value(&mut xs, &p("small"), b"hello")
    });
    r.run("directory: children in creation order", || {
        xs.mkdir(Tx::NONE, &p("dir/alpha")).map_err(op("mkdir"))?;
        xs.mkdir(Tx::NONE, &p("dir/mid")).map_err(op("mkdir"))?;
        let d = xs.directory(Tx::NONE, &p("dir")).map_err(op("directory"))?;
        if d != ["zeta", "alpha", "mid"] {
            return Err(format!("{}: {d:?}, want [zeta, alpha, mid]", p("dir")));
        }
        // Nothing of the refused write above.
        let d = xs.directory(Tx::NONE, &b).map_err(op("directory"))?;
        if d != ["small", "empty", "bin", "big", "dir"] {
            return Err(format!("{b}: {d:?}, want [small, empty, bin, big, dir]"));
        }
        Ok(())
    });

    r.run("get_perms: the domain owns what it created", || {
        let got = xs
            .get_perms(Tx::NONE, &p("small"))
            .map_err(op("get_perms"))?;
        if got.owner() == domid {
            Ok(())
        } else {
            Err(format!("perms {got}, want owner {domid}"))
        }
    });
    r.run("set_perms/get_perms round trip", || {
        // A guest may name itself and dom0 only.
        for list in [format!("b{domid}"), format!("n{domid},r0")] {
            let want = PermList::parse(list.split(',').map(str::as_bytes))
                .map_err(|e| format!("{list}: {e}"))?;
            xs.set_perms(Tx::NONE, &p("small"), &want)
                .map_err(op(format!("set_perms {list}")))?;
            let got = xs
                .get_perms(Tx::NONE, &p("small"))
                .map_err(op("get_perms"))?;
            if got != want {
                return Err(format!("set {want}, got {got}"));
            }
        }
        Ok(())
    });

    r.run("transaction: invisible until committed", || {
        let tx = xs.transaction_start().map_err(op("start"))?;
        xs.write(tx, &p("tx/a"), b"1").map_err(op("write in tx"))?;
        expect_err(
            "other connection reads before commit",
            other.read(Tx::NONE, &p("tx/a")),
            XsError::Enoent,
        )?;
        let v = xs.read(tx, &p("tx/a")).map_err(op("read in tx"))?;
        if v != b"1" {
            return Err(format!("read in tx: {}", bytes(&v)));
        }
        xs.transaction_end(tx, true).map_err(op("commit"))?;
        expect_value(&mut other, &p("tx/a"), b"1")
    });
    r.run("transaction: abort discards", || {
        let tx = xs.transaction_start().map_err(op("start"))?;
        xs.write(tx, &p("tx/b"), b"1").map_err(op("write in tx"))?;
        xs.transaction_end(tx, false).map_err(op("abort"))?;
        expect_err(
            "read after abort",
            xs.read(Tx::NONE, &p("tx/b")),
            XsError::Enoent,
        )
    });
    r.run(
        "transaction: a conflicting write makes the commit EAGAIN",
        || {
            xs.write(Tx::NONE, &p("counter"), b"0")
                .map_err(op("write"))?;
            let tx = xs.transaction_start().map_err(op("start"))?;
            xs.read(tx, &p("counter")).map_err(op("read in tx"))?;
            other
                .write(Tx::NONE, &p("counter"), b"10")
                .map_err(op("other connection's write"))?;
            xs.write(tx, &p("counter"), b"1")
                .map_err(op("write in tx"))?;
            expect_err("commit", xs.transaction_end(tx, true), XsError::Eagain)?;
            expect_value(&mut xs, &p("counter"), b"10")
        },
    );
    r.run("transaction closure: run again after EAGAIN", || {
        let mut runs = 0;
        let counter = p("counter");
        xs.transaction(|xs, tx| {
            runs += 1;
            let v = xs.read(tx, &counter)?;
            let n: u32 = String::from_utf8_lossy(&v).parse().unwrap_or(0);
            if runs == 1 {
                other.write(Tx::NONE, &counter, b"20")?;
            }
            xs.write(tx, &counter, (n + 1).to_string().as_bytes())
        })
        .map_err(op("transaction"))?;
        if runs != 2 {
            return Err(format!("the closure ran {runs} times, want 2"));
        }
        expect_value(&mut xs, &counter, b"21")
    });

    let token = "xs-client-check-w";
    r.run("watch: the initial event", || {
        xs.mkdir(Tx::NONE, &p("w")).map_err(op("mkdir"))?;
        xs.watch(&p("w"), token).map_err(op("watch"))?;
        let e = xs.next_event().map_err(op("next_event"))?;
        expect_event(&e, &p("w"), token, "first event")
    });
    // The writes come from the other connection, in a thread, while this
    // one reads the events: w/b0/0 to w/b0/99, then w/b0 removed, w/b1/0
    // and so on, every event path a different one, each expected in its
    // place.
    let expected: Vec<String> = (0..EVENTS / EVENT_BATCH)
        .flat_map(|k| {
            (0..EVENT_BATCH)
                .map(move |j| format!("w/b{k}/{j}"))
                .chain(std::iter::once(format!("w/b{k}")))
        })
        .collect();
    let writer_current = current.clone();
    let writer_base = b.clone();
    let writer = std::thread::spawn(move || {
        let r = (|| -> xenstore_client::Result<()> {
            for k in 0..EVENTS / EVENT_BATCH {
                for chunk in 0..EVENT_BATCH / WRITE_BATCH {
                    let mut ids = Vec::with_capacity(WRITE_BATCH);
                    for i in 0..WRITE_BATCH {
                        let j = chunk * WRITE_BATCH + i;
                        let msg = format!("{writer_base}/w/b{k}/{j}\0{j}");
                        ids.push(other.send(MsgType::Write, Tx::NONE, msg.as_bytes())?);
                    }
                    for id in ids {
                        other.wait(id)?;
                    }
                }
                other.rm(Tx::NONE, &format!("{writer_base}/w/b{k}"))?;
            }
            Ok(())
        })();
        if let Err(e) = &r {
            lock(&writer_current).note = Some(format!("the writer failed: {}", show(e)));
        }
        (other, r)
    });
    let t0 = Instant::now();
    r.run(
        &format!(
            "watch: {EVENTS} writes and {} removals, {} events in order, none lost",
            EVENTS / EVENT_BATCH,
            expected.len()
        ),
        || {
            for (i, want) in expected.iter().enumerate() {
                let e = xs.next_event().map_err(op(format!("event {i}")))?;
                expect_event(&e, &p(want), token, &format!("event {i}"))?;
            }
            Ok(())
        },
    );
    let elapsed = t0.elapsed();
    let (mut other, writer_result) = match writer.join() {
        Ok(x) => x,
        Err(_) => {
            println!("FAIL watch: the writer thread panicked");
            r.failed += 1;
            r.finish()
        }
    };
    println!(
        "xs-client-check: {} events in {} ms{}",
        expected.len(),
        elapsed.as_millis(),
        match &writer_result {
            Ok(()) => String::new(),
            Err(e) => format!(" (the writer failed: {})", show(e)),
        }
    );
    r.run("unwatch: no event afterwards", || {
        xs.unwatch(&p("w"), token).map_err(op("unwatch"))?;
        other
            .write(Tx::NONE, &p("w/after"), b"")
            .map_err(op("write"))?;
        // A second watch: its initial event must be the next one, with
        // nothing of the removed watch before it.
        xs.watch(&p("u"), "xs-client-check-u")
            .map_err(op("watch"))?;
        let e = xs.next_event().map_err(op("next_event"))?;
        expect_event(&e, &p("u"), "xs-client-check-u", "next event")?;
        xs.unwatch(&p("u"), "xs-client-check-u")
            .map_err(op("unwatch"))
    });

    r.run(
        &format!("pipelining: {PIPELINED} writes, then {PIPELINED} reads, waited out of order"),
        || {
            let writes = (0..PIPELINED)
                .map(|i| {
                    let msg = format!("{}\0v{i}", p(&format!("p/{i}")));
                    xs.send(MsgType::Write, Tx::NONE, msg.as_bytes())
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(op("send write"))?;
            for id in writes.into_iter().rev() {
                xs.wait(id).map_err(op("write"))?;
            }
            let reads = (0..PIPELINED)
                .map(|i| {
                    let msg = format!("{}\0", p(&format!("p/{i}")));
                    xs.send(MsgType::Read, Tx::NONE, msg.as_bytes())
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(op("send read"))?;
            // 29 is prime to 64: every read is waited for once, in a
            // scrambled order.
            for k in 0..PIPELINED {
                let i = (k * 29 + 7) % PIPELINED;
                let id = reads.get(i).copied().ok_or("no such request")?;
                let v = xs.wait(id).map_err(op(format!("read {i}")))?;
                if v != format!("v{i}").as_bytes() {
                    return Err(format!("read p/{i}: {}, want v{i}", bytes(&v)));
                }
            }
            Ok(())
        },
    );

    r.run("get_domain_path", || {
        for d in [domid, 0] {
            let got = xs.get_domain_path(d).map_err(op(format!("domain {d}")))?;
            if got != format!("/local/domain/{d}") {
                return Err(format!("domain {d}: {got:?}"));
            }
        }
        Ok(())
    });

    r.run(
        "ENOENT for a missing node (read, directory, get_perms)",
        || {
            let m = p("missing");
            expect_err("read", xs.read(Tx::NONE, &m), XsError::Enoent)?;
            expect_err("directory", xs.directory(Tx::NONE, &m), XsError::Enoent)?;
            expect_err("get_perms", xs.get_perms(Tx::NONE, &m), XsError::Enoent)
        },
    );
    r.run("EINVAL for a malformed path", || {
        expect_err("read a//b", xs.read(Tx::NONE, &p("a//b")), XsError::Einval)
    });
    if guest {
        r.run("EACCES writing outside the domain's home", || {
            expect_err(
                "write /local/domain/0/xs-client-check",
                xs.write(Tx::NONE, "/local/domain/0/xs-client-check", b"x"),
                XsError::Eacces,
            )
        });
    }

    r.run("rm: a subtree, then the base", || {
        xs.rm(Tx::NONE, &p("dir")).map_err(op("rm dir"))?;
        expect_err(
            "read dir/zeta",
            xs.read(Tx::NONE, &p("dir/zeta")),
            XsError::Enoent,
        )?;
        let d = xs.directory(Tx::NONE, &b).map_err(op("directory"))?;
        if d.iter().any(|c| c == "dir") {
            return Err(format!("{b} still lists dir: {d:?}"));
        }
        // A missing node whose parent exists: nothing to do. Under a
        // missing parent: ENOENT.
        xs.rm(Tx::NONE, &p("dir")).map_err(op("rm dir again"))?;
        expect_err(
            "rm dir/x/y",
            xs.rm(Tx::NONE, &p("dir/x/y")),
            XsError::Enoent,
        )?;
        xs.rm(Tx::NONE, &b).map_err(op("rm base"))?;
        expect_err("read base", xs.read(Tx::NONE, &b), XsError::Enoent)
    });
    r.finish()
}
