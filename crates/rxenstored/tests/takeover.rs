//! Take-over from C xenstored: the daemon started as C's live update
//! starts the new binary (C's own argv plus `-U`, C's state file in
//! `$XENSTORED_RUNDIR/state_dump`, the descriptors the stream names left
//! open), on a version-1 stream made record by record as C 4.17 writes it.
//! A state the daemon refuses leaves everything to a fallback binary.
//!
//! The descriptors are real: this test process opens the listening socket
//! and the accepted connections, clears close-on-exec on them and names
//! their numbers in the stream, as C's process does before its `execvp`.
//! Kept in a file of its own: no other test spawns children meanwhile (they
//! would inherit the descriptors too).

mod common;
use common::{binary, temp_dir, z, zs, Client};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use xenstore_migrate as mig;
use xenstore_proto::MsgType;

fn perm(access: mig::PermAccess, domid: u16) -> mig::Perm {
    mig::Perm {
        access,
        stale: false,
        domid,
    }
}

fn node(path: &str, value: &[u8], perms: Vec<mig::Perm>) -> mig::Record {
    mig::Record::Node(mig::Node {
        path: path.as_bytes().to_vec(),
        transaction: None,
        value: value.to_vec(),
        perms,
    })
}

fn msg(t: MsgType, req_id: u32, payload: &[u8]) -> mig::Message {
    mig::Message {
        msg_type: t as u32,
        req_id,
        tx_id: 0,
        payload: payload.to_vec(),
    }
}

/// A version-1 stream in C 4.17's order (xenstored_control.c
/// lu_dump_state): GLOBAL (xenstored_core.c dump_state_global), each
/// connection followed by its watches (xenstored_domain.c
/// dump_state_connections, xenstored_watch.c dump_state_watches), the two
/// special nodes with permissions only (xenstored_domain.c
/// dump_state_special_nodes), the tree from "/" in pre-order
/// (xenstored_core.c dump_state_nodes), END.
fn c_stream(version: mig::Version, records: Vec<mig::Record>) -> Vec<u8> {
    let mut w = mig::Writer::new(
        Vec::new(),
        mig::StreamHeader {
            version,
            endian: mig::Endian::Little,
        },
    )
    .expect("writer");
    for r in &records {
        w.write_record(r).expect("record");
    }
    w.finish().expect("finish")
}

fn keep(fd: i32) {
    xen_stable::inherit::keep_across_exec(fd).expect("clear close-on-exec");
}

fn read_msg(c: &mut Client) -> common::Reply {
    c.read_message().expect("a message")
}

