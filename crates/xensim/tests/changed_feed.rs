//! Property test: under any storm of domain creations, shutdowns,
//! destructions (with and without mappings keeping zombies), domid reuse and
//! resumes, a consumer that drains `poll_changed_domain` after each event
//! knows exactly the domains that exist, with their current state and
//! unique id. Nothing is lost, nothing is invented.

use proptest::prelude::*;
use std::collections::BTreeMap;
use xensim::hypervisor::{state, VIRQ_DOM_EXC};
use xensim::{DomainInfo, Hypervisor, ShutdownReason};

#[derive(Debug, Clone)]
enum Ev {
    Create,
    CreateAt(u32),
    Shutdown(usize),
    Crash(usize),
    Resume(usize),
    Map(usize),
    Unmap(usize),
    Destroy(usize),
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        3 => Just(Ev::Create),
        1 => (1u32..6).prop_map(Ev::CreateAt),
        2 => any::<usize>().prop_map(Ev::Shutdown),
        1 => any::<usize>().prop_map(Ev::Crash),
        1 => any::<usize>().prop_map(Ev::Resume),
        2 => any::<usize>().prop_map(Ev::Map),
        2 => any::<usize>().prop_map(Ev::Unmap),
        3 => any::<usize>().prop_map(Ev::Destroy),
    ]
}

fn pick(h: &Hypervisor, i: usize) -> Option<u32> {
    let ids: Vec<u32> = h.domains().map(|d| d.domid).filter(|&d| d != 0).collect();
    (!ids.is_empty()).then(|| ids[i % ids.len()])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn drained_view_equals_truth(seed in any::<u64>(), pre in 0usize..5, evs in proptest::collection::vec(ev(), 1..120)) {
        let mut h = Hypervisor::new(seed);
        // Domains that exist before the consumer binds the VIRQ.
        for _ in 0..pre {
            h.create_domain(None, 0).expect("create");
        }
        let port = h.bind_virq(0, VIRQ_DOM_EXC).expect("bind");
        let mut view: BTreeMap<u32, DomainInfo> = BTreeMap::new();
        let mut mapped: Vec<u32> = Vec::new();
        let drain = |h: &mut Hypervisor, view: &mut BTreeMap<u32, DomainInfo>| {
            while let Ok((d, info)) = h.poll_changed_domain(0) {
                if info.state & state::EXIST == 0 {
                    view.remove(&d);
                } else {
                    view.insert(d, info);
                }
            }
        };
        drain(&mut h, &mut view);
        for e in evs {
            let _ = match e {
                Ev::Create => h.create_domain(None, 0).map(|_| ()),
                Ev::CreateAt(d) => h.create_domain(Some(d), 0).map(|_| ()),
                Ev::Shutdown(i) => pick(&h, i).map_or(Ok(()), |d| h.shutdown(d, ShutdownReason::Poweroff)),
                Ev::Crash(i) => pick(&h, i).map_or(Ok(()), |d| h.shutdown(d, ShutdownReason::Crash)),
                Ev::Resume(i) => pick(&h, i).map_or(Ok(()), |d| h.resume(d)),
                Ev::Map(i) => pick(&h, i).map_or(Ok(()), |d| h.take_ref(d).map(|_| mapped.push(d))),
                Ev::Unmap(i) => {
                    if !mapped.is_empty() {
                        let d = mapped.remove(i % mapped.len());
                        h.drop_ref(d);
                    }
                    Ok(())
                }
                Ev::Destroy(i) => pick(&h, i).map_or(Ok(()), |d| h.destroy(d)),
            };
            // Resume does not mark the domain changed (the toolstack tells
            // xenstored with RESUME), so refresh it the way xenstored would.
            if let Ev::Resume(i) = e {
                if let Some(d) = pick(&h, i) {
                    if let Ok(info) = h.get_domain_info(d) {
                        view.insert(d, info);
                    }
                }
            }
            while h.pending(0).is_some() {}
            h.unmask(0, port);
            drain(&mut h, &mut view);
            let truth: BTreeMap<u32, DomainInfo> = h
                .domains()
                .map(|d| (d.domid, h.clone_info(d.domid)))
                .collect();
            prop_assert_eq!(&view, &truth);
            // The incremental shutdown|dying bitmap matches the domains.
            let mut bits = [0u64; xensim::hypervisor::DYING_BITMAP_WORDS];
            for d in h.domains().filter(|d| d.life != xensim::Life::Running) {
                bits[d.domid as usize / 64] |= 1u64 << (d.domid % 64);
            }
            prop_assert_eq!(h.dying_bits(), bits);
        }
    }
}
