//! The daemon on the Xen releases hosts run (issue 7), on the simulator:
//! Xen 4.17 and 4.20 (no libxenmanage: the domain list through libxencall),
//! 4.20 with a libxenmanage the hypervisor refuses, 4.21 (libxenmanage's
//! feed), and a release outside the layout table (no domain state: the
//! safe fallback). Each host goes through libxl's flow: permissions set
//! before INTRODUCE naming the new guest, the guest writing its own nodes
//! over its ring, its shutdown and its destruction.

mod common;
use common::{z, zs, Client, Host};
use std::time::{Duration, Instant};
use xensim::ShutdownReason;
use xenstore_proto::{Message, MsgType};

fn text(m: &Message) -> String {
    String::from_utf8_lossy(&m.payload).replace('\0', "|")
}

/// What the toolstack sees of one guest's life on a host.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    /// SET_PERMS naming the guest as owner, before INTRODUCE.
    owner_perms: String,
    /// The guest writing `control/feature-poweroff` over its ring.
    guest_write: String,
    /// `@releaseDomain/<id>` at shutdown.
    released_at_shutdown: bool,
    /// Still introduced after `xl destroy`.
    introduced_after_destroy: bool,
    /// The domain left as a zombie (our mapping kept it).
    zombie: bool,
}

fn wait_event(w: &mut Client, path: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match w.next_event(500) {
            Some((p, _)) if p == path => return true,
            _ => {}
        }
    }
    false
}

/// libxl's order: nodes and permissions first (naming the guest, which
/// exists in the hypervisor but is not introduced yet), then INTRODUCE.
fn guest_life(h: &Host) -> Seen {
    let mut ts = h.daemon.client();
    let mut w = h.daemon.client();
    w.req(MsgType::Watch, &zs(&["@releaseDomain", "rel", "1"]))
        .ok();
    w.next_event(2000);
    let d = h.sim.create_domain(None, 0).expect("create");
    let home = format!("/local/domain/{d}");
    ts.req(MsgType::Mkdir, &z(&home)).ok();
    assert_eq!(
        ts.req(MsgType::SetPerms, &zs(&[&home, "n0", &format!("r{d}")]))
            .ok(),
        b"OK\0"
    );
    let control = format!("{home}/control");
    ts.req(MsgType::Mkdir, &z(&control)).ok();
    let owner_perms = {
        let r = ts.req(MsgType::SetPerms, &zs(&[&control, &format!("n{d}")]));
        r.error()
            .unwrap_or_else(|| r.text().trim_end_matches('\0').to_owned())
    };
    let mut g = xensim::Guest::attach(&h.sim.socket(), d, 0).expect("guest");
    assert_eq!(
        ts.req(
            MsgType::Introduce,
            &zs(&[&d.to_string(), "0", &g.port.to_string()])
        )
        .ok(),
        b"OK\0",
        "{}",
        h.daemon.log()
    );
    let mut p = z("control/feature-poweroff");
    p.push(b'1');
    let guest_write = text(&g.request(MsgType::Write, 0, &p).expect("ring"))
        .trim_end_matches('|')
        .to_owned();
    h.sim
        .with(|hv| hv.shutdown(d, ShutdownReason::Poweroff))
        .expect("shutdown");
    let released_at_shutdown = wait_event(&mut w, &format!("@releaseDomain/{d}"));
    h.sim.destroy_domain(d).expect("destroy");
    wait_event(&mut w, &format!("@releaseDomain/{d}"));
    let introduced_after_destroy =
        ts.req(MsgType::IsDomainIntroduced, &z(&d.to_string())).ok() == b"T\0";
    let zombie = h.sim.with(|hv| hv.domain(d).is_some());
    Seen {
        owner_perms,
        guest_write,
        released_at_shutdown,
        introduced_after_destroy,
        zombie,
    }
}

fn works() -> Seen {
    Seen {
        owner_perms: "OK".into(),
        guest_write: "OK".into(),
        released_at_shutdown: true,
        introduced_after_destroy: false,
        zombie: false,
    }
}

