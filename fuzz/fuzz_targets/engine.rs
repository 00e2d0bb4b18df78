//! Drives the store engine with arbitrary messages from a privileged
//! socket connection and an unprivileged guest connection: nothing may
//! panic, and every request gets exactly one reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstore_proto::{Decoder, MsgType};
use xenstore_store::{ConnId, ConnKind, DomainOracle, Store, StoreConfig};

struct Some5;
impl DomainOracle for Some5 {
    fn exists(&self, domid: u32) -> bool {
        domid < 8
    }
}

fuzz_target!(|data: &[u8]| {
    let mut store = Store::new(StoreConfig::default());
    store.connect(ConnId(1), ConnKind::Socket);
    store.connect(ConnId(2), ConnKind::Domain(5));
    store.introduce_domain(5, ConnId(2));
    let mut d = Decoder::new();
    d.feed(data);
    let mut n = 0u64;
    while let Ok(Some(m)) = d.next_message() {
        n += 1;
        let conn = if n % 2 == 0 { ConnId(1) } else { ConnId(2) };
        let out = store.handle(conn, &m, &Some5);
        let replies = out
            .out
            .iter()
            .filter(|(c, r)| *c == conn && r.kind() != Some(MsgType::WatchEvent))
            .count();
        assert_eq!(replies, 1, "replies to {:?}", m.header);
    }
});
