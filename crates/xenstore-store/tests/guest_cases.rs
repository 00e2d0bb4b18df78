//! The conformance cases of the protocol digest (section 11) that need a
//! guest domain, at the engine level: an introduced domain is a
//! `ConnKind::Domain` connection. (The same cases over real rings come with
//! the hypervisor layer.)

mod common;
use common::{z, DOM0, T};
use xenstore_proto::{Message, MsgType};
use xenstore_store::{ConnId, ConnKind};

impl T {
    fn write(&mut self, c: ConnId, path: &str, v: &str) -> Result<Vec<u8>, String> {
        let mut p = z(&[path]);
        p.extend_from_slice(v.as_bytes());
        self.req(c, MsgType::Write, &p)
    }

    fn perms(&mut self, path: &str) -> String {
        let p = self.ok(DOM0, MsgType::GetPerms, &z(&[path]));
        String::from_utf8_lossy(&p).replace('\0', "|")
    }

    /// Events (path, token) sent to `who` by one request of `c`.
    fn events_for(
        &mut self,
        c: ConnId,
        t: MsgType,
        p: &[u8],
        who: ConnId,
    ) -> Vec<(String, String)> {
        self.send_all(c, t, 0, p)
            .into_iter()
            .filter(|(to, m)| *to == who && m.kind() == Some(MsgType::WatchEvent))
            .map(|(_, m)| {
                let mut it = m.payload.split(|&b| b == 0);
                let a = String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
                let b = String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
                (a, b)
            })
            .collect()
    }

    fn watch(&mut self, c: ConnId, args: &[&str]) {
        self.ok(c, MsgType::Watch, &z(args));
    }
}

fn w(path: &str, value: &str) -> Vec<u8> {
    let mut p = z(&[path]);
    p.extend_from_slice(value.as_bytes());
    p
}

#[test]
fn case_18_relative_path_from_domain() {
    let mut t = T::new();
    let g = t.guest(5);
    t.ok(g, MsgType::Write, &w("data/x", "1"));
    assert_eq!(
        t.ok(DOM0, MsgType::Read, &z(&["/local/domain/5/data/x"])),
        b"1"
    );
}

#[test]
fn case_20_domu_path_length() {
    let mut t = T::new();
    let g = t.guest(5);
    // Components of 100 bytes: a long single name would overflow the
    // parent's record (node-size) before the path length matters.
    let long = |n: usize| {
        let mut p = String::from("d");
        while p.len() < n {
            let room = n - p.len() - 1;
            p.push('/');
            p.push_str(&"x".repeat(room.min(100)));
        }
        p
    };
    assert_eq!(t.write(g, &long(2049), "v"), Err("EINVAL".into()));
    assert_eq!(t.write(g, &long(2048), "v"), Ok(b"OK\0".to_vec()));
    // Privileged callers are not limited by the path quota.
    assert!(t
        .write(DOM0, &format!("/{}", "y".repeat(3000)), "v")
        .is_ok());
}

#[test]
fn cases_45_to_47_owner_rights() {
    let mut t = T::new();
    let g5 = t.guest(5);
    let g2 = t.guest(2);
    t.ok(DOM0, MsgType::Write, &w("/p", ""));
    t.ok(DOM0, MsgType::SetPerms, &z(&["/p", "r5"]));
    assert_eq!(
        t.req(g2, MsgType::SetPerms, &z(&["/p", "r2"])),
        Err("EACCES".into())
    );
    assert_eq!(
        t.req(g5, MsgType::SetPerms, &z(&["/p", "r2"])),
        Err("EPERM".into())
    );
    assert_eq!(
        t.req(g5, MsgType::SetPerms, &z(&["/p", "n5", "r7"])),
        Ok(b"OK\0".to_vec())
    );
    assert_eq!(t.perms("/p"), "n5|r7|");
}

