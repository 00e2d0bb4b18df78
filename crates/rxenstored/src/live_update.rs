//! Live update: the daemon's state as Xen's migration stream
//! (`xenstore-migrate`) and back, as C xenstored hands it from one binary
//! to the next.
//!
//! This module holds the pure parts: a connection's buffered input and
//! pending output as stream records and back. [`crate::state::State`]
//! assembles the stream (GLOBAL, one CONNECTION per connection with its
//! WATCH records, the NODE records in tree order, the DOMAIN records) and
//! restores from one.
//!
//! What is handed over: socket connections (by descriptor) and guests'
//! rings (domid, SET_TARGET's target, the local event-channel port, the
//! `unique_id`), each with its unprocessed input and unsent output (a
//! partly written message included), watches, the tree, domain features
//! and quotas. The event-channel descriptor crosses the `exec` (GLOBAL's
//! `evtchn-fd`) and is taken again with `xenevtchn_fdopen`, so the rings'
//! ports stay bound; their pages are mapped again, indices untouched; the
//! new binary then reads and signals every ring and looks at every domain
//! once. Without `xenevtchn_fdopen` a state with guests is refused before
//! anything changes ([`LiveUpdateError::Rings`]). Open transactions are
//! not handed over (C does not either): an update waits for them, or
//! drops them when forced.

use crate::conn::{Output, Queued};
use std::time::Instant;
use xenstore_migrate as mig;
use xenstore_proto::{Decoder, Header, HEADER_SIZE};