#[test]
fn xen_4_17_without_libxenmanage_uses_the_domain_list() {
    let h = Host::start_xen((4, 17), &["libxenmanage"], &[]);
    assert_eq!(guest_life(&h), works(), "{}", h.daemon.log());
    let log = h.daemon.log();
    assert!(
        log.contains(
            "domain state: XEN_SYSCTL_getdomaininfolist through libxencall.so.1 (Xen 4.17"
        ) && log.contains("libxenmanage.so.1"),
        "one line says which interface and why:\n{log}"
    );
    let calls = h.sim.with(|hv| hv.calls());
    assert_eq!(calls.get_domain_info + calls.poll_changed_domain, 0);
    assert!(calls.getdomaininfolist > 0);
}

#[test]
fn xen_4_20_with_a_refused_libxenmanage_uses_the_domain_list() {
    let h = Host::start_xen((4, 20), &[], &[]);
    assert_eq!(guest_life(&h), works(), "{}", h.daemon.log());
    let log = h.daemon.log();
    assert!(
        log.contains("(Xen 4.20, sysctl interface 0x15")
            && log.contains("libxenmanage.so.1 loads but the hypervisor refuses it"),
        "{log}"
    );
}

#[test]
fn xen_4_21_uses_libxenmanage() {
    let h = Host::start_xen((4, 21), &[], &[]);
    assert_eq!(guest_life(&h), works(), "{}", h.daemon.log());
    assert!(h
        .daemon
        .log()
        .contains("domain state: libxenmanage's changed-domain feed"));
    assert_eq!(h.sim.with(|hv| hv.calls()).getdomaininfolist, 0);
}

#[test]
fn xen_4_21_without_libxenmanage_uses_the_domain_list() {
    let h = Host::start_xen((4, 21), &["libxenmanage"], &[]);
    assert_eq!(guest_life(&h), works(), "{}", h.daemon.log());
    assert!(h.daemon.log().contains("sysctl interface 0x16"));
}

/// A release whose record layout is not in the table: one error line, no
/// record read, and the safe behaviour: a domain not introduced does not
/// count as existing, so no right goes to a domain that may not exist.
#[test]
fn unknown_xen_falls_back_to_no_domain_state() {
    let h = Host::start_xen((4, 16), &["libxenmanage"], &[]);
    let seen = guest_life(&h);
    let log = h.daemon.log();
    assert_eq!(
        seen,
        Seen {
            owner_perms: "ENOENT".into(),
            guest_write: "EACCES".into(),
            released_at_shutdown: false,
            introduced_after_destroy: true,
            zombie: true,
        },
        "{log}"
    );
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("domain state: none:"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("Xen 4.16 is not in the table") && lines[0].contains("4.17 to 4.22"),
        "{log}"
    );
    assert_eq!(h.sim.with(|hv| hv.calls()).getdomaininfolist, 0);
    // RELEASE still cleans up.
    let mut ts = h.daemon.client();
    let d = h
        .sim
        .with(|hv| hv.domains().map(|x| x.domid).max())
        .expect("the zombie");
    assert_eq!(ts.req(MsgType::Release, &z(&d.to_string())).ok(), b"OK\0");
}

/// Naming a backend the host lacks is an error at start-up, not a silent
/// downgrade.
#[test]
fn an_explicit_backend_that_cannot_work_is_refused() {
    for (version, without, asked) in [
        ((4, 17), &["libxenmanage"][..], "poll"),
        ((4, 17), &[][..], "poll"),
        ((4, 16), &[][..], "getdomaininfolist"),
        ((4, 17), &["libxencall"][..], "getdomaininfolist"),
    ] {
        let tmp = common::temp_dir("explicit");
        let sim = xensim::Sim::start(&tmp.join("sim"), 3).expect("sim");
        sim.with(|hv| hv.set_version(version.0, version.1));
        let libs = common::stand_ins_but(&tmp, without);
        let out = std::process::Command::new(common::binary())
            .args(["-N", "--socket"])
            .arg(tmp.join("sock"))
            .arg("--xen-lib-dir")
            .arg(&libs)
            .args(["--domain-state", asked])
            .arg("--xsd-kva")
            .arg(tmp.join("none"))
            .env("XENSIM_SOCKET", sim.socket())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{asked} on {version:?}: {err}");
        assert!(err.contains("--domain-state"), "{err}");
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
