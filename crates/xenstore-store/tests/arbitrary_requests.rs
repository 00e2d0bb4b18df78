//! Property test: arbitrary messages from a privileged and an unprivileged
//! connection never panic the engine, and each request gets exactly one
//! reply carrying its req_id.

use proptest::prelude::*;
use xenstore_proto::{Message, MsgType, XsError};
use xenstore_store::{ConnId, ConnKind, DomainOracle, Store, StoreConfig};

struct Small;
impl DomainOracle for Small {
    fn exists(&self, domid: u32) -> bool {
        domid < 8
    }
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    let part = prop_oneof![
        Just(b"/a".to_vec()),
        Just(b"/a/b".to_vec()),
        Just(b"rel/x".to_vec()),
        Just(b"@releaseDomain".to_vec()),
        Just(b"/local/domain/5/d".to_vec()),
        Just(b"T".to_vec()),
        Just(b"5".to_vec()),
        Just(b"1".to_vec()),
        Just(b"r5".to_vec()),
        Just(b"n0".to_vec()),
        Just(b"nodes".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..12),
    ];
    proptest::collection::vec(part, 0..4).prop_map(|parts| {
        let mut v = Vec::new();
        for p in parts {
            v.extend(p);
            v.push(0);
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn one_reply_per_request(reqs in proptest::collection::vec((0u32..30, 0u32..4, any::<bool>(), payload()), 1..60)) {
        let mut store = Store::new(StoreConfig::default());
        store.connect(ConnId(1), ConnKind::Socket);
        store.connect(ConnId(2), ConnKind::Domain(5));
        store.introduce_domain(5, ConnId(2));
        for (i, (t, tx, privileged, p)) in reqs.into_iter().enumerate() {
            let conn = if privileged { ConnId(1) } else { ConnId(2) };
            let m = Message::new(t, i as u32, tx, p);
            let out = store.handle(conn, &m, &Small);
            let replies: Vec<_> = out.out.iter()
                .filter(|(c, r)| *c == conn && r.kind() != Some(MsgType::WatchEvent))
                .collect();
            prop_assert_eq!(replies.len(), 1);
            let r = &replies[0].1;
            prop_assert_eq!(r.header.req_id, i as u32);
            if r.kind() == Some(MsgType::Error) {
                let name = r.payload.strip_suffix(b"\0").unwrap_or(&r.payload);
                prop_assert!(XsError::from_name(name).is_some());
            } else {
                prop_assert_eq!(r.header.msg_type, t);
            }
        }
        // Accounting and the reverse indexes stay consistent with the tree.
        prop_assert_eq!(store.recount(), 0);
        prop_assert!(store.db().indexes_consistent());
        // Removing the guest leaves nothing it owned or was named in.
        store.remove_domain(5);
        prop_assert_eq!(store.db().owned_by(5).count(), 0);
        prop_assert_eq!(store.db().named_by_acl(5).count(), 0);
        prop_assert!(store.db().indexes_consistent());
    }
}
