//! The daemon's state driven without its event loop or binary: socket
//! streams in memory, a clock of the test's own. What the state decides
//! (turn budgets, poll interest, stale events) is checked exactly, with no
//! waiting and no timing.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use xenstore_proto::{Decoder, Message, MsgType};
use xenstore_store::StoreConfig;

use rxenstored::conn::{MemStream, Stream};
use rxenstored::server::ServerConfig;
use rxenstored::state::{Action, State, REQUESTS_PER_TURN};
use rxenstored::trace::Trace;

/// A socket in memory that reports descriptor 99 to the loop.
#[derive(Clone)]
struct Mem(MemStream);

impl Default for Mem {
    fn default() -> Mem {
        let m = MemStream::default();
        m.pipe().fd = Some(99);
        Mem(m)
    }
}

impl Mem {
    fn send(&self, t: MsgType, id: u32, payload: &[u8]) {
        let m = Message::new(t as u32, id, 0, payload.to_vec());
        self.0.pipe().to_daemon.extend(m.encode());
    }
    fn stream(&self) -> Box<dyn Stream> {
        Box::new(self.0.clone())
    }
    fn received(&self) -> Vec<Message> {
        let mut d = Decoder::new();
        d.feed(&std::mem::take(&mut self.0.pipe().from_daemon));
        let mut v = Vec::new();
        while let Ok(Some(m)) = d.next_message() {
            v.push(m);
        }
        v
    }
    fn set_room(&self, room: Option<usize>) {
        self.0.pipe().room = room;
    }
}

fn z(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn state(store: StoreConfig, now: Instant) -> State {
    let cfg = ServerConfig {
        socket: PathBuf::from("/nonexistent/socket"),
        store,
        trace_file: None,
        trace_control: Vec::new(),
        file_base: std::env::temp_dir(),
        watch_event_timeout: Some(Duration::from_secs(20)),
        xen: None,
    };
    State::new(cfg, Trace::open(None).expect("trace"), None, now)
}

#[test]
fn a_turn_handles_at_most_the_budget_and_others_go_between() {
    let t0 = Instant::now();
    let mut s = state(StoreConfig::default(), t0);
    let flood = Mem::default();
    let other = Mem::default();
    s.add_socket(flood.stream());
    s.add_socket(other.stream());
    for i in 0..100 {
        flood.send(MsgType::Read, i, &z("/local"));
    }
    other.send(MsgType::Read, 7, &z("/tool"));
    s.serve();
    assert_eq!(flood.received().len(), REQUESTS_PER_TURN);
    assert_eq!(other.received().len(), 1, "served in the same round");
    // The rest over the next rounds, a budget each.
    s.serve();
    assert_eq!(flood.received().len(), REQUESTS_PER_TURN);
    s.serve();
    s.serve();
    assert_eq!(flood.received().len(), 100 - 2 * REQUESTS_PER_TURN);
    assert!(!s.busy(), "nothing left to do");
}

#[test]
fn a_socket_without_room_is_polled_for_writability_until_drained() {
    let t0 = Instant::now();
    let mut s = state(StoreConfig::default(), t0);
    let c = Mem::default();
    let id = s.add_socket(c.stream());
    c.set_room(Some(10));
    c.send(MsgType::Read, 1, &z("/tool"));
    s.serve();
    assert_eq!(
        s.take_actions(),
        [Action::Interest {
            id,
            fd: 99,
            writable: true
        }]
    );
    c.set_room(None);
    s.flush(id);
    assert_eq!(
        s.take_actions(),
        [Action::Interest {
            id,
            fd: 99,
            writable: false
        }]
    );
    let got = c.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header.req_id, 1);
}

/// An unprivileged receiver's watch events that waited longer than the
/// watch-event timeout (20 s here) are dropped unless already started;
/// replies are never dropped. The clock is the test's.
#[test]
fn stale_events_for_an_unprivileged_receiver_are_dropped() {
    let t0 = Instant::now();
    // Sockets act as domain 0; domain 7 is privileged: sockets are not.
    let cfg = StoreConfig {
        priv_domid: 7,
        ..StoreConfig::default()
    };
    let mut s = state(cfg, t0);
    let c = Mem::default();
    let id = s.add_socket(c.stream());
    c.set_room(Some(0));
    c.send(MsgType::Watch, 1, b"/x\0tok\0");
    s.serve();
    assert!(c.received().is_empty(), "no room yet");
    // 19 s on: still there.
    s.set_now(t0 + Duration::from_secs(19));
    s.flush(id);
    // 21 s on, with room: the reply comes, the initial event is gone.
    s.set_now(t0 + Duration::from_secs(21));
    c.set_room(None);
    s.flush(id);
    let got = c.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].kind(), Some(MsgType::Watch));
    // A fresh event is delivered.
    c.send(MsgType::Watch, 2, b"/y\0tok\0");
    s.schedule(id); // the loop's readiness
    s.serve();
    let got = c.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].kind(), Some(MsgType::WatchEvent));
}

/// Under the default configuration sockets are privileged: their events
/// are never dropped for age.
#[test]
fn a_privileged_receiver_keeps_old_events() {
    let t0 = Instant::now();
    let mut s = state(StoreConfig::default(), t0);
    let c = Mem::default();
    let id = s.add_socket(c.stream());
    c.set_room(Some(0));
    c.send(MsgType::Watch, 1, b"/x\0tok\0");
    s.serve();
    s.set_now(t0 + Duration::from_secs(3600));
    c.set_room(None);
    s.flush(id);
    assert_eq!(c.received().len(), 2);
}

