//! Memory accounting against a hostile guest, at the engine level: what a
//! guest makes the store hold must be charged to its memory quota, and
//! refused once the quota is reached.

use xenstore_proto::{Message, MsgType};
use xenstore_store::quota::Quota;
use xenstore_store::{ConnId, ConnKind, DomainOracle, Store, StoreConfig};

/// Domains 1..=100 exist in the pretend hypervisor.
struct Hyp;
impl DomainOracle for Hyp {
    fn exists(&self, domid: u32) -> bool {
        (1..=100).contains(&domid)
    }
}

const DOM0: ConnId = ConnId(1);

fn z(parts: &[&str]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.bytes().chain([0])).collect()
}

fn w(path: &str, value: &[u8]) -> Vec<u8> {
    let mut p = z(&[path]);
    p.extend_from_slice(value);
    p
}

struct T {
    s: Store,
    next: u64,
}

impl T {
    fn new() -> T {
        let mut s = Store::new(StoreConfig::default());
        s.connect(DOM0, ConnKind::Socket);
        T { s, next: 100 }
    }

    /// Introduces a guest and gives it a home it owns, as libxl does.
    fn guest(&mut self, domid: u32) -> ConnId {
        let c = ConnId(self.next);
        self.next += 1;
        self.s.connect(c, ConnKind::Domain(domid));
        self.s.introduce_domain(domid, c);
        let home = format!("/local/domain/{domid}");
        self.ok(DOM0, MsgType::Mkdir, &z(&[&home]));
        self.ok(DOM0, MsgType::SetPerms, &z(&[&home, &format!("n{domid}")]));
        c
    }

    fn req_tx(&mut self, c: ConnId, t: MsgType, tx: u32, p: &[u8]) -> Result<Vec<u8>, String> {
        let out = self
            .s
            .handle(c, &Message::new(t as u32, 7, tx, p.to_vec()), &Hyp)
            .out;
        let (_, m) = out
            .into_iter()
            .find(|(to, m)| *to == c && m.kind() != Some(MsgType::WatchEvent))
            .expect("a reply");
        if m.kind() == Some(MsgType::Error) {
            Err(String::from_utf8_lossy(&m.payload[..m.payload.len() - 1]).into_owned())
        } else {
            Ok(m.payload)
        }
    }

    fn req(&mut self, c: ConnId, t: MsgType, p: &[u8]) -> Result<Vec<u8>, String> {
        self.req_tx(c, t, 0, p)
    }

    fn ok(&mut self, c: ConnId, t: MsgType, p: &[u8]) -> Vec<u8> {
        self.req(c, t, p)
            .unwrap_or_else(|e| panic!("{t:?} {:?}: {e}", String::from_utf8_lossy(p)))
    }

    fn usage(&self, domid: u32, q: Quota) -> u64 {
        self.s.domain(domid).map_or(0, |d| d.usage.get(q))
    }
}

/// Finding 6: 995 nested nodes cost megabytes of paths but were charged a
/// few dozen bytes each. Every node's path is now charged, so a deep
/// chain of nodes is refused by the memory quota (EIO, as for any node
/// write over it) long before the node quota, and what is charged covers
/// the paths held.
#[test]
fn nested_nodes_are_charged_their_paths() {
    let mut t = T::new();
    let g = t.guest(5);
    let quota = 600_000u64;
    t.ok(
        DOM0,
        MsgType::SetQuota,
        &z(&["5", "memory", &quota.to_string()]),
    );
    let mut path = String::from("/local/domain/5");
    let mut paths_held = path.len() as u64;
    let mut refused = None;
    for i in 0..1200 {
        path.push_str("/x");
        match t.req(g, MsgType::Mkdir, &z(&[&path])) {
            Ok(_) => paths_held += path.len() as u64,
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (i, e) = refused.expect("a write was refused");
    assert_eq!(
        e, "EIO",
        "refused at depth {i} by {e}, not by the memory quota"
    );
    assert!(i < 900, "refused only at depth {i}");
    let mem = t.usage(5, Quota::Memory);
    assert!(mem <= quota, "charged {mem} over the quota {quota}");
    assert!(
        mem >= paths_held,
        "charged {mem} for {paths_held} bytes of paths"
    );
    assert_eq!(t.s.recount(), 0);
}

/// A node's charge is its record plus its full path.
#[test]
fn node_charge_is_record_plus_path() {
    let mut t = T::new();
    let g = t.guest(5);
    let before = t.usage(5, Quota::Memory);
    t.ok(g, MsgType::Write, &w("abc", b"12345"));
    // The new node: 16 header + 8 per permission + 5 value + the path
    // "/local/domain/5/abc"; its parent, also owned by 5, lists "abc\0".
    let path = "/local/domain/5/abc";
    assert_eq!(
        t.usage(5, Quota::Memory) - before,
        (16 + 8 + 5 + path.len() + 4) as u64
    );
    assert_eq!(t.s.recount(), 0);
}
