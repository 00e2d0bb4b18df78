//! The engine against a reference model: a plain ordered map of paths to
//! values with child lists in creation order.
//!
//! Outside transactions every reply must equal the model's. For
//! transactions the model checks what conflict detection is for:
//! a transaction that commits behaves as if all its operations ran at
//! commit time (replaying them on the model gives the same replies the
//! client saw), a transaction refused with EAGAIN changes nothing, and one
//! that nobody interfered with always commits.

use proptest::prelude::*;
use std::collections::BTreeMap;
use xenstore_proto::{Message, MsgType};
use xenstore_store::{ConnId, ConnKind, NoHypervisor, Store, StoreConfig};

#[derive(Debug, Clone, Default)]
struct Model {
    nodes: BTreeMap<String, (Vec<u8>, Vec<String>)>,
}

type Reply = Result<Vec<u8>, String>;

fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) => "/",
        Some(i) => &p[..i],
        None => "/",
    }
}

fn name(p: &str) -> &str {
    &p[p.rfind('/').map_or(0, |i| i + 1)..]
}

impl Model {
    fn new() -> Model {
        let mut m = Model::default();
        m.nodes
            .insert("/".into(), (vec![], vec!["local".into(), "tool".into()]));
        m.nodes
            .insert("/local".into(), (vec![], vec!["domain".into()]));
        m.nodes.insert("/local/domain".into(), (vec![], vec![]));
        m.nodes
            .insert("/tool".into(), (vec![], vec!["xenstored".into()]));
        m.nodes.insert("/tool/xenstored".into(), (vec![], vec![]));
        m
    }

    fn create(&mut self, p: &str) {
        if self.nodes.contains_key(p) {
            return;
        }
        let par = parent(p).to_owned();
        self.create(&par);
        if let Some(n) = self.nodes.get_mut(&par) {
            n.1.push(name(p).to_owned());
        }
        self.nodes.insert(p.to_owned(), (vec![], vec![]));
    }

    fn apply(&mut self, op: &Op) -> Reply {
        match op {
            Op::Write(p, v) => {
                self.create(p);
                if let Some(n) = self.nodes.get_mut(p) {
                    n.0 = v.clone();
                }
                Ok(b"OK\0".to_vec())
            }
            Op::Mkdir(p) => {
                self.create(p);
                Ok(b"OK\0".to_vec())
            }
            Op::Rm(p) => {
                if !self.nodes.contains_key(p) {
                    return if self.nodes.contains_key(parent(p)) {
                        Ok(b"OK\0".to_vec())
                    } else {
                        Err("ENOENT".into())
                    };
                }
                let doomed: Vec<String> = self
                    .nodes
                    .keys()
                    .filter(|k| *k == p || k.starts_with(&format!("{p}/")))
                    .cloned()
                    .collect();
                for k in doomed {
                    self.nodes.remove(&k);
                }
                if let Some(n) = self.nodes.get_mut(parent(p)) {
                    n.1.retain(|c| c != name(p));
                }
                Ok(b"OK\0".to_vec())
            }
            Op::Read(p) => self
                .nodes
                .get(p)
                .map(|n| n.0.clone())
                .ok_or_else(|| "ENOENT".into()),
            Op::Directory(p) => self
                .nodes
                .get(p)
                .map(|n| n.1.iter().flat_map(|c| c.bytes().chain([0])).collect())
                .ok_or_else(|| "ENOENT".into()),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write(String, Vec<u8>),
    Mkdir(String),
    Rm(String),
    Read(String),
    Directory(String),
}

impl Op {
    fn message(&self, tx: u32) -> Message {
        let z = |p: &str| {
            let mut v = p.as_bytes().to_vec();
            v.push(0);
            v
        };
        let (t, payload) = match self {
            Op::Write(p, v) => {
                let mut b = z(p);
                b.extend_from_slice(v);
                (MsgType::Write, b)
            }
            Op::Mkdir(p) => (MsgType::Mkdir, z(p)),
            Op::Rm(p) => (MsgType::Rm, z(p)),
            Op::Read(p) => (MsgType::Read, z(p)),
            Op::Directory(p) => (MsgType::Directory, z(p)),
        };
        Message::new(t as u32, 1, tx, payload)
    }

    fn writes(&self) -> bool {
        matches!(self, Op::Write(..) | Op::Mkdir(_) | Op::Rm(_))
    }
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..4)
        .prop_map(|parts| format!("/m/{}", parts.join("/")))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (path(), proptest::collection::vec(any::<u8>(), 0..4)).prop_map(|(p, v)| Op::Write(p, v)),
        1 => path().prop_map(Op::Mkdir),
        2 => path().prop_map(Op::Rm),
        3 => path().prop_map(Op::Read),
        2 => prop_oneof![path(), Just("/m".to_owned())].prop_map(Op::Directory),
    ]
}

fn reply(store: &mut Store, c: ConnId, m: &Message) -> Reply {
    let out = store.handle(c, m, &NoHypervisor);
    let (_, r) = out
        .out
        .into_iter()
        .find(|(to, r)| *to == c && r.kind() != Some(MsgType::WatchEvent))
        .expect("one reply");
    if r.kind() == Some(MsgType::Error) {
        Err(String::from_utf8_lossy(&r.payload[..r.payload.len() - 1]).into_owned())
    } else {
        Ok(r.payload)
    }
}

