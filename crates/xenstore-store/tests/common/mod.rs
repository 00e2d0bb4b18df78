//! The engine-level test harness shared by the store's integration tests:
//! a store with dom0 on a socket, guests introduced on demand, requests
//! answered as `Ok(payload)` or `Err(error name)`.
#![allow(dead_code)]

use xenstore_proto::{Message, MsgType};
use xenstore_store::{ConnId, ConnKind, DomainOracle, Store, StoreConfig};

/// Domains 1..=100 exist in the pretend hypervisor.
pub struct Hyp;
impl DomainOracle for Hyp {
    fn exists(&self, domid: u32) -> bool {
        (1..=100).contains(&domid)
    }
}

/// dom0's socket connection.
pub const DOM0: ConnId = ConnId(1);

/// NUL-terminated parts, one after the other.
pub fn z(parts: &[&str]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.bytes().chain([0])).collect()
}

/// A store with dom0 connected.
pub struct T {
    pub s: Store,
    pub next: u64,
}

impl T {
    pub fn new() -> T {
        T::with(StoreConfig::default())
    }

    pub fn with(cfg: StoreConfig) -> T {
        let mut s = Store::new(cfg);
        s.connect(DOM0, ConnKind::Socket);
        T { s, next: 100 }
    }

    /// Introduces a guest (no home node).
    pub fn introduce(&mut self, domid: u32) -> ConnId {
        let c = ConnId(self.next);
        self.next += 1;
        self.s.connect(c, ConnKind::Domain(domid));
        self.s.introduce_domain(domid, c);
        c
    }

    /// Introduces a guest and gives it a home it owns, as libxl does.
    pub fn guest(&mut self, domid: u32) -> ConnId {
        let c = self.introduce(domid);
        let home = format!("/local/domain/{domid}");
        self.ok(DOM0, MsgType::Mkdir, &z(&[&home]));
        self.ok(DOM0, MsgType::SetPerms, &z(&[&home, &format!("n{domid}")]));
        c
    }

    /// All messages for all connections.
    pub fn send_all(&mut self, c: ConnId, t: MsgType, tx: u32, p: &[u8]) -> Vec<(ConnId, Message)> {
        self.s
            .handle(c, &Message::new(t as u32, 7, tx, p.to_vec()), &Hyp)
            .out
    }

    /// The reply to `c`: Ok(payload) or Err(error name).
    pub fn req_tx(&mut self, c: ConnId, t: MsgType, tx: u32, p: &[u8]) -> Result<Vec<u8>, String> {
        let out = self.send_all(c, t, tx, p);
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

    pub fn req(&mut self, c: ConnId, t: MsgType, p: &[u8]) -> Result<Vec<u8>, String> {
        self.req_tx(c, t, 0, p)
    }

    pub fn ok(&mut self, c: ConnId, t: MsgType, p: &[u8]) -> Vec<u8> {
        self.req(c, t, p)
            .unwrap_or_else(|e| panic!("{t:?} {:?}: {e}", String::from_utf8_lossy(p)))
    }
}