/// Why a state cannot be handed over or taken over.
#[derive(Debug, thiserror::Error)]
pub enum LiveUpdateError {
    /// Guests are connected over rings and cannot be handed over (or
    /// taken over) here: why.
    #[error("{0} guest ring connection(s): {1}")]
    Rings(usize, String),
    /// A socket whose descriptor is unknown (an in-memory test stream).
    #[error("connection {0} has no descriptor to hand over")]
    NoDescriptor(u64),
    /// The stream could not be written or read.
    #[error("migration stream: {0}")]
    Stream(#[from] mig::Error),
    /// The stream's content is not a state this daemon can take.
    #[error("state: {0}")]
    State(String),
    /// A handed-over descriptor could not be taken.
    #[error("descriptor {fd}: {source}")]
    Adopt {
        /// The descriptor.
        fd: i32,
        /// Why.
        source: std::io::Error,
    },
}

fn record_message(bytes: &[u8]) -> Option<mig::Message> {
    let head = bytes.first_chunk::<HEADER_SIZE>()?;
    let h = Header::from_bytes(head);
    let payload = bytes.get(HEADER_SIZE..)?;
    (payload.len() == h.len as usize).then(|| mig::Message {
        msg_type: h.msg_type,
        req_id: h.req_id,
        tx_id: h.tx_id,
        payload: payload.to_vec(),
    })
}

fn wire(m: &mig::Message) -> Vec<u8> {
    xenstore_proto::Message::new(m.msg_type, m.req_id, m.tx_id, m.payload.clone()).encode()
}

/// A connection's received, unprocessed bytes as the stream's input:
/// whole requests, then at most one partly received message.
pub fn input_record(decoder: &Decoder) -> mig::Input {
    let mut rest = decoder.pending();
    let mut input = mig::Input::default();
    while let Some(head) = rest.first_chunk::<HEADER_SIZE>() {
        let h = Header::from_bytes(head);
        let total = HEADER_SIZE + h.len as usize;
        match rest.get(..total) {
            Some(whole) => {
                if let Some(m) = record_message(whole) {
                    input.requests.push(m);
                }
                rest = &rest[total..];
            }
            None => {
                input.partial = Some(mig::PartialInput::Payload {
                    msg_type: h.msg_type,
                    req_id: h.req_id,
                    tx_id: h.tx_id,
                    len: h.len,
                    received: rest[HEADER_SIZE..].to_vec(),
                });
                return input;
            }
        }
    }
    if !rest.is_empty() {
        input.partial = Some(mig::PartialInput::Header(rest.to_vec()));
    }
    input
}

/// Feeds a connection's handed-over input back into its decoder.
pub fn restore_input(input: &mig::Input, decoder: &mut Decoder) {
    for m in &input.requests {
        decoder.feed(&wire(m));
    }
    match &input.partial {
        None => {}
        Some(mig::PartialInput::Header(b)) => decoder.feed(b),
        Some(mig::PartialInput::Payload {
            msg_type,
            req_id,
            tx_id,
            len,
            received,
        }) => {
            let h = Header {
                msg_type: *msg_type,
                req_id: *req_id,
                tx_id: *tx_id,
                len: *len,
            };
            decoder.feed(&h.to_bytes());
            decoder.feed(received);
        }
    }
}

/// A connection's unsent output as the stream's output: the tail of a
/// message already going out, then whole messages.
pub fn output_record(out: &Output) -> mig::Output {
    let (partial, rest) = out.pending();
    mig::Output {
        partial: partial.to_vec(),
        messages: rest.filter_map(|q| record_message(&q.bytes)).collect(),
    }
}

/// Queues handed-over output again: the partial tail first (as bytes of
/// its own), then the messages. Nothing is charged: what a domain's queue
/// held before the update was charged then.
pub fn restore_output(output: &mig::Output, out: &mut Output, now: Instant) {
    let queued = |bytes: Vec<u8>, event: bool| Queued {
        bytes,
        at: now,
        event,
        charged: 0,
        ticket: None,
    };
    if !output.partial.is_empty() {
        out.push(queued(output.partial.clone(), false));
    }
    for m in &output.messages {
        let event = m.msg_type == xenstore_proto::MsgType::WatchEvent as u32;
        out.push(queued(wire(m), event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenstore_proto::Message;

    #[test]
    fn input_splits_into_requests_and_the_partial_one() {
        let a = Message::new(2, 1, 0, b"/a\0".to_vec()).encode();
        let b = Message::new(11, 2, 0, b"/b\0xyz".to_vec()).encode();
        for cut in 0..=b.len() {
            let mut d = Decoder::new();
            d.feed(&a);
            d.feed(&b[..cut]);
            let rec = input_record(&d);
            assert_eq!(rec.requests.len(), 1 + usize::from(cut == b.len()));
            assert_eq!(rec.partial.is_some(), cut > 0 && cut < b.len(), "cut {cut}");
            let mut back = Decoder::new();
            restore_input(&rec, &mut back);
            assert_eq!(back.pending(), d.pending(), "cut {cut}");
        }
    }

    #[test]
    fn output_keeps_the_unwritten_tail_and_the_rest() {
        let mut out = Output::default();
        let now = Instant::now();
        for i in 0..3u32 {
            out.push(Queued {
                bytes: Message::new(2, i, 0, vec![b'x'; 10]).encode(),
                at: now,
                event: false,
                charged: 0,
                ticket: None,
            });
        }
        // Five bytes of the first message went out, then no room.
        let mut room = 5;
        let _ = out.write::<()>(|_| Ok(std::mem::take(&mut room)), |_| {});
        let rec = output_record(&out);
        assert_eq!(rec.partial.len(), 26 - 5);
        assert_eq!(rec.messages.len(), 2);
        let mut back = Output::default();
        restore_output(&rec, &mut back, now);
        assert_eq!(back.bytes(), out.bytes());
        let mut a = Vec::new();
        let mut b = Vec::new();
        let _ = out.write::<()>(
            |iov| {
                let n: usize = iov.iter().map(|s| s.len()).sum();
                iov.iter().for_each(|s| a.extend_from_slice(s));
                Ok(n)
            },
            |_| {},
        );
        let _ = back.write::<()>(
            |iov| {
                let n: usize = iov.iter().map(|s| s.len()).sum();
                iov.iter().for_each(|s| b.extend_from_slice(s));
                Ok(n)
            },
            |_| {},
        );
        assert_eq!(a, b);
    }
}

/// An open live-update session (`live-update -f`), bound to the connection
/// that opened it.
#[derive(Debug)]
pub struct Session {
    /// The connection that opened it.
    pub conn: u64,
    /// The new binary.
    pub binary: std::path::PathBuf,
    /// Its command line (`-c`), if not the current one.
    pub cmdline: Option<String>,
    /// Set by `-s`.
    pub start: Option<Start>,
    /// The switch was asked of the loop.
    pub going: bool,
}

impl Session {
    /// A session of `conn` for `binary`.
    pub fn new(conn: u64, binary: std::path::PathBuf) -> Session {
        Session {
            conn,
            binary,
            cmdline: None,
            start: None,
            going: false,
        }
    }
}

/// `live-update -s`: waiting for transactions to end.
#[derive(Debug)]
pub struct Start {
    /// The request, answered when the update happens or fails.
    pub request: Header,
    /// `-F`: go at the timeout even with transactions open (they are
    /// lost).
    pub force: bool,
    /// `-t` (C's default: 0, no wait).
    pub timeout: std::time::Duration,
    /// `-v`.
    pub version: mig::Version,
    /// Whether `-v` was given (else a hand-back to C writes version 1).
    pub version_given: bool,
    /// When `-s` came.
    pub since: Instant,
}

/// What the loop needs to hand over and run the next binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Go {
    /// The connection whose `-s` is answered `OK` by the next binary.
    pub conn: u64,
    /// That request.
    pub request: Header,
    /// The new binary.
    pub binary: std::path::PathBuf,
    /// Its command line (`-c`), split on blanks; else the current one.
    pub cmdline: Option<String>,
    /// The stream version.
    pub version: mig::Version,
    /// Whether `-v` chose it.
    pub version_given: bool,
}

/// A `live-update` command's arguments (after the word `live-update`).
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `-f <file>`.
    Binary(std::path::PathBuf),
    /// `-c <cmdline>`.
    Cmdline(String),
    /// `-s [-t <secs>] [-F] [-v <version>]`; `version` `None` when not
    /// one this daemon writes.
    Start {
        /// `-F`.
        force: bool,
        /// `-t`.
        timeout: std::time::Duration,
        /// `-v` (default 2).
        version: Option<mig::Version>,
        /// Whether `-v` was given.
        version_given: bool,
    },
    /// `-a`.
    Abort,
}

impl Command {
    /// Parses C's argument forms; anything else is `EINVAL`, as in C.
    pub fn parse(words: &[&[u8]]) -> Result<Command, xenstore_proto::XsError> {
        use xenstore_proto::XsError::Einval;
        let text = |w: &[u8]| String::from_utf8_lossy(w).into_owned();
        match words {
            [b"-a"] => Ok(Command::Abort),
            [b"-c", line] => Ok(Command::Cmdline(text(line))),
            [b"-f", file] => Ok(Command::Binary(text(file).into())),
            [b"-s", rest @ ..] => {
                let mut force = false;
                let mut timeout = 0u64;
                let mut version = Some(mig::Version::V2);
                let mut version_given = false;
                let mut it = rest.iter();
                while let Some(w) = it.next() {
                    match *w {
                        b"-F" => force = true,
                        b"-t" => {
                            let v = it.next().ok_or(Einval)?;
                            timeout = xenstore_proto::number::atoi(v).max(0) as u64;
                        }
                        b"-v" => {
                            let v = it.next().ok_or(Einval)?;
                            version_given = true;
                            version = u32::try_from(xenstore_proto::number::atoi(v))
                                .ok()
                                .and_then(mig::Version::from_number);
                        }
                        _ => return Err(Einval),
                    }
                }
                Ok(Command::Start {
                    force,
                    timeout: std::time::Duration::from_secs(timeout),
                    version,
                    version_given,
                })
            }
            _ => Err(Einval),
        }
    }
}

/// `-f`'s check, with C's answers.
pub fn check_binary(path: &std::path::Path) -> Result<(), &'static str> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|_| "File not accessible.")?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err("File not executable.");
    }
    Ok(())
}

