//! `packaging/rxenstored-switch` (the command that makes a host start
//! rxenstored, and the one that puts the previous xenstored back) on the
//! file layouts of Debian and of upstream Xen, in a scratch root.

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/rxenstored-switch")
}

fn root(tag: &str) -> PathBuf {
    let r = std::env::temp_dir().join(format!("rxs-switch-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&r);
    std::fs::create_dir_all(r.join("usr/sbin")).unwrap();
    std::fs::write(r.join("usr/sbin/rxenstored"), "#!/bin/sh\n").unwrap();
    let mut p = std::fs::metadata(r.join("usr/sbin/rxenstored"))
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
    std::fs::set_permissions(r.join("usr/sbin/rxenstored"), p).unwrap();
    r
}

fn switch(root: &Path, arg: &str) -> (bool, String) {
    let out = Command::new("sh")
        .arg(script())
        .arg(arg)
        .env("RXENSTORED_SWITCH_ROOT", root)
        .output()
        .expect("run sh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const DEBIAN: &str = "## Default: oxenstored\n#XENSTORED=/usr/sbin/oxenstored\n\
XENSTORED=/usr/sbin/xenstored\nXENSTORED_ARGS=\n";

#[test]
fn on_then_off_on_debian_gives_back_the_file_as_it_was() {
    let r = root("debian");
    std::fs::create_dir_all(r.join("etc/default")).unwrap();
    let conf = r.join("etc/default/xen");
    std::fs::write(&conf, DEBIAN).unwrap();
    let (ok, out) = switch(&r, "on");
    assert!(ok, "{out}");
    let on = std::fs::read_to_string(&conf).unwrap();
    assert_eq!(
        on,
        DEBIAN.replace(
            "\nXENSTORED=/usr/sbin/xenstored",
            "\nXENSTORED=/usr/sbin/rxenstored"
        )
    );
    let (ok, out) = switch(&r, "status");
    assert!(
        ok && out.contains("XENSTORED=/usr/sbin/rxenstored"),
        "{out}"
    );
    // Twice is harmless.
    let (ok, out) = switch(&r, "on");
    assert!(ok && out.contains("already"), "{out}");
    let (ok, out) = switch(&r, "off");
    assert!(ok, "{out}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), DEBIAN);
    // Nothing left to put back.
    assert!(!switch(&r, "off").0);
    let _ = std::fs::remove_dir_all(&r);
}

#[test]
fn a_file_without_a_setting_gets_one_and_loses_it_again() {
    let r = root("upstream");
    std::fs::create_dir_all(r.join("etc/sysconfig")).unwrap();
    let conf = r.join("etc/sysconfig/xencommons");
    let text = "# XENSTORED=/usr/sbin/oxenstored\nXENSTORED_ARGS=\"-T /tmp/t\"\n";
    std::fs::write(&conf, text).unwrap();
    let (ok, out) = switch(&r, "on");
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        format!("{text}XENSTORED=/usr/sbin/rxenstored\n")
    );
    let (ok, out) = switch(&r, "off");
    assert!(ok, "{out}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), text);
    let _ = std::fs::remove_dir_all(&r);
}

#[test]
fn an_administrator_s_later_edit_is_not_undone() {
    let r = root("edited");
    std::fs::create_dir_all(r.join("etc/default")).unwrap();
    let conf = r.join("etc/default/xencommons");
    std::fs::write(&conf, "XENSTORED=/usr/sbin/xenstored\n").unwrap();
    assert!(switch(&r, "on").0);
    std::fs::write(&conf, "XENSTORED=/usr/sbin/oxenstored\n").unwrap();
    let (ok, out) = switch(&r, "off");
    assert!(!ok, "{out}");
    assert!(out.contains("no longer names"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "XENSTORED=/usr/sbin/oxenstored\n"
    );
    let _ = std::fs::remove_dir_all(&r);
}

#[test]
fn a_host_without_xen_is_told_so() {
    let r = root("noxen");
    let (ok, out) = switch(&r, "on");
    assert!(!ok);
    assert!(out.contains("is Xen installed"), "{out}");
    let _ = std::fs::remove_dir_all(&r);
}

/// Runs the package's maintainer script `name` with `arg`, the switch on
/// PATH as dpkg would find it in /usr/sbin.
fn maintainer_script(root: &Path, name: &str, arg: &str) -> (bool, String) {
    let packaging = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging");
    let path = format!(
        "{}:{}",
        packaging.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .arg(packaging.join("maintainer-scripts").join(name))
        .arg(arg)
        .env("RXENSTORED_SWITCH_ROOT", root)
        .env("PATH", path)
        .output()
        .expect("run sh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn removing_the_package_while_switched_on_puts_the_previous_xenstored_back() {
    let r = root("prerm");
    std::fs::create_dir_all(r.join("etc/default")).unwrap();
    let conf = r.join("etc/default/xen");
    std::fs::write(&conf, DEBIAN).unwrap();
    assert!(switch(&r, "on").0);
    let on = std::fs::read_to_string(&conf).unwrap();
    // An upgrade leaves the switch as it is.
    let (ok, out) = maintainer_script(&r, "prerm", "upgrade");
    assert!(ok, "{out}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), on);
    // Removal puts the file back byte for byte (else the next boot would
    // name a missing executable and start no xenstored).
    let (ok, out) = maintainer_script(&r, "prerm", "remove");
    assert!(ok, "{out}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), DEBIAN);
    assert!(!r.join("var/lib/rxenstored/previous-xenstored").exists());
    // Never switched on: removal changes nothing and says nothing.
    let (ok, out) = maintainer_script(&r, "prerm", "remove");
    assert!(ok && out.is_empty(), "{out}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), DEBIAN);
    let _ = std::fs::remove_dir_all(&r);
}

#[test]
fn removal_warns_when_the_settings_name_rxenstored_by_hand() {
    let r = root("prerm-hand");
    std::fs::create_dir_all(r.join("etc/default")).unwrap();
    let conf = r.join("etc/default/xen");
    let text = "XENSTORED=/usr/sbin/rxenstored\n";
    std::fs::write(&conf, text).unwrap();
    let (ok, out) = maintainer_script(&r, "prerm", "remove");
    assert!(ok, "{out}");
    assert!(
        out.contains("warning") && out.contains("starts none"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), text);
    let _ = std::fs::remove_dir_all(&r);
}

#[test]
fn purging_removes_the_switch_s_state() {
    let r = root("postrm");
    std::fs::create_dir_all(r.join("etc/default")).unwrap();
    std::fs::write(
        r.join("etc/default/xencommons"),
        "XENSTORED=/usr/sbin/xenstored\n",
    )
    .unwrap();
    assert!(switch(&r, "on").0);
    // An administrator's edit keeps `off` (and so prerm) from removing it.
    std::fs::write(
        r.join("etc/default/xencommons"),
        "XENSTORED=/usr/sbin/oxenstored\n",
    )
    .unwrap();
    assert!(maintainer_script(&r, "prerm", "remove").0);
    assert!(r.join("var/lib/rxenstored").exists());
    let (ok, out) = maintainer_script(&r, "postrm", "remove");
    assert!(ok, "{out}");
    assert!(r.join("var/lib/rxenstored").exists());
    let (ok, out) = maintainer_script(&r, "postrm", "purge");
    assert!(ok, "{out}");
    assert!(!r.join("var/lib/rxenstored").exists());
    let _ = std::fs::remove_dir_all(&r);
}