fn wait_exit(child: &mut std::process::Child, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn spawn(dir: &Path, args: &[&str]) -> std::process::Child {
    let log = std::fs::File::create(dir.join("daemon.log")).expect("log");
    Command::new(binary())
        .args(args)
        .env("XENSTORED_RUNDIR", dir)
        .env_remove("XENSTORED_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start rxenstored")
}

#[test]
fn a_c_4_17_state_and_c_argv_are_taken_over() {
    taken_over(false, mig::Version::V1);
}

/// C 4.20 writes the special nodes after the tree (core.c
/// dump_state_nodes), the rest as 4.17.
#[test]
fn a_c_4_20_state_and_c_argv_are_taken_over() {
    taken_over(true, mig::Version::V1);
}

/// C 4.21 writes version 2 by default (xenstore_state.h
/// XS_STATE_VERSION 2; lu.c lu_dump_state) and, after the nodes, a DOMAIN
/// record for every domain it keeps, with its features and no quota
/// (domain.c dump_state_domain); connections carry no unique id and
/// watches no depth (plain WATCH records), as 4.20.
#[test]
fn a_c_4_21_state_and_c_argv_are_taken_over() {
    taken_over(true, mig::Version::V2);
}

fn taken_over(specials_last: bool, version: mig::Version) {
    let dir = temp_dir("takeover");
    let sock = dir.join("socket");
    let listener = UnixListener::bind(&sock).expect("bind");
    // The xenstore-control connection that asked for the update, and a
    // client with a watch and a request not yet handled.
    let (ctl_server, ctl) = UnixStream::pair().expect("pair");
    let (w_server, watcher) = UnixStream::pair().expect("pair");
    let mut ctl = Client::from_stream(ctl);
    let mut watcher = Client::from_stream(watcher);
    for fd in [
        listener.as_raw_fd(),
        ctl_server.as_raw_fd(),
        w_server.as_raw_fd(),
    ] {
        keep(fd);
    }
    let n = |d| perm(mig::PermAccess::None, d);
    let mut records = vec![
        // C writes its event-channel descriptor; there is no Xen here.
        mig::Record::Global(mig::Global {
            socket_fd: listener.as_raw_fd(),
            evtchn_fd: -1,
        }),
        // The requester's "OK" is the last of its output, with the `-s`
        // request's header (xenstored_control.c lu_write_response).
        mig::Record::Connection(mig::Connection {
            conn_id: 1,
            kind: mig::ConnKind::Socket {
                fd: ctl_server.as_raw_fd(),
            },
            input: mig::Input::default(),
            output: mig::Output {
                partial: Vec::new(),
                messages: vec![msg(MsgType::Control, 7, b"OK\0")],
            },
            unique_id: None,
        }),
        mig::Record::Connection(mig::Connection {
            conn_id: 2,
            kind: mig::ConnKind::Socket {
                fd: w_server.as_raw_fd(),
            },
            input: mig::Input {
                requests: vec![msg(MsgType::Read, 9, b"/local/domain/0/name\0")],
                partial: None,
            },
            output: mig::Output {
                partial: Vec::new(),
                messages: vec![msg(MsgType::WatchEvent, 0, b"/tool\0t\0")],
            },
            unique_id: None,
        }),
        mig::Record::Watch(mig::Watch {
            conn_id: 2,
            path: b"/tool".to_vec(),
            token: b"t".to_vec(),
            depth: None,
        }),
        node("/", b"", vec![n(0)]),
        node("/tool", b"", vec![n(0)]),
        node("/tool/xenstored", b"", vec![n(0)]),
        node("/local", b"", vec![n(0)]),
        node("/local/domain", b"", vec![n(0)]),
        node("/local/domain/0", b"", vec![n(0)]),
        node("/local/domain/0/name", b"Domain-0", vec![n(0)]),
        node("/guest", b"g", vec![n(5), perm(mig::PermAccess::Read, 0)]),
    ];
    // The special nodes: permissions only (4.17: xenstored_domain.c
    // dump_state_special_nodes, before the tree; 4.20: after it).
    let specials = [
        node("@releaseDomain", b"", vec![n(0)]),
        node(
            "@introduceDomain",
            b"",
            vec![n(1), perm(mig::PermAccess::Read, 0)],
        ),
    ];
    let at = if specials_last {
        records.len()
    } else {
        records
            .iter()
            .position(|r| matches!(r, mig::Record::Node(_)))
            .unwrap_or(0)
    };
    records.splice(at..at, specials);
    if version == mig::Version::V2 {
        for domid in [0, 5] {
            records.push(mig::Record::Domain(mig::Domain {
                domid,
                features: 0,
                quotas: Vec::new(),
            }));
        }
    }
    let stream = c_stream(version, records);
    std::fs::write(dir.join("state_dump"), &stream).expect("state file");
    let pid_file = dir.join("pid");
    let trace = dir.join("trace");
    // C 4.17's argv as Debian starts it, the options C knows that this
    // daemon ignores among them, and C's -U last.
    let mut child = spawn(
        &dir,
        &[
            &format!("--pid-file={}", pid_file.display()),
            "-N",
            "-T",
            trace.to_str().expect("utf8"),
            "-E",
            "1000",
            "-Q",
            "outstanding=20",
            "-D",
            "-R",
            "-I",
            "-U",
        ],
    );
    let log = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    // The requester gets C's "OK" with its request id.
    let ok = read_msg(&mut ctl);
    assert_eq!(
        (ok.header.msg_type, ok.header.req_id, ok.ok()),
        (MsgType::Control as u32, 7, &b"OK\0"[..]),
        "{}",
        log()
    );
    // The watcher: the queued event, then the answer to its request.
    let ev = read_msg(&mut watcher);
    assert_eq!(ev.header.msg_type, MsgType::WatchEvent as u32);
    let r = read_msg(&mut watcher);
    assert_eq!((r.header.req_id, r.ok()), (9, &b"Domain-0"[..]));
    // The inherited listening socket takes new clients; the tree is C's.
    let mut c = Client::connect(&sock);
    assert_eq!(c.read("/local/domain/0/name").ok(), b"Domain-0");
    assert_eq!(
        c.req(MsgType::GetPerms, &z("/guest")).ok(),
        &zs(&["n5", "r0"])[..]
    );
    assert_eq!(
        c.req(MsgType::GetPerms, &z("@introduceDomain")).ok(),
        &zs(&["n1", "r0"])[..]
    );
    // The watch set under C fires under rxenstored.
    c.write("/tool/x", b"1").ok();
    let ev = read_msg(&mut watcher);
    assert_eq!(ev.header.msg_type, MsgType::WatchEvent as u32);
    assert_eq!(ev.ok(), &zs(&["/tool/x", "t"])[..]);
    // Same process (the child is what C's process became), pid file
    // rewritten, state file gone, C's ignored options reported.
    let pid = std::fs::read_to_string(&pid_file).expect("pid file");
    assert_eq!(pid.trim(), child.id().to_string());
    assert!(!dir.join("state_dump").exists());
    let l = log();
    assert!(l.contains("-D/--no-domain-init ignored"), "{l}");
    assert!(l.contains("took over 2 socket connection(s)"), "{l}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_refused_state_is_left_whole_to_the_fallback_binary() {
    let dir = temp_dir("takeover-refused");
    let listener = UnixListener::bind(dir.join("socket")).expect("bind");
    let (conn_server, _conn) = UnixStream::pair().expect("pair");
    keep(listener.as_raw_fd());
    keep(conn_server.as_raw_fd());
    let n = |d| perm(mig::PermAccess::None, d);
    // "/a/b" comes without "/a": C itself would abort (read_state_node:
    // "read parent error restoring node"); rxenstored refuses it before
    // taking anything.
    let stream = c_stream(
        mig::Version::V1,
        vec![
            mig::Record::Global(mig::Global {
                socket_fd: listener.as_raw_fd(),
                evtchn_fd: -1,
            }),
            mig::Record::Connection(mig::Connection {
                conn_id: 1,
                kind: mig::ConnKind::Socket {
                    fd: conn_server.as_raw_fd(),
                },
                input: mig::Input::default(),
                output: mig::Output::default(),
                unique_id: None,
            }),
            node("/", b"", vec![n(0)]),
            node("/a/b", b"", vec![n(0)]),
        ],
    );
    std::fs::write(dir.join("state_dump"), &stream).expect("state file");
    // The fallback records what it got: its pid, its argv, its open
    // descriptors, whether the state file is still there.
    let out = dir.join("fallback.out");
    let fake = dir.join("xenstored");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\n{{ echo \"pid $$\"; echo \"argv $*\"; ls /proc/$$/fd | tr '\\n' ' '; echo; \
             test -e '{}' && echo state-kept; }} >'{}'\n",
            dir.join("state_dump").display(),
            out.display()
        ),
    )
    .expect("fake");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut child = spawn(
        &dir,
        &[
            "-N",
            "--fallback-xenstored",
            fake.to_str().expect("utf8"),
            "-U",
        ],
    );
    let st = wait_exit(&mut child, 20).expect("the fallback ran and exited");
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    assert!(st.success(), "{st:?}\n{log}");
    let got =
        std::fs::read_to_string(&out).unwrap_or_else(|_| panic!("no fallback output; log:\n{log}"));
    assert!(got.contains(&format!("pid {}", child.id())), "{got}");
    assert!(got.contains("argv --no-fork -U"), "{got}");
    let fds: Vec<&str> = got
        .lines()
        .nth(2)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    for fd in [listener.as_raw_fd(), conn_server.as_raw_fd()] {
        assert!(
            fds.contains(&fd.to_string().as_str()),
            "{fd} not in {fds:?}"
        );
    }
    assert!(got.contains("state-kept"), "{got}");
    assert!(log.contains("comes before its parent"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