/// The new binary's arguments: the `-c` line split on blanks, or the
/// current ones; `-U` added if missing. (The fork's internal flag stays:
/// it tells the new binary that its standard error is gone, so it logs to
/// syslog as the old one did.)
pub fn next_argv(cmdline: Option<&str>, current: &[std::ffi::OsString]) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = match cmdline {
        Some(line) => line
            .split([' ', '\t'])
            .filter(|w| !w.is_empty())
            .map(Into::into)
            .collect(),
        None => current.to_vec(),
    };
    if !v.iter().any(|a| a == "-U" || a == "--live-update") {
        v.push("-U".into());
    }
    v
}

#[cfg(test)]
mod command_tests {
    use super::*;

    #[test]
    fn c_forms_parse_and_others_are_einval() {
        let w = |s: &[&str]| -> Vec<Vec<u8>> { s.iter().map(|x| x.as_bytes().to_vec()).collect() };
        let p = |s: &[&str]| {
            let v = w(s);
            let r: Vec<&[u8]> = v.iter().map(Vec::as_slice).collect();
            Command::parse(&r)
        };
        assert_eq!(p(&["-a"]), Ok(Command::Abort));
        assert_eq!(p(&["-f", "/x"]), Ok(Command::Binary("/x".into())));
        assert_eq!(p(&["-c", "a b"]), Ok(Command::Cmdline("a b".into())));
        assert_eq!(
            p(&["-s", "-t", "5", "-F", "-v", "1"]),
            Ok(Command::Start {
                force: true,
                timeout: std::time::Duration::from_secs(5),
                version: Some(mig::Version::V1),
                version_given: true,
            })
        );
        assert!(matches!(
            p(&["-s", "-v", "3"]),
            Ok(Command::Start { version: None, .. })
        ));
        for bad in [
            &["-s", "-x"][..],
            &["-a", "x"],
            &["-f"],
            &["-q"],
            &[],
            &["-s", "-t"],
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_next_command_line_has_minus_u_once() {
        let cur: Vec<std::ffi::OsString> = ["-N", "--internal-daemon-child", "-E", "5"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(
            next_argv(None, &cur),
            ["-N", "--internal-daemon-child", "-E", "5", "-U"]
        );
        assert_eq!(
            next_argv(Some("-N  -U\t-W 3"), &cur),
            ["-N", "-U", "-W", "3"]
        );
    }
}

/// Whether `binary` is taken for C xenstored (a hand-back): its file name
/// does not name rxenstored. Then, unless `-c` and `-v` say otherwise, it
/// gets C's command line ([`crate::cli::Options::c_argv`]) and a version-1
/// stream, which C 4.17 to 4.20 alone read (`lu_read_state` wants version
/// 1 exactly).
pub fn is_c_binary(binary: &std::path::Path) -> bool {
    !binary
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("rxenstored"))
}

/// Everything a take-over needs of a state file, checked before any
/// descriptor is taken: the stream well formed (`xenstore-migrate`'s
/// reader), GLOBAL first, every socket descriptor it names open, above
/// the standard three and named once, the nodes restorable. A state
/// refused here leaves every descriptor as the binary before left it, so
/// that a fallback binary can take the same state.
///
/// The nodes are read once, borrowed from `bytes`, into the tree the
/// restore then installs (built for a store configured as `store`).
pub fn check_state(
    bytes: &[u8],
    store: &xenstore_store::StoreConfig,
) -> Result<xenstore_store::migrate::RestoredTree, String> {
    let mut reader = mig::Reader::new(bytes).map_err(|e| e.to_string())?;
    let g = match reader.next_record() {
        Ok(Some(mig::Record::Global(g))) => g,
        Ok(_) => return Err("no GLOBAL record first".into()),
        Err(e) => return Err(e.to_string()),
    };
    let mut fds = std::collections::HashSet::new();
    let mut want = |fd: i32, what: &str| -> Result<(), String> {
        if fd < 3 || !fds.insert(fd) {
            return Err(format!(
                "{what}: descriptor {fd} not one to hand over (or named twice)"
            ));
        }
        if !xen_stable::inherit::is_open(fd) {
            return Err(format!("{what}: descriptor {fd} is not open"));
        }
        Ok(())
    };
    want(g.socket_fd, "listening socket")?;
    if g.evtchn_fd >= 0 {
        want(g.evtchn_fd, "event channel")?;
    }
    tree_of(bytes, reader, store, |conn_id, fd| {
        want(fd, &format!("connection {conn_id}"))
    })
}

/// The tree of a handed-over state, as [`check_state`] builds it, without
/// looking at descriptors (the state's own tests).
pub fn read_tree(
    bytes: &[u8],
    store: &xenstore_store::StoreConfig,
) -> Result<xenstore_store::migrate::RestoredTree, String> {
    let reader = mig::Reader::new(bytes).map_err(|e| e.to_string())?;
    tree_of(bytes, reader, store, |_, _| Ok(()))
}

/// The rest of a stream from `reader`: its committed nodes as a tree,
/// every socket connection's descriptor given to `socket` on the way.
fn tree_of(
    bytes: &[u8],
    mut reader: mig::Reader<'_>,
    store: &xenstore_store::StoreConfig,
    mut socket: impl FnMut(u32, i32) -> Result<(), String>,
) -> Result<xenstore_store::migrate::RestoredTree, String> {
    let expected = mig::count_records(bytes, mig::RecordType::Node);
    // The committed nodes go to the tree as they are read; the other
    // records are checked on the way (the whole stream is read: the tree
    // takes every node up to END).
    let mut refused = None;
    let nodes = std::iter::from_fn(|| loop {
        match reader.next_item() {
            Ok(Some(mig::Item::Node(n))) => return Some((n.path, n.value, n.perms.iter())),
            Ok(Some(mig::Item::Record(mig::Record::Connection(mig::Connection {
                conn_id,
                kind: mig::ConnKind::Socket { fd },
                ..
            })))) => {
                if let Err(e) = socket(conn_id, fd) {
                    refused = Some(e);
                    return None;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => {
                refused = Some(e.to_string());
                return None;
            }
        }
    });
    let tree = xenstore_store::migrate::RestoredTree::build(store, expected, nodes);
    if let Some(e) = refused {
        return Err(e);
    }
    let tree = tree.map_err(|e| e.to_string())?;
    if !reader.ended() {
        return Err("the stream ends before its END record".into());
    }
    let rest = reader.rest();
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes after the END record at offset {}",
            rest.len(),
            reader.offset()
        ));
    }
    Ok(tree)
}

/// The binary a refused take-over runs instead: `explicit`, else the
/// first of `/usr/lib/xen-*/bin/xenstored` (Debian's C xenstored, newest
/// version first) and `/usr/sbin/xenstored` that exists, is executable and
/// is not this executable.
pub fn fallback_binary(explicit: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| std::fs::canonicalize(p).ok());
    let mut candidates: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("xen-"))
                .map(|e| e.path().join("bin/xenstored"))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates.reverse();
    candidates.push("/usr/sbin/xenstored".into());
    candidates
        .into_iter()
        .find(|c| check_binary(c).is_ok() && std::fs::canonicalize(c).ok() != me && me.is_some())
}