#[test]
fn cases_48_to_50_acl_grants() {
    let mut t = T::new();
    let g7 = t.guest(7);
    let g9 = t.guest(9);
    t.ok(DOM0, MsgType::Write, &w("/p", "secret"));
    t.ok(DOM0, MsgType::SetPerms, &z(&["/p", "n5", "r7"]));
    assert_eq!(t.req(g9, MsgType::Read, &z(&["/p"])), Err("EACCES".into()));
    assert_eq!(
        t.req(g7, MsgType::Read, &z(&["/p"])),
        Ok(b"secret".to_vec())
    );
    t.ok(DOM0, MsgType::SetPerms, &z(&["/p", "n5", "w7"]));
    assert_eq!(t.write(g7, "/p", "new"), Ok(b"OK\0".to_vec()));
    assert_eq!(t.req(g7, MsgType::Read, &z(&["/p"])), Err("EACCES".into()));
}

#[test]
fn case_51_domu_owns_what_it_creates() {
    let mut t = T::new();
    let g = t.guest(5);
    t.ok(DOM0, MsgType::Mkdir, &z(&["/local/domain/5/data"]));
    t.ok(
        DOM0,
        MsgType::SetPerms,
        &z(&["/local/domain/5/data", "n0", "b5"]),
    );
    t.ok(g, MsgType::Write, &w("/local/domain/5/data/x", "1"));
    assert_eq!(t.perms("/local/domain/5/data/x"), "n5|b5|");
}

#[test]
fn cases_52_53_existence_hiding_and_no_write() {
    let mut t = T::new();
    let g = t.guest(5);
    assert_eq!(
        t.req(g, MsgType::Read, &z(&["/nonexistent"])),
        Err("EACCES".into())
    );
    t.ok(DOM0, MsgType::Mkdir, &z(&["/x"]));
    let mut watcher = t.guest(6);
    watcher = {
        t.watch(DOM0, &["/x", "tok"]);
        watcher
    };
    let _ = watcher;
    let ev = t.events_for(g, MsgType::Write, &w("/x/y", "v"), DOM0);
    assert!(ev.is_empty());
    assert_eq!(t.write(g, "/x/y", "v"), Err("EACCES".into()));
    assert_eq!(
        t.req(DOM0, MsgType::Read, &z(&["/x/y"])),
        Err("ENOENT".into())
    );
    // Missing node under a readable parent: ENOENT.
    assert_eq!(
        t.req(g, MsgType::Read, &z(&["/local/domain/5/nope"])),
        Err("ENOENT".into())
    );
}

#[test]
fn case_54_too_many_entries() {
    let mut t = T::new();
    let g = t.guest(5);
    t.ok(g, MsgType::Write, &w("p", ""));
    let five = ["/local/domain/5/p", "n5", "r1", "r2", "r3", "r4"];
    assert_eq!(t.req(g, MsgType::SetPerms, &z(&five)), Ok(b"OK\0".to_vec()));
    let six = ["/local/domain/5/p", "n5", "r1", "r2", "r3", "r4", "r6"];
    assert_eq!(t.req(g, MsgType::SetPerms, &z(&six)), Err("ENOSPC".into()));
}

#[test]
fn cases_56_57_set_target() {
    let mut t = T::new();
    let g7 = t.guest(7);
    let _g5 = t.guest(5);
    t.ok(DOM0, MsgType::Write, &w("/local/domain/5/dev", "x"));
    t.ok(DOM0, MsgType::SetPerms, &z(&["/local/domain/5/dev", "n5"]));
    assert_eq!(
        t.write(g7, "/local/domain/5/dev", "y"),
        Err("EACCES".into())
    );
    assert_eq!(
        t.req(g7, MsgType::SetTarget, &z(&["7", "5"])),
        Err("EACCES".into())
    );
    t.ok(DOM0, MsgType::SetTarget, &z(&["7", "5"]));
    assert_eq!(
        t.write(g7, "/local/domain/5/dev", "y"),
        Ok(b"OK\0".to_vec())
    );
    assert_eq!(
        t.req(DOM0, MsgType::SetTarget, &z(&["7", "55"])),
        Err("ENOENT".into())
    );
}

