//! How the daemon learns which domain died, by strategy (issue 4): under a
//! scripted storm of shutdowns, crashes, destroys and domid reuse, every
//! strategy fires exactly the right `@releaseDomain` events and cleans up
//! exactly the right domains; and what each costs in hypervisor calls.

mod common;
use common::{z, zs, Host};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use xensim::{ShutdownReason, Toolstack};
use xenstore_proto::MsgType;

const STRATEGIES: [&str; 6] = [
    "poll",
    "getdomaininfolist",
    "legacy",
    "bitmap",
    "mapped",
    "channel",
];

/// Per-domain `@releaseDomain/<id>` events seen until quiet.
fn collect(w: &mut common::Client, quiet: Duration) -> BTreeMap<u32, usize> {
    let mut seen = BTreeMap::new();
    while let Some((p, _)) = w.next_event(quiet.as_millis() as u64) {
        if let Some(d) = p
            .strip_prefix("@releaseDomain/")
            .and_then(|d| d.parse().ok())
        {
            *seen.entry(d).or_insert(0) += 1;
        }
    }
    seen
}

fn introduced(c: &mut common::Client, d: u32) -> bool {
    c.req(MsgType::IsDomainIntroduced, &z(&d.to_string())).ok() == b"T\0"
}

#[test]
fn every_strategy_survives_the_storm() {
    for strategy in STRATEGIES {
        let h = Host::start_with(&["--domain-state", strategy], |_| {});
        let mut w = h.daemon.client();
        w.req(MsgType::Watch, &zs(&["@releaseDomain", "dom", "1"]))
            .ok();
        w.next_event(2000);
        let mut c = h.daemon.client();
        let mut ts = Toolstack::new(&h.sim.socket(), &h.daemon.socket).expect("toolstack");
        let doms: Vec<u32> = (0..20)
            .map(|i| ts.create_headless(&format!("s{i}")).expect("create"))
            .collect();

        // Storm: 5 shut down, 3 crash, 6 destroyed, 2 destroyed and their
        // domids reused at once.
        for &d in &doms[0..5] {
            ts.shutdown(d, ShutdownReason::Poweroff).expect("shutdown");
        }
        for &d in &doms[5..8] {
            ts.shutdown(d, ShutdownReason::Crash).expect("crash");
        }
        for &d in &doms[8..14] {
            ts.destroy(d).expect("destroy");
        }
        let seen = collect(&mut w, Duration::from_millis(500));
        for &d in &doms[0..14] {
            assert_eq!(seen.get(&d), Some(&1), "{strategy}: domain {d}: {seen:?}");
        }
        for &d in &doms[14..] {
            assert_eq!(seen.get(&d), None, "{strategy}: living domain {d} reported");
        }
        // A second storm on already shut-down domains fires nothing new.
        ts.destroy(doms[14]).expect("destroy");
        let seen = collect(&mut w, Duration::from_millis(500));
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            [doms[14]],
            "{strategy}"
        );

        // Domid reuse: the old domain is released, the new one is served.
        let reuse = doms[15];
        ts.destroy(reuse).expect("destroy");
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.sim.with(|hv| hv.domain(reuse).is_some()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        h.sim.create_domain(Some(reuse), 0).expect("same domid");
        assert_eq!(
            collect(&mut w, Duration::from_millis(300)).get(&reuse),
            Some(&1),
            "{strategy}"
        );
        assert!(
            !introduced(&mut c, reuse),
            "{strategy}: the old domain was released"
        );

        // Who is left: shut-down domains stay introduced (until the
        // toolstack destroys or releases them); destroyed ones are gone
        // with their nodes.
        for &d in &doms[0..8] {
            assert!(introduced(&mut c, d), "{strategy}: {d}");
        }
        for &d in doms[8..16].iter() {
            assert!(!introduced(&mut c, d), "{strategy}: {d}");
            assert_eq!(
                c.read(&format!("/local/domain/{d}")).error().as_deref(),
                Some("ENOENT"),
                "{strategy}: {d}"
            );
        }
        for &d in &doms[16..] {
            assert!(introduced(&mut c, d), "{strategy}: {d}");
        }
    }
}

/// Calls per death as the number of domains grows: flat for the
/// changed-domain feed, the bitmaps and the death channels; linear for the
/// legacy scan.
#[test]
fn calls_per_death_by_strategy_and_size() {
    let mut results = Vec::new();
    for strategy in STRATEGIES {
        for n in [20usize, 200] {
            let h = Host::start_with(&["--domain-state", strategy], |_| {});
            let mut w = h.daemon.client();
            w.req(MsgType::Watch, &zs(&["@releaseDomain", "dom", "1"]))
                .ok();
            w.next_event(2000);
            let mut ts = Toolstack::new(&h.sim.socket(), &h.daemon.socket).expect("toolstack");
            let doms: Vec<u32> = (0..n)
                .map(|i| ts.create_headless(&format!("c{i}")).expect("create"))
                .collect();
            // Warm-up death (drains the feed's creation backlog).
            ts.destroy(doms[0]).expect("destroy");
            collect(&mut w, Duration::from_millis(300));
            let before = h.sim.with(|hv| hv.calls()).domain_state();
            let deaths = 10;
            for &d in &doms[1..=deaths] {
                ts.destroy(d).expect("destroy");
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    match w.next_event(1000) {
                        Some((p, _)) if p == format!("@releaseDomain/{d}") => break,
                        _ if Instant::now() > deadline => panic!("{strategy}: no event for {d}"),
                        _ => {}
                    }
                }
            }
            let per = (h.sim.with(|hv| hv.calls()).domain_state() - before) as f64 / deaths as f64;
            results.push((strategy, n, per));
        }
    }
    eprintln!("domain-state calls per death: {results:?}");
    // The domain list: one call per 512 domains per event, so flat up to
    // 511 guests.
    let get = |s: &str, n: usize| {
        results
            .iter()
            .find(|r| r.0 == s && r.1 == n)
            .map(|r| r.2)
            .unwrap_or(f64::NAN)
    };
    for s in ["poll", "getdomaininfolist", "bitmap", "mapped", "channel"] {
        assert!(
            get(s, 200) <= get(s, 20) * 1.5 + 0.01,
            "{s} is flat: {results:?}"
        );
    }
    assert!(
        get("legacy", 200) >= 5.0 * get("legacy", 20),
        "legacy grows with the number of domains"
    );
    assert!(
        get("legacy", 200) >= 100.0 * 0.9,
        "legacy makes about one call per domain per event"
    );
}