/// What a hand-back to C xenstored changes in the state it writes: nodes
/// owned by a domain that no longer exists (C aborts restoring them: its
/// `read_state_node` counts each node for its owner, and the owner must
/// exist in the hypervisor) are given to the privileged domain, as C's
/// own `-K` does with a dead domain's nodes: the owner a node is written
/// with.
pub fn owner_for_c(owner: u16, dead: &std::collections::HashSet<u16>, priv_domid: u16) -> u16 {
    if dead.contains(&owner) {
        priv_domid
    } else {
        owner
    }
}

#[cfg(test)]
mod takeover_tests {
    use super::*;

    #[test]
    fn c_binaries_are_told_apart() {
        assert!(is_c_binary(std::path::Path::new(
            "/usr/lib/xen-4.17/bin/xenstored"
        )));
        assert!(is_c_binary(std::path::Path::new("/usr/sbin/xenstored")));
        assert!(!is_c_binary(std::path::Path::new(
            "/usr/local/sbin/rxenstored"
        )));
        assert!(!is_c_binary(std::path::Path::new(
            "target/release/rxenstored-new"
        )));
    }

    #[test]
    fn dead_owners_become_the_privileged_domain() {
        let dead = [7u16].into_iter().collect();
        assert_eq!(owner_for_c(7, &dead, 0), 0);
        assert_eq!(owner_for_c(3, &dead, 0), 3);
        assert_eq!(owner_for_c(0, &dead, 0), 0);
    }

