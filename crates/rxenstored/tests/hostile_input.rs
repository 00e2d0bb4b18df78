//! Hostile input over the socket: garbage on several connections while a
//! well-behaved client checks every answer; a client that never reads its
//! replies; every message type with junk payloads. The daemon must keep
//! serving everyone else and never die.

mod common;
use common::{z, zs, Daemon};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenstore_proto::{Header, Message, MsgType, XsError};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Up to `max` random bytes.
    fn some_bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max) as usize;
        self.bytes(n)
    }
}

fn garbage(seed: u64, socket: std::path::PathBuf, stop: Arc<AtomicBool>) -> u64 {
    let mut rng = Rng(seed);
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = UnixStream::connect(&socket) else {
            continue;
        };
        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
        for _ in 0..rng.below(50) {
            let msg = match rng.below(5) {
                // Pure noise.
                0 => rng.some_bytes(3000),
                // A header with a random type and length (often > 4096).
                1 => Header {
                    msg_type: rng.below(40) as u32,
                    req_id: rng.next() as u32,
                    tx_id: rng.below(4) as u32,
                    len: rng.next() as u32,
                }
                .to_bytes()
                .to_vec(),
                // A well-framed message with a random type and payload.
                2 | 3 => {
                    let len = rng.below(200) as usize;
                    Message::new(rng.below(30) as u32, 1, rng.below(3) as u32, rng.bytes(len))
                        .encode()
                }
                // A truncated header.
                _ => rng.some_bytes(15),
            };
            if s.write_all(&msg).is_err() {
                break;
            }
            sent += 1;
        }
        // Disconnect, with unread replies pending.
    }
    sent
}

#[test]
fn garbage_on_many_connections_while_a_client_works() {
    let mut d = Daemon::start(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..6)
        .map(|i| {
            let (sock, stop) = (d.socket.clone(), stop.clone());
            std::thread::spawn(move || garbage(0x9E37_79B9_7F4A_7C15 ^ (i + 1), sock, stop))
        })
        .collect();
    let mut c = d.client();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut rounds = 0u32;
    while Instant::now() < deadline {
        let key = format!("/good/k{}", rounds % 50);
        let val = rounds.to_string();
        assert_eq!(c.write(&key, val.as_bytes()).ok(), b"OK\0");
        assert_eq!(c.read(&key).ok(), val.as_bytes());
        let r = c.req(MsgType::TransactionStart, &z(""));
        let tx: u32 = r.text().trim_end_matches('\0').parse().expect("txid");
        assert_eq!(c.req_tx(MsgType::Read, tx, &z(&key)).ok(), val.as_bytes());
        assert_eq!(c.req_tx(MsgType::TransactionEnd, tx, &z("T")).ok(), b"OK\0");
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let sent: u64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    assert!(sent > 100, "garbage was sent ({sent} messages)");
    eprintln!("good client: {rounds} rounds in 3 s; garbage messages sent: {sent}");
    assert!(
        rounds > 10,
        "the good client made progress ({rounds} rounds)"
    );
    assert!(d.alive(), "daemon died:\n{}", d.log());
    let names = c.req(MsgType::Directory, &z("/good")).ok().to_vec();
    assert_eq!(
        names.iter().filter(|&&b| b == 0).count(),
        50.min(rounds as usize)
    );
}

#[test]
fn a_client_that_never_reads_does_not_stall_others() {
    let mut d = Daemon::start(&[]);
    let mut lazy = UnixStream::connect(&d.socket).expect("connect");
    lazy.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // Big replies: READ of a 4000-byte value, over and over, never read.
    let mut c = d.client();
    c.write("/fat", &[b'x'; 4000]).ok();
    let req = Message::new(MsgType::Read as u32, 1, 0, z("/fat")).encode();
    let batch: Vec<u8> = std::iter::repeat_n(req, 200).flatten().collect();
    let mut written = 0usize;
    for _ in 0..200 {
        match lazy.write(&batch) {
            Ok(n) => written += n,
            Err(_) => break, // our side filled up too: the daemon stopped reading us
        }
    }
    assert!(written > 0);
    // Everyone else is served promptly.
    for i in 0..100 {
        assert_eq!(c.write("/other", i.to_string().as_bytes()).ok(), b"OK\0");
    }
    assert!(d.alive());
    drop(lazy);
    assert_eq!(c.read("/other").ok(), b"99");
}

#[test]
fn every_type_number_with_junk_gets_a_valid_answer() {
    let d = Daemon::start(&[]);
    let mut c = d.client();
    let mut rng = Rng(42);
    let mut types: Vec<u32> = (0..=40).collect();
    types.push(0xFFFF);
    for t in types {
        for _ in 0..20 {
            let len = rng.below(64) as usize;
            let mut payload = rng.bytes(len);
            if rng.below(2) == 0 {
                payload.push(0);
            }
            // Keep the connection's own transactions out of reach.
            let id = c.send(t, 0, &payload);
            let r = c.reply();
            assert_eq!(r.header.req_id, id);
            if let Some(e) = r.error() {
                assert!(
                    XsError::from_name(e.as_bytes()).is_some(),
                    "type {t}: bad error name {e:?}"
                );
            } else {
                assert_eq!(r.header.msg_type, t, "type {t}");
            }
        }
    }
    // Still usable.
    assert_eq!(c.write("/after", b"ok").ok(), b"OK\0");
    assert_eq!(c.req(MsgType::Watch, &zs(&["/after", "t"])).ok(), b"OK\0");
}

/// Out of descriptors: a client waiting in the listen backlog while the
/// daemon cannot accept (EMFILE) is served as soon as a descriptor frees,
/// without needing a new connection to wake the listener (issue 8,
/// finding 8).
#[test]
fn a_client_waiting_through_emfile_is_served_when_descriptors_free() {
    let d = Daemon::start_limited(48, &[]);
    // Fill the daemon's descriptor table; each client is answered once it
    // has been accepted.
    let mut held = Vec::new();
    for _ in 0..64 {
        let mut c = d.client();
        c.stream()
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        c.send(MsgType::Read as u32, 0, &z("/"));
        if c.read_message().is_err() {
            // Not accepted: the daemon is out of descriptors.
            held.push(c);
            break;
        }
        held.push(c);
    }
    let waiting = held.pop().expect("a client left in the backlog");
    assert!(
        held.len() < 63,
        "the limit was reached ({} accepted)",
        held.len()
    );
    // Free descriptors; nobody else connects.
    held.truncate(held.len() - 4);
    let mut waiting = waiting;
    waiting
        .stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let r = waiting
        .read_message()
        .expect("the waiting client is answered without another connection");
    assert_eq!(r.header.kind(), Some(MsgType::Read));
    assert!(d.log().contains("accept"), "{}", d.log());
}
