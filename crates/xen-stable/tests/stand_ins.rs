//! The production backend, unchanged, against the simulator's stand-in
//! libraries: the same `dlopen`/`dlvsym` path that runs on real Xen.
//!
//! The stand-ins are workspace `cdylib`s; `cargo test --workspace` builds
//! them next to this test's binary. One test function: the stand-ins find
//! the simulator through the process environment.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use xen_stable::libs::XenLibs;
use xen_stable::{state, DomainStates, EventChannels, GrantMapper};
use xenstore_proto::ring::{self, RingPage};

/// Waits up to 5 s for the descriptor to become readable.
fn readable(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut p, 1, 5000) == 1 }
}

/// A directory with the stand-ins under their sonames.
fn stand_in_dir(tmp: &Path) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let target = exe.parent().and_then(Path::parent).expect("target dir");
    xensim::stand_ins::link(target, &tmp.join("lib"), &[]).expect("stand-ins")
}

#[test]
fn production_backend_runs_on_the_simulator() {
    let tmp = std::env::temp_dir().join(format!("xs-stand-ins-{}", std::process::id()));
    let sim = xensim::Sim::start(&tmp.join("sim"), 7).expect("simulator");
    std::env::set_var(xensim::protocol::ENV_SOCKET, sim.socket());
    std::env::set_var(xensim::protocol::ENV_DOMID, "0");
    let libs = XenLibs::new(Some(&stand_in_dir(&tmp)));

    // libxenevtchn: VIRQ_DOM_EXC creates the changed-domain feed.
    let mut ev = libs.evtchn().expect("libxenevtchn stand-in");
    let virq = ev.bind_virq(xen_stable::VIRQ_DOM_EXC).expect("bind virq");
    assert_eq!(
        ev.bind_virq(xen_stable::VIRQ_DOM_EXC)
            .expect_err("bound twice")
            .errno(),
        Some(libc::EEXIST)
    );

    // libxenmanage: single-domain queries.
    let mut m = libs.manage().expect("libxenmanage stand-in");
    let dom0 = m.get_domain_info(0).expect("dom0");
    assert!(dom0.exists());
    assert_eq!(
        dom0.caps & xen_stable::caps::CONTROL,
        xen_stable::caps::CONTROL
    );
    let e = m.get_domain_info(99).expect_err("no domain 99");
    assert_eq!(e.errno(), Some(3), "ESRCH: {e}");

    // Binding marked every existing domain: dom0 is reported first.
    assert_eq!(m.poll_changed_domain().expect("poll").map(|x| x.0), Some(0));
    assert_eq!(m.poll_changed_domain().expect("poll"), None);
    let (d1, d2) = (
        sim.create_domain(None, 0).expect("d1"),
        sim.create_domain(None, 0).expect("d2"),
    );
    let mut seen = Vec::new();
    while let Some((d, info)) = m.poll_changed_domain().expect("poll") {
        seen.push((d, info));
    }
    assert_eq!(seen.iter().map(|x| x.0).collect::<Vec<_>>(), [d1, d2]);
    assert_ne!(seen[0].1.unique_id, seen[1].1.unique_id);

    // A death is reported once, with the current state, and the VIRQ fires
    // on the pollable descriptor.
    sim.with(|h| h.shutdown(d1, xensim::ShutdownReason::Crash))
        .expect("shutdown");
    assert!(readable(ev.fd()), "VIRQ_DOM_EXC delivered");
    assert_eq!(ev.pending().expect("pending"), virq);
    ev.unmask(virq).expect("unmask");
    let (d, info) = m.poll_changed_domain().expect("poll").expect("one change");
    assert_eq!(d, d1);
    assert_eq!(info.state, state::EXIST | state::SHUTDOWN);
    assert_eq!(m.poll_changed_domain().expect("poll"), None);
    sim.destroy_domain(d2).expect("destroy");
    let (d, info) = m.poll_changed_domain().expect("poll").expect("one change");
    assert_eq!((d, info.state, info.unique_id), (d2, 0, 0));

    // A guest's event channel: the guest allocates an unbound port for us,
    // we bind it, its notifications arrive on our descriptor and ours on
    // its port.
    let g = sim.create_domain(None, 0).expect("guest");
    let gport = sim.with(|h| h.alloc_unbound(g, 0)).expect("unbound port");
    let lport = ev.bind_interdomain(g, gport).expect("bind interdomain");
    sim.with(|h| h.notify(g, gport)).expect("guest notifies");
    // Earlier deaths may still have VIRQ deliveries queued: skip them.
    let got = loop {
        assert!(readable(ev.fd()), "the guest's notification arrives");
        let p = ev.pending().expect("pending");
        if p != virq {
            break p;
        }
        ev.unmask(virq).expect("unmask");
    };
    assert_eq!(got, lport);
    ev.notify(lport).expect("notify guest");
    assert_eq!(sim.with(|h| h.pending(g)), Some(gport));
    ev.unmask(lport).expect("unmask");

    // An inherited handle (xenevtchn_fdopen, as after a live update's
    // exec): the same open device, with its ports and queued events; the
    // first handle's close does not unbind them while a descriptor of it
    // is open.
    assert!(ev.can_be_inherited());
    let kept = ev.fd().try_clone_to_owned().expect("dup");
    sim.with(|h| h.unmask(g, gport));
    sim.with(|h| h.notify(g, gport)).expect("guest notifies");
    drop(ev);
    let mut ev = libs.evtchn_inherited(kept).expect("xenevtchn_fdopen");
    let got = loop {
        assert!(readable(ev.fd()), "the notification queued before arrives");
        let p = ev.pending().expect("pending");
        if p != virq {
            break p;
        }
        ev.unmask(virq).expect("unmask");
    };
    assert_eq!(got, lport);
    ev.unmask(lport).expect("unmask");
    ev.notify(lport).expect("notify guest");
    assert_eq!(sim.with(|h| h.pending(g)), Some(gport));
    assert_eq!(
        ev.bind_virq(xen_stable::VIRQ_DOM_EXC)
            .expect_err("still bound")
            .errno(),
        Some(libc::EEXIST)
    );
    let (not_evtchn, _peer) = std::os::unix::net::UnixStream::pair().expect("pair");
    assert_eq!(
        libs.evtchn_inherited(not_evtchn.into())
            .err()
            .and_then(|e| e.errno()),
        Some(libc::EBADF)
    );

    // libxengnttab: the guest's ring page, shared with the guest.
    let mut gt = libs.gnttab().expect("libxengnttab stand-in");
    let page = gt.map_ring(g).expect("map ring");
    let guest_side = xen_stable::dom0::map_kva(&sim.ring_path(g)).expect("guest mapping");
    ring::guest_write(&guest_side, b"hello from the guest").expect("guest write");
    let mut buf = [0u8; 64];
    let n = ring::server_read(&page, &mut buf).expect("server read");
    assert_eq!(&buf[..n], b"hello from the guest");
    assert_eq!(guest_side.load_u32(ring::REQ_CONS), n as u32);
    assert!(gt.map_ring(9999).is_err(), "no such domain");
    // A mapped domain that is destroyed stays a zombie (DEAD) until unmapped.
    sim.destroy_domain(g).expect("destroy guest");
    let mut last = None;
    while let Some((d, info)) = m.poll_changed_domain().expect("poll") {
        if d == g {
            last = Some(info.state);
        }
    }
    assert_eq!(last, Some(state::EXIST | state::DEAD));
    drop(page);
    let (d, info) = m.poll_changed_domain().expect("poll").expect("gone");
    assert_eq!((d, info.state), (g, 0));

    // Every call went through the simulator and was counted.
    let calls = sim.with(|h| h.calls());
    assert!(calls.poll_changed_domain >= 8, "{calls:?}");
    drop(gt);
    drop(ev);
    drop(m);
    let _ = std::fs::remove_dir_all(&tmp);
}