    #[test]
    fn a_state_naming_closed_descriptors_or_orphans_is_refused() {
        // GLOBAL naming `socket_fd`, then committed nodes at `paths`, END,
        // then `trailing`.
        let state = |socket_fd: i32, paths: &[&str], trailing: &[u8]| {
            let mut w = mig::Writer::new(
                Vec::new(),
                mig::StreamHeader {
                    version: mig::Version::V1,
                    endian: mig::Endian::Little,
                },
            )
            .unwrap();
            w.write_record(&mig::Record::Global(mig::Global {
                socket_fd,
                evtchn_fd: -1,
            }))
            .unwrap();
            let owner = [mig::Perm {
                access: mig::PermAccess::None,
                stale: false,
                domid: 0,
            }];
            for p in paths {
                w.write_node(p.as_bytes(), b"v", &owner).unwrap();
            }
            let mut bytes = w.finish().unwrap();
            bytes.extend_from_slice(trailing);
            bytes
        };
        // Descriptor 1000 is not open in the test process.
        let e = check_state(&state(1000, &[], b""), &Default::default()).unwrap_err();
        assert!(e.contains("not open"), "{e}");
        assert!(check_state(b"xenstore", &Default::default()).is_err());
        assert!(check_state(&[], &Default::default()).is_err());

        // An open descriptor, and nodes: a node before its parent is
        // refused; in order, the tree comes back with every node.
        let open = std::fs::File::open("/proc/self/stat").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&open);
        let state = |paths: &[&str], trailing: &[u8]| state(fd, paths, trailing);
        let e = check_state(&state(&["/", "/a/b", "/a"], b""), &Default::default()).unwrap_err();
        assert!(e.contains("before its parent"), "{e}");
        let e = check_state(&state(&["/", "/a"], &[0; 8]), &Default::default()).unwrap_err();
        assert!(e.contains("after the END record"), "{e}");
        let tree = check_state(&state(&["/", "/a", "/a/b"], b""), &Default::default()).unwrap();
        assert_eq!(tree.len(), 3);
    }
}
