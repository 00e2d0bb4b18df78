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
//! What is handed over today: socket connections (by descriptor, with
//! their unprocessed input and unsent output, a partly written message
//! included), watches, the tree, domain features and quotas. Ring
//! connections are not yet: a state with guests is refused with
//! [`LiveUpdateError::Rings`], so that no guest is ever dropped by an
//! update. Open transactions are not handed over (C does not either): an
//! update waits for them, or drops them when forced.

use crate::conn::{Output, Queued};
use std::time::Instant;
use xenstore_migrate as mig;
use xenstore_proto::{Decoder, Header, HEADER_SIZE};

/// Why a state cannot be handed over or taken over.
#[derive(Debug, thiserror::Error)]
pub enum LiveUpdateError {
    /// Guests are connected over rings: not handed over yet.
    #[error("{0} guest ring connection(s): live update with guests is not supported yet")]
    Rings(usize),
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
                version: Some(mig::Version::V1)
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