#[test]
fn a_closed_socket_is_handed_back_to_the_loop() {
    let t0 = Instant::now();
    let mut s = state(StoreConfig::default(), t0);
    let c = Mem::default();
    // A header announcing more than 4096 bytes closes the socket.
    let mut h = Message::new(MsgType::Read as u32, 1, 0, Vec::new()).encode();
    h[12..16].copy_from_slice(&5000u32.to_le_bytes());
    c.0.pipe().to_daemon.extend(h);
    s.add_socket(c.stream());
    s.serve();
    let closed = s.take_closed();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].fd(), Some(99));
    assert_eq!(s.store().connection_count(), 0);
}

/// A request that makes a lot of output (a write watched 100 times with
/// 3 KB tokens: 300 KB of events) ends its connection's turn: the next of
/// its requests waits for the next round.
#[test]
fn a_turn_ends_once_its_requests_made_enough_output() {
    let t0 = Instant::now();
    let mut s = state(StoreConfig::default(), t0);
    let watcher = Mem::default();
    let writer = Mem::default();
    s.add_socket(watcher.stream());
    let w = s.add_socket(writer.stream());
    let token = "t".repeat(3000);
    for i in 0..100 {
        watcher.send(
            MsgType::Watch,
            i,
            &[&b"/a\0"[..], format!("{i}{token}\0").as_bytes()].concat(),
        );
    }
    for _ in 0..4 {
        s.serve();
    }
    assert_eq!(
        watcher.received().len(),
        200,
        "100 replies, 100 initial events"
    );
    for i in 0..10 {
        writer.send(MsgType::Write, i, b"/a\0v");
    }
    s.schedule(w); // the loop's readiness
    s.serve();
    assert_eq!(writer.received().len(), 1, "one write per turn");
    assert_eq!(watcher.received().len(), 100);
    s.serve();
    assert_eq!(writer.received().len(), 1);
}

/// A live update's hand-over between two states, as between two binaries:
/// the sockets (here in memory, found again by descriptor), a request cut
/// in the middle, an event half written to a client with no room, watches
/// and the tree all come through; the clients see one unbroken
/// conversation.
#[test]
fn a_state_is_handed_over_whole_to_the_next_binary() {
    let t0 = Instant::now();
    let mut old = state(StoreConfig::default(), t0);
    let a = Mem::default();
    let b = Mem::default();
    a.0.pipe().fd = Some(50);
    b.0.pipe().fd = Some(51);
    let ida = old.add_socket(a.stream());
    let idb = old.add_socket(b.stream());
    a.send(MsgType::Write, 1, b"/lu/x\x001");
    a.send(MsgType::Watch, 2, &[z("/lu"), z("ta")].concat());
    b.send(MsgType::Watch, 3, &[z("/lu"), z("tb")].concat());
    old.serve();
    assert_eq!(a.received().len(), 3, "write, watch, initial event");
    assert_eq!(b.received().len(), 2, "watch, initial event");
    // B stops taking bytes in the middle of the next event.
    b.set_room(Some(5));
    a.send(MsgType::Write, 4, b"/lu/y\x002");
    old.schedule(ida);
    old.serve();
    let b_before = std::mem::take(&mut b.0.pipe().from_daemon);
    assert_eq!(b_before.len(), 5);
    a.received();
    // A request from A arrives cut in two.
    let read = Message::new(MsgType::Read as u32, 5, 0, z("/lu/x")).encode();
    a.0.pipe().to_daemon.extend(&read[..10]);
    old.schedule(ida);
    old.serve();
    let _ = idb;

    let bytes = old
        .live_update_stream(xenstore_migrate::Version::V2, 3, -1, None)
        .expect("stream");
    let mut new = state(StoreConfig::default(), t0);
    let streams = [(50, a.clone()), (51, b.clone())];
    let tree = rxenstored::live_update::read_tree(&bytes, &StoreConfig::default()).expect("tree");
    new.restore_live_update(&bytes, tree, &mut |fd| {
        streams
            .iter()
            .find(|(f, _)| *f == fd)
            .map(|(_, m)| m.stream())
            .ok_or_else(|| std::io::Error::other("unknown descriptor"))
    })
    .expect("restore");

    // B gets the rest of its event: whole, after the bytes it had.
    b.set_room(None);
    a.0.pipe().to_daemon.extend(&read[10..]);
    for id in new_ids(&new) {
        new.schedule(id);
    }
    new.serve();
    let mut d = Decoder::new();
    d.feed(&b_before);
    d.feed(&std::mem::take(&mut b.0.pipe().from_daemon));
    let ev = d.next_message().expect("frame").expect("the event, whole");
    assert_eq!(ev.payload, [z("/lu/y"), z("tb")].concat());
    // A's request, completed after the update, is answered.
    let r = a.received();
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].header.req_id, r[0].payload.as_slice()),
        (5, &b"1"[..])
    );
    // The watches work in the new state, and the tree is the same.
    a.send(MsgType::Write, 6, b"/lu/z\x003");
    for id in new_ids(&new) {
        new.schedule(id);
    }
    new.serve();
    assert!(a
        .received()
        .iter()
        .any(|m| m.kind() == Some(MsgType::WatchEvent)));
    assert!(b
        .received()
        .iter()
        .any(|m| m.kind() == Some(MsgType::WatchEvent)));
    let paths = |s: &State| {
        let mut v: Vec<String> = s
            .store()
            .db()
            .iter()
            .filter(|(p, _)| !p.starts_with("/lu/z"))
            .map(|(p, n)| format!("{p}={:?} {}", String::from_utf8_lossy(n.value()), n.perms()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(paths(&new), paths(&old));
}

/// The connection ids a state gives its sockets: from FIRST_CONN on.
fn new_ids(_s: &State) -> Vec<u64> {
    let first = rxenstored::state::FIRST_CONN;
    (first..first + 4).collect()
}
