//! The store's share of a live update's pause: dumping the tree as the
//! migration stream's NODE records (written into memory) and restoring a
//! store from them. Compare the rows of one run.

use xenstore_migrate as mig;
use xenstore_proto::{Message, MsgType};
use xenstore_store::migrate::RestoredTree;
use xenstore_store::{ConnId, ConnKind, NoHypervisor, Store, StoreConfig};

fn main() {
    divan::main();
}

const SIZES: &[usize] = &[10_000, 100_000];

/// The shape of `xsbench-liveupdate`: 8-byte values, 500 children per
/// directory.
fn store_with(nodes: usize) -> Store {
    let mut s = Store::new(StoreConfig::default());
    s.connect(ConnId(1), ConnKind::Socket);
    for i in 0..nodes {
        let p = format!("/lu/d{}/n{}\0vvvvvvvv", i / 500, i % 500);
        s.handle(
            ConnId(1),
            &Message::new(MsgType::Write as u32, 1, 0, p.into_bytes()),
            &NoHypervisor,
        );
    }
    s
}

fn header() -> mig::StreamHeader {
    mig::StreamHeader {
        version: mig::Version::V1,
        endian: mig::Endian::Little,
    }
}

fn dump(s: &Store) -> Vec<u8> {
    let mut w = mig::Writer::new(Vec::new(), header()).expect("header");
    s.write_node_records(&mut w, |d| d).expect("nodes");
    w.finish().expect("end")
}

/// The old process's part: every node as a record, written.
#[divan::bench(args = SIZES)]
fn dump_nodes(b: divan::Bencher, nodes: usize) {
    let s = store_with(nodes);
    b.bench_local(|| dump(&s).len());
}

/// The new process's part: the stream read and the tree restored.
#[divan::bench(args = SIZES)]
fn restore_nodes(b: divan::Bencher, nodes: usize) {
    let bytes = dump(&store_with(nodes));
    b.bench_local(|| {
        let mut s = Store::new(StoreConfig::default());
        let mut r = mig::Reader::new(&bytes).expect("header");
        let nodes = std::iter::from_fn(|| match r.next_item().expect("read") {
            Some(mig::Item::Node(n)) => Some((n.path, n.value, n.perms.iter())),
            _ => None,
        });
        let expected = mig::count_records(&bytes, mig::RecordType::Node);
        let tree = RestoredTree::build(s.config(), expected, nodes).expect("restore");
        s.install_tree(tree);
        s
    });
}