#[test]
fn case_64_relative_watch_events() {
    let mut t = T::new();
    let g = t.guest(5);
    let init = t.events_for(g, MsgType::Watch, &z(&["data", "t"]), g);
    assert_eq!(init, [("data".to_string(), "t".to_string())]);
    let ev = t.events_for(DOM0, MsgType::Write, &w("/local/domain/5/data/k", "1"), g);
    assert_eq!(ev, [("data/k".to_string(), "t".to_string())]);
}

#[test]
fn case_69_depth_without_feature() {
    let mut t = T::new();
    t.ok(DOM0, MsgType::SetFeature, &z(&["8", "0"]));
    let g = t.guest(8);
    assert_eq!(
        t.req(g, MsgType::Watch, &z(&["/d", "t", "1"])),
        Err("EINVAL".into())
    );
    assert_eq!(t.ok(g, MsgType::GetFeature, b""), b"0\0");
}

#[test]
fn case_71_unwatch_across_forms() {
    let mut t = T::new();
    let g = t.guest(5);
    t.watch(g, &["data", "t"]);
    assert_eq!(
        t.req(g, MsgType::Unwatch, &z(&["/local/domain/5/data", "t"])),
        Ok(b"OK\0".to_vec())
    );
}

#[test]
fn cases_73_74_permission_filtered_events() {
    let mut t = T::new();
    let g = t.guest(5);
    t.ok(DOM0, MsgType::Write, &w("/priv", ""));
    t.watch(g, &["/priv", "t"]);
    assert!(t
        .events_for(DOM0, MsgType::Write, &w("/priv", "x"), g)
        .is_empty());
    t.ok(DOM0, MsgType::Write, &w("/pub", ""));
    t.ok(DOM0, MsgType::SetPerms, &z(&["/pub", "r0"]));
    t.watch(g, &["/pub", "t"]);
    // Losing access still reports the change.
    let ev = t.events_for(DOM0, MsgType::SetPerms, &z(&["/pub", "n0"]), g);
    assert_eq!(ev, [("/pub".to_string(), "t".to_string())]);
    assert!(t
        .events_for(DOM0, MsgType::Write, &w("/pub", "y"), g)
        .is_empty());
}

#[test]
fn case_90_transaction_quota() {
    let mut t = T::new();
    let g = t.guest(5);
    for i in 0..10 {
        assert!(
            t.req(g, MsgType::TransactionStart, &z(&[""])).is_ok(),
            "transaction {i}"
        );
    }
    assert_eq!(
        t.req(g, MsgType::TransactionStart, &z(&[""])),
        Err("ENOSPC".into())
    );
    // Privileged connections are not limited.
    for _ in 0..20 {
        assert!(t.req(DOM0, MsgType::TransactionStart, &z(&[""])).is_ok());
    }
}

#[test]
fn case_92_privileged_only_from_domu() {
    let mut t = T::new();
    let g = t.guest(5);
    let ops: [(MsgType, Vec<u8>); 9] = [
        (MsgType::Introduce, z(&["6", "1", "2"])),
        (MsgType::Release, z(&["6"])),
        (MsgType::Resume, z(&["6"])),
        (MsgType::SetTarget, z(&["6", "5"])),
        (MsgType::IsDomainIntroduced, z(&["6"])),
        (MsgType::SetFeature, z(&["6", "0"])),
        (MsgType::GetQuota, z(&["nodes"])),
        (MsgType::SetQuota, z(&["nodes", "1"])),
        (MsgType::Control, z(&["help"])),
    ];
    for (op, p) in ops {
        assert_eq!(t.req(g, op, &p), Err("EACCES".into()), "{op:?}");
    }
}

