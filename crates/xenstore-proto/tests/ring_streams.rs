//! Property tests of the ring: any interleaving of guest and server
//! operations moves both byte streams intact, and any index values written
//! by a hostile peer are either served or refused, never a panic or an
//! out-of-ring access.

use proptest::prelude::*;
use xenstore_proto::ring::{self, LocalPage, RingPage};

#[derive(Debug, Clone)]
enum Step {
    GuestWrite(usize),
    ServerRead(usize),
    ServerWrite(usize),
    GuestRead(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..1500).prop_map(Step::GuestWrite),
        (0usize..1500).prop_map(Step::ServerRead),
        (0usize..1500).prop_map(Step::ServerWrite),
        (0usize..1500).prop_map(Step::GuestRead),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn streams_arrive_intact(start in any::<u32>(), steps in proptest::collection::vec(step(), 1..80)) {
        let p = LocalPage::new();
        for off in [ring::REQ_CONS, ring::REQ_PROD, ring::RSP_CONS, ring::RSP_PROD] {
            p.store_u32(off, start);
        }
        let (mut req_sent, mut req_got, mut rsp_sent, mut rsp_got) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut counter = 0u8;
        let mut data = |n: usize| -> Vec<u8> { (0..n).map(|_| { counter = counter.wrapping_add(1); counter }).collect() };
        for s in steps {
            match s {
                Step::GuestWrite(n) => {
                    let d = data(n);
                    let w = ring::guest_write(&p, &d).unwrap();
                    req_sent.extend_from_slice(&d[..w]);
                }
                Step::ServerRead(n) => {
                    let mut b = vec![0; n];
                    let r = ring::server_read(&p, &mut b).unwrap();
                    req_got.extend_from_slice(&b[..r]);
                }
                Step::ServerWrite(n) => {
                    let d = data(n);
                    let w = ring::server_write(&p, &d).unwrap();
                    rsp_sent.extend_from_slice(&d[..w]);
                }
                Step::GuestRead(n) => {
                    let mut b = vec![0; n];
                    let r = ring::guest_read(&p, &mut b).unwrap();
                    rsp_got.extend_from_slice(&b[..r]);
                }
            }
        }
        prop_assert!(req_sent.starts_with(&req_got));
        prop_assert!(rsp_sent.starts_with(&rsp_got));
        prop_assert!(req_sent.len() - req_got.len() <= 1024);
        prop_assert!(rsp_sent.len() - rsp_got.len() <= 1024);
    }

    #[test]
    fn hostile_indices(idx in any::<[u32; 4]>(), n in 0usize..5000) {
        let p = LocalPage::new();
        for (off, v) in [ring::REQ_CONS, ring::REQ_PROD, ring::RSP_CONS, ring::RSP_PROD].into_iter().zip(idx) {
            p.store_u32(off, v);
        }
        let mut b = vec![0; n];
        let ok_read = idx[1].wrapping_sub(idx[0]) <= 1024;
        match ring::server_read(&p, &mut b) {
            Ok(r) => { prop_assert!(ok_read); prop_assert!(r <= 1024); }
            Err(_) => prop_assert!(!ok_read),
        }
        let ok_write = idx[3].wrapping_sub(idx[2]) <= 1024;
        match ring::server_write(&p, &b) {
            Ok(w) => { prop_assert!(ok_write); prop_assert!(w <= 1024); }
            Err(_) => prop_assert!(!ok_write),
        }
    }
}