fn fresh() -> (Store, Model) {
    let mut s = Store::new(StoreConfig::default());
    s.connect(ConnId(1), ConnKind::Socket);
    s.connect(ConnId(2), ConnKind::Socket);
    let mut m = Model::new();
    let mk = Op::Mkdir("/m".into());
    assert_eq!(reply(&mut s, ConnId(1), &mk.message(0)), m.apply(&mk));
    (s, m)
}

/// One step of the interleaved test.
#[derive(Debug, Clone)]
enum Step {
    /// A plain request from connection 1 or 2.
    Plain(u8, Op),
    /// Connection 1 or 2 starts a transaction (if it has none).
    Start(u8),
    /// An operation inside the connection's transaction (plain if none).
    InTx(u8, Op),
    /// Commit (true) or abort the connection's transaction.
    End(u8, bool),
}

fn step() -> impl Strategy<Value = Step> {
    let who = 1u8..3;
    prop_oneof![
        2 => (who.clone(), op()).prop_map(|(w, o)| Step::Plain(w, o)),
        1 => who.clone().prop_map(Step::Start),
        4 => (who.clone(), op()).prop_map(|(w, o)| Step::InTx(w, o)),
        1 => (who, any::<bool>()).prop_map(|(w, c)| Step::End(w, c)),
    ]
}

struct Tx {
    id: u32,
    ops: Vec<(Op, Reply)>,
    /// Committed changes by anyone since this transaction started.
    interfered: bool,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn plain_requests_match_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let (mut s, mut m) = fresh();
        for o in &ops {
            let got = reply(&mut s, ConnId(1), &o.message(0));
            let want = m.apply(o);
            prop_assert_eq!(got, want, "{:?}", o);
        }
        prop_assert_eq!(s.recount(), 0);
    }

    #[test]
    fn transactions_are_serializable(steps in proptest::collection::vec(step(), 1..80)) {
        let (mut s, mut m) = fresh();
        let mut txs: [Option<Tx>; 3] = [None, None, None];
        for st in steps {
            match st {
                Step::Plain(w, o) => {
                    let got = reply(&mut s, ConnId(u64::from(w)), &o.message(0));
                    let want = m.apply(&o);
                    prop_assert_eq!(&got, &want, "{:?}", o);
                    if o.writes() && got.is_ok() {
                        for t in txs.iter_mut().flatten() { t.interfered = true; }
                    }
                }
                Step::Start(w) => {
                    if txs[w as usize].is_none() {
                        let r = reply(&mut s, ConnId(u64::from(w)), &Message::new(MsgType::TransactionStart as u32, 1, 0, b"\0".to_vec()));
                        let id: u32 = String::from_utf8(r.expect("start")).expect("utf8").trim_end_matches('\0').parse().expect("id");
                        txs[w as usize] = Some(Tx { id, ops: Vec::new(), interfered: false });
                    }
                }
                Step::InTx(w, o) => {
                    let c = ConnId(u64::from(w));
                    match txs[w as usize].as_mut() {
                        Some(t) => {
                            let got = reply(&mut s, c, &o.message(t.id));
                            t.ops.push((o, got));
                        }
                        None => {
                            let got = reply(&mut s, c, &o.message(0));
                            let want = m.apply(&o);
                            prop_assert_eq!(&got, &want, "{:?}", o);
                            if o.writes() && got.is_ok() {
                                for t in txs.iter_mut().flatten() { t.interfered = true; }
                            }
                        }
                    }
                }
                Step::End(w, commit) => {
                    let Some(t) = txs[w as usize].take() else { continue };
                    let payload = if commit { b"T\0".to_vec() } else { b"F\0".to_vec() };
                    let r = reply(&mut s, ConnId(u64::from(w)), &Message::new(MsgType::TransactionEnd as u32, 1, t.id, payload));
                    if !commit {
                        prop_assert_eq!(r, Ok(b"OK\0".to_vec()));
                        continue;
                    }
                    match r {
                        Ok(_) => {
                            // Replaying at commit time gives what the client saw.
                            let mut replay = m.clone();
                            for (o, seen) in &t.ops {
                                let again = replay.apply(o);
                                prop_assert_eq!(&again, seen, "replay of {:?} differs", o);
                            }
                            m = replay;
                            if t.ops.iter().any(|(o, r)| o.writes() && r.is_ok()) {
                                for other in txs.iter_mut().flatten() { other.interfered = true; }
                            }
                        }
                        Err(e) => {
                            prop_assert_eq!(&e, "EAGAIN");
                            prop_assert!(t.interfered, "EAGAIN without any concurrent change");
                        }
                    }
                }
            }
            // The committed store always equals the model.
            for (p, (v, kids)) in &m.nodes {
                if !p.starts_with("/m") { continue; }
                let got = reply(&mut s, ConnId(1), &Op::Read(p.clone()).message(0));
                prop_assert_eq!(got, Ok(v.clone()), "value of {}", p);
                let dir = reply(&mut s, ConnId(1), &Op::Directory(p.clone()).message(0));
                let want: Vec<u8> = kids.iter().flat_map(|c| c.bytes().chain([0])).collect();
                prop_assert_eq!(dir, Ok(want), "children of {}", p);
            }
        }
    }
}