#[test]
fn case_97_introduce_events() {
    let mut t = T::new();
    t.watch(DOM0, &["@introduceDomain", "plain"]);
    t.watch(DOM0, &["@introduceDomain", "depth", "1"]);
    t.watch(DOM0, &["@introduceDomain/5", "one"]);
    let c = ConnId(999);
    t.s.connect(c, ConnKind::Domain(5));
    let ev: Vec<(ConnId, Message)> = t.s.introduce_domain(5, c);
    let mut got: Vec<String> = ev
        .iter()
        .map(|(_, m)| String::from_utf8_lossy(&m.payload).replace('\0', "|"))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "@introduceDomain/5|depth|",
            "@introduceDomain/5|one|",
            "@introduceDomain|plain|"
        ]
    );
    // Re-introduction fires nothing.
    assert!(t.s.introduce_domain(5, c).is_empty());
}

#[test]
fn case_98_release_live_domain() {
    let mut t = T::new();
    let g5 = t.guest(5);
    t.ok(g5, MsgType::Write, &w("data/x", "1"));
    t.ok(DOM0, MsgType::Write, &w("/shared", ""));
    t.ok(DOM0, MsgType::SetPerms, &z(&["/shared", "n0", "r5", "r6"]));
    t.watch(DOM0, &["@releaseDomain", "plain"]);
    t.watch(DOM0, &["@releaseDomain", "depth", "1"]);
    t.watch(DOM0, &["/local/domain/5/data/x", "node"]);
    let out = t.send_all(DOM0, MsgType::Release, 0, &z(&["5"]));
    let texts: Vec<String> = out
        .iter()
        .map(|(_, m)| String::from_utf8_lossy(&m.payload).replace('\0', "|"))
        .collect();
    assert!(
        texts.contains(&"@releaseDomain|plain|".to_string()),
        "{texts:?}"
    );
    assert!(
        texts.contains(&"@releaseDomain/5|depth|".to_string()),
        "{texts:?}"
    );
    assert!(
        texts.contains(&"/local/domain/5/data/x|node|".to_string()),
        "{texts:?}"
    );
    assert_eq!(texts.last().map(String::as_str), Some("OK|"));
    assert_eq!(t.ok(DOM0, MsgType::IsDomainIntroduced, &z(&["5"])), b"F\0");
    assert_eq!(
        t.req(DOM0, MsgType::Read, &z(&["/local/domain/5"])),
        Err("ENOENT".into())
    );
    assert_eq!(t.perms("/shared"), "n0|r6|");
    assert!(t.s.domain(5).is_none());
    assert_eq!(t.s.recount(), 0);
}

#[test]
fn case_100_shutdown_events_once_until_resume() {
    let mut t = T::new();
    let _g = t.guest(5);
    t.watch(DOM0, &["@releaseDomain/5", "one"]);
    assert_eq!(t.s.domain_shutdown(5).len(), 1);
    assert!(t.s.domain_shutdown(5).is_empty());
    t.ok(DOM0, MsgType::Resume, &z(&["5"]));
    assert_eq!(t.s.domain_shutdown(5).len(), 1);
}

#[test]
fn cases_101_102_features() {
    let mut t = T::new();
    let g = t.guest(5);
    assert_eq!(t.ok(g, MsgType::GetFeature, b""), b"14\0");
    assert_eq!(
        t.req(g, MsgType::GetFeature, &z(&["5"])),
        Err("EACCES".into())
    );
    assert_eq!(
        t.req(DOM0, MsgType::SetFeature, &z(&["5", "14"])),
        Err("EBUSY".into())
    );
    assert_eq!(
        t.req(DOM0, MsgType::SetFeature, &z(&["9", "16"])),
        Err("EINVAL".into())
    );
    assert_eq!(
        t.req(DOM0, MsgType::SetFeature, &z(&["999", "0"])),
        Err("ENOENT".into())
    );
}

