//! The production backend against the Xen libraries installed on this
//! machine.

use xen_stable::libs::XenLibs;

/// Our names, prototypes and symbol versions match Xen's real libraries:
/// Debian's Xen 4.17 `libxenevtchn.so.1`, `libxengnttab.so.1` and
/// `libxencall.so.1` (installed by `.ci/run` with xen-utils-4.17) load and
/// resolve; only opening the devices fails on a machine without Xen.
#[test]
fn real_xen_libraries_resolve() {
    let libs = XenLibs::new(None);
    for (what, r) in [
        ("libxenevtchn", libs.evtchn().err()),
        ("libxengnttab", libs.gnttab().err()),
        (
            "libxencall",
            xen_stable::domlist::DomainList::open(None).err(),
        ),
    ] {
        match r {
            // On a Xen host it may even work.
            None => {}
            Some(xen_stable::XenError::Call { call, .. }) => {
                assert!(call.ends_with("_open"), "{what}: {call}")
            }
            Some(e) => panic!("{what}: the real library should load and resolve: {e}"),
        }
    }
}
