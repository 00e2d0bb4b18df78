//! Engine costs that the design says must not grow with the size of the
//! store or the number of watches. Compare the rows of one run: each
//! benchmark is parameterised by that size.

use xenstore_proto::{Message, MsgType};
use xenstore_store::{ConnId, ConnKind, NoHypervisor, Store, StoreConfig};

fn main() {
    divan::main();
}

const SIZES: &[usize] = &[1_000, 100_000];

fn msg(t: MsgType, tx: u32, payload: &[u8]) -> Message {
    Message::new(t as u32, 1, tx, payload.to_vec())
}

fn store_with(nodes: usize, watches: usize) -> Store {
    let mut s = Store::new(StoreConfig::default());
    s.connect(ConnId(1), ConnKind::Socket);
    for i in 0..nodes {
        let p = format!("/fill/d{}/n{}\0v", i / 100, i % 100);
        s.handle(
            ConnId(1),
            &msg(MsgType::Write, 0, p.as_bytes()),
            &NoHypervisor,
        );
    }
    s.connect(ConnId(2), ConnKind::Socket);
    for i in 0..watches {
        let p = format!("/watched/w{i}\0tok\0");
        s.handle(
            ConnId(2),
            &msg(MsgType::Watch, 0, p.as_bytes()),
            &NoHypervisor,
        );
    }
    s
}

/// One WRITE outside a transaction and the READ of it.
#[divan::bench(args = SIZES)]
fn write_read(b: divan::Bencher, nodes: usize) {
    let mut s = store_with(nodes, 0);
    b.bench_local(|| {
        s.handle(
            ConnId(1),
            &msg(MsgType::Write, 0, b"/bench/key\0value"),
            &NoHypervisor,
        );
        s.handle(
            ConnId(1),
            &msg(MsgType::Read, 0, b"/bench/key\0"),
            &NoHypervisor,
        )
    });
}

/// TRANSACTION_START, one READ, one WRITE, commit: must not depend on the
/// store size (nothing is copied at start).
#[divan::bench(args = SIZES)]
fn transaction(b: divan::Bencher, nodes: usize) {
    let mut s = store_with(nodes, 0);
    b.bench_local(|| {
        let r = s.handle(
            ConnId(1),
            &msg(MsgType::TransactionStart, 0, b"\0"),
            &NoHypervisor,
        );
        let id: u32 = std::str::from_utf8(&r.out[0].1.payload[..r.out[0].1.payload.len() - 1])
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        s.handle(
            ConnId(1),
            &msg(MsgType::Read, id, b"/fill/d0/n0\0"),
            &NoHypervisor,
        );
        s.handle(
            ConnId(1),
            &msg(MsgType::Write, id, b"/bench/tx\0v"),
            &NoHypervisor,
        );
        s.handle(
            ConnId(1),
            &msg(MsgType::TransactionEnd, id, b"T\0"),
            &NoHypervisor,
        )
    });
}

/// A WRITE while many watches exist elsewhere: matching must cost the path
/// depth, not the number of watches.
#[divan::bench(args = [10, 10_000])]
fn write_with_watches(b: divan::Bencher, watches: usize) {
    let mut s = store_with(0, watches);
    b.bench_local(|| {
        s.handle(
            ConnId(1),
            &msg(MsgType::Write, 0, b"/elsewhere/a/b\0v"),
            &NoHypervisor,
        )
    });
}

/// The full listing of a directory of N children through DIRECTORY_PART,
/// as libxenstore reads one too long for DIRECTORY: every part from offset
/// 0 on (27 parts at 10,000 children).
#[divan::bench(args = [1_000, 10_000])]
fn directory_part_listing(b: divan::Bencher, children: usize) {
    let mut s = Store::new(StoreConfig::default());
    s.connect(ConnId(1), ConnKind::Socket);
    for i in 0..children {
        let p = format!("/list/child-{i:05}\0");
        s.handle(
            ConnId(1),
            &msg(MsgType::Mkdir, 0, p.as_bytes()),
            &NoHypervisor,
        );
    }
    b.bench_local(|| {
        let mut off = 0usize;
        loop {
            let p = format!("/list\0{off}\0");
            let out = s.handle(
                ConnId(1),
                &msg(MsgType::DirectoryPart, 0, p.as_bytes()),
                &NoHypervisor,
            );
            let reply = &out.out[0].1.payload;
            let gen = reply.iter().position(|&b| b == 0).unwrap_or(0);
            let chunk = &reply[gen + 1..];
            if chunk == [0] || chunk.ends_with(&[0, 0]) {
                break;
            }
            off += chunk.len();
        }
    });
}
