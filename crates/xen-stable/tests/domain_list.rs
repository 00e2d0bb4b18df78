//! The pre-4.21 domain-state backend (`XEN_SYSCTL_getdomaininfolist`
//! through libxencall), unchanged, against the simulator's stand-in
//! `libxencall.so.1`: version detection, the layout table, the interface
//! version check, and what the list says across a domain's life.
//!
//! One test function: the stand-ins find the simulator through the process
//! environment.

use std::path::{Path, PathBuf};
use xen_stable::domlist::DomainList;
use xen_stable::libs::XenLibs;
use xen_stable::{DomainStates, GrantMapper, XenError};

fn stand_in_dir(tmp: &Path) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let target = exe.parent().and_then(Path::parent).expect("target dir");
    xensim::stand_ins::link(target, &tmp.join("lib"), &["libxenevtchn"]).expect("stand-ins")
}

#[test]
fn domain_list_on_xen_4_17_4_20_and_4_21() {
    let tmp = std::env::temp_dir().join(format!("xs-domlist-{}", std::process::id()));
    let sim = xensim::Sim::start(&tmp.join("sim"), 11).expect("simulator");
    std::env::set_var(xensim::protocol::ENV_SOCKET, sim.socket());
    std::env::set_var(xensim::protocol::ENV_DOMID, "0");
    let dir = stand_in_dir(&tmp);

    // Xen 4.17: no stable domain-state call (libxenmanage would get
    // EACCES from the hypervisor), the list works with interface 0x15.
    sim.with(|h| h.set_version(4, 17));
    let mut m = XenLibs::new(Some(&dir)).manage().expect("stand-in");
    assert_eq!(m.get_domain_info(0).expect_err("4.17").errno(), Some(13));
    let mut l = DomainList::open(Some(&dir)).expect("4.17 is known");
    assert_eq!(l.version(), (4, 17));
    assert_eq!(l.layout().sysctl_version, 0x15);
    let dom0 = l.get(0).expect("list").expect("dom0 exists");
    assert_eq!((dom0.domid, dom0.identity()), (0, 0));
    assert!(l.get(5).expect("list").is_none(), "no domain 5 yet");

    let a = sim.create_domain(None, 0).expect("a");
    let b = sim.create_domain(None, 0).expect("b");
    let c = sim.create_domain(None, 0).expect("c");
    let all = l.range(0, 0x7FEF).expect("range");
    assert_eq!(
        all.iter().map(|d| d.domid).collect::<Vec<_>>(),
        [0, a, b, c]
    );
    assert!(all[1..].iter().all(|d| !d.dying() && !d.shutdown()));
    assert_ne!(all[1].identity(), all[2].identity());
    assert_ne!(all[1].identity(), 0);

    // Shutdown with its code; destruction while mapped: dying (a zombie)
    // until the mapping goes, then absent.
    sim.with(|h| h.shutdown(b, xensim::ShutdownReason::Reboot))
        .expect("shutdown");
    let got = l.get(b).expect("list").expect("b");
    assert!(got.shutdown() && !got.dying() && got.shutdown_reason() == 1);
    let mut gt = XenLibs::new(Some(&dir)).gnttab().expect("gnttab");
    let page = gt.map_ring(c).expect("map c");
    sim.destroy_domain(c).expect("destroy c");
    assert!(l.get(c).expect("list").expect("zombie").dying());
    drop(page);
    assert!(l.get(c).expect("list").is_none(), "gone once unmapped");
    // A new domain on a freed domid is another domain.
    let old = l.get(a).expect("list").expect("a").identity();
    sim.destroy_domain(a).expect("destroy a");
    let again = sim.create_domain(Some(a), 0).expect("reuse a");
    assert_eq!(again, a);
    assert_ne!(l.get(a).expect("list").expect("new a").identity(), old);

    // Cost: one call per 512 records.
    for _ in 0..600 {
        sim.create_domain(None, 0).expect("more");
    }
    let before = l.cost();
    let n = l.range(0, 0x7FEF).expect("range").len();
    let after = l.cost();
    assert!(n > 600);
    assert_eq!(after.0 - before.0, 2, "two calls for {n} domains");
    assert_eq!(after.1 - before.1, 112 * n as u64);
    assert_eq!(sim.with(|h| h.calls()).getdomaininfolist_bytes, after.1);
    drop(l);

    // Xen 4.20: same layout and interface version.
    sim.with(|h| h.set_version(4, 20));
    assert_eq!(
        DomainList::open(Some(&dir)).expect("4.20").version(),
        (4, 20)
    );

    // Xen 4.21: interface 0x16; the stable call works too.
    sim.with(|h| h.set_version(4, 21));
    let l = DomainList::open(Some(&dir)).expect("4.21");
    assert_eq!(l.layout().sysctl_version, 0x16);
    assert!(m.get_domain_info(0).expect("4.21 has it").exists());
    drop(l);

    // A release outside the table: one clear error, nothing read.
    sim.with(|h| h.set_version(4, 16));
    let calls = sim.with(|h| h.calls()).getdomaininfolist;
    match DomainList::open(Some(&dir)) {
        Err(e @ XenError::UnknownHypervisor { .. }) => {
            let s = e.to_string();
            assert!(s.contains("Xen 4.16") && s.contains("4.17 to 4.22"), "{s}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("4.16 accepted"),
    }
    assert_eq!(sim.with(|h| h.calls()).getdomaininfolist, calls);
    sim.with(|h| h.set_version(5, 0));
    assert!(matches!(
        DomainList::open(Some(&dir)),
        Err(XenError::UnknownHypervisor { major: 5, .. })
    ));

    // Without libxencall: the loader's error names it.
    let e = DomainList::open(Some(Path::new("/nonexistent")))
        .err()
        .expect("missing");
    assert!(e.to_string().contains("libxencall.so.1"), "{e}");
    drop(gt);
    drop(m);
    let _ = std::fs::remove_dir_all(&tmp);
}