#[test]
fn case_104_per_domain_node_quota() {
    let mut t = T::new();
    let g = t.guest(5);
    // The home node (owned by 5) counts: 3 nodes means two more.
    t.ok(DOM0, MsgType::SetQuota, &z(&["5", "nodes", "3"]));
    assert!(t.write(g, "a", "").is_ok());
    assert!(t.write(g, "b", "").is_ok());
    assert_eq!(t.write(g, "c", ""), Err("ENOSPC".into()));
    assert_eq!(t.req(g, MsgType::Read, &z(&["c"])), Err("ENOENT".into()));
    // The global value applies to domains made later only.
    t.ok(DOM0, MsgType::SetQuota, &z(&["nodes", "2"]));
    assert_eq!(t.ok(DOM0, MsgType::GetQuota, &z(&["5", "nodes"])), b"3\0");
}

#[test]
fn case_106_node_size_quota() {
    let mut t = T::new();
    let g = t.guest(5);
    assert_eq!(t.write(g, "big", &"x".repeat(2100)), Err("ENOSPC".into()));
    assert!(t.write(g, "ok", &"x".repeat(1000)).is_ok());
    assert!(t.write(DOM0, "/dom0big", &"x".repeat(4000)).is_ok());
}

#[test]
fn case_107_node_count_quota() {
    let mut t = T::new();
    let g = t.guest(5);
    // Spread over directories: one directory with hundreds of children
    // would first overflow its own record (node-size).
    let mut refused = None;
    for i in 0..2000 {
        if let Err(e) = t.write(g, &format!("g{}/n{}", i / 40, i % 40), "") {
            refused = Some((i, e));
            break;
        }
    }
    let (i, e) = refused.expect("the quota refused a write");
    assert_eq!(e, "ENOSPC");
    let nodes = |t: &T| {
        t.s.domain(5)
            .map(|d| d.usage.get(xenstore_store::quota::Quota::Nodes))
    };
    assert_eq!(nodes(&t), Some(1000), "refused at write {i}");
    assert_eq!(
        t.req(g, MsgType::Read, &z(&[&format!("g{}/n{}", i / 40, i % 40)])),
        Err("ENOENT".into())
    );
    // Inside a transaction the quota is checked at the latest at commit.
    let tx: u32 = String::from_utf8(t.ok(g, MsgType::TransactionStart, &z(&[""])))
        .expect("utf8")
        .trim_end_matches('\0')
        .parse()
        .expect("txid");
    let r = t.req_tx(g, MsgType::Write, tx, &w("n-tx", ""));
    let end = t.req_tx(g, MsgType::TransactionEnd, tx, &z(&["T"]));
    assert!(r.is_err() || end == Err("ENOSPC".into()), "{r:?} {end:?}");
    assert_eq!(t.req(g, MsgType::Read, &z(&["n-tx"])), Err("ENOENT".into()));
    assert_eq!(nodes(&t), Some(1000));
}

#[test]
fn transaction_nodes_quota_dooms_the_transaction() {
    let mut t = T::new();
    let g = t.guest(5);
    t.ok(
        DOM0,
        MsgType::SetQuota,
        &z(&["5", "transaction-nodes", "4"]),
    );
    let tx: u32 = String::from_utf8(t.ok(g, MsgType::TransactionStart, &z(&[""])))
        .expect("utf8")
        .trim_end_matches('\0')
        .parse()
        .expect("txid");
    let mut failed = false;
    for i in 0..10 {
        if t.req_tx(g, MsgType::Write, tx, &w(&format!("k{i}"), ""))
            .is_err()
        {
            failed = true;
            break;
        }
    }
    assert!(failed);
    assert_eq!(
        t.req_tx(g, MsgType::TransactionEnd, tx, &z(&["T"])),
        Err("ENOMEM".into())
    );
}
