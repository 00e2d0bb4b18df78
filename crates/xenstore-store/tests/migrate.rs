//! The store through Xen's migration stream and back (a live update's
//! engine part): nodes with values, permissions and child order, watches
//! (relative, with depth, on special paths), domain features and quotas,
//! and the accounting recounted from what came back.

mod common;
use common::{z, Hyp, DOM0, T};
use xenstore_migrate as mig;
use xenstore_proto::MsgType;
use xenstore_store::migrate::RestoreError;
use xenstore_store::quota::Quota;
use xenstore_store::{ConnId, ConnKind, Store, StoreConfig};

fn through_the_stream(s: &Store, conns: &[(ConnId, u32)], version: mig::Version) -> mig::Stream {
    let header = mig::StreamHeader {
        version,
        endian: mig::Endian::Little,
    };
    let mut w = mig::Writer::new(Vec::new(), header).expect("writer");
    w.write_record(&mig::Record::Global(mig::Global {
        socket_fd: 3,
        evtchn_fd: -1,
    }))
    .expect("global");
    for (i, (c, domid)) in conns.iter().enumerate() {
        let id = i as u32 + 1;
        let kind = if *domid == 0 {
            mig::ConnKind::Socket { fd: 10 + id as i32 }
        } else {
            mig::ConnKind::Ring {
                domid: *domid as u16,
                target: None,
                evtchn: 7,
            }
        };
        w.write_record(&mig::Record::Connection(mig::Connection {
            conn_id: id,
            kind,
            input: mig::Input::default(),
            output: mig::Output::default(),
            unique_id: None,
        }))
        .expect("conn");
        for wr in s.watch_records(*c, id) {
            w.write_record(&mig::Record::Watch(wr)).expect("watch");
        }
    }
    // Written straight from the tree; the same bytes as the records built
    // one by one.
    let mut copied = mig::Writer::new(Vec::new(), header).expect("writer");
    for n in s.node_records() {
        copied.write_record(&mig::Record::Node(n)).expect("node");
    }
    let mut direct = mig::Writer::new(Vec::new(), header).expect("writer");
    let count = s.write_node_records(&mut direct, |d| d).expect("nodes");
    assert_eq!(count, s.db().len());
    assert_eq!(direct.finish().expect("end"), copied.finish().expect("end"));
    s.write_node_records(&mut w, |d| d).expect("nodes");
    if version == mig::Version::V2 {
        for d in s.domain_records() {
            w.write_record(&mig::Record::Domain(d)).expect("domain");
        }
    }
    let bytes = w.finish().expect("finish");
    mig::Stream::read(&bytes).expect("read back")
}

fn tree(s: &Store) -> Vec<(String, String, String, Vec<String>)> {
    let mut v: Vec<_> = s
        .db()
        .iter()
        .map(|(p, n)| {
            (
                p.to_string(),
                format!("{:?}", String::from_utf8_lossy(n.value())),
                n.perms().to_string(),
                n.child_names().map(str::to_string).collect(),
            )
        })
        .collect();
    v.sort();
    v
}

fn watches(s: &Store) -> Vec<String> {
    let mut v: Vec<String> = s
        .watches()
        .iter()
        .map(|(_, w)| {
            format!(
                "{} {} {} {} {:?} {}",
                w.conn.0,
                w.given(),
                w.canonical,
                w.token,
                w.depth,
                w.relative
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_store_comes_back_whole_in_both_versions() {
    for version in [mig::Version::V1, mig::Version::V2] {
        let mut t = T::new();
        let g = t.guest(5);
        // A tree with every kind of node: deep, wide (past the small child
        // list), binary values, ACLs, a node the guest owns.
        for i in 0..20 {
            t.ok(
                DOM0,
                MsgType::Write,
                &[&z(&[&format!("/wide/c{}", 19 - i)])[..], b"v"].concat(),
            );
        }
        let deep: String = (0..30).map(|i| format!("/d{i}")).collect();
        t.ok(
            DOM0,
            MsgType::Write,
            &[&z(&[&deep])[..], &[0, 1, 2, 255]].concat(),
        );
        t.ok(DOM0, MsgType::SetPerms, &z(&["/wide", "n0", "r5", "b7"]));
        t.ok(g, MsgType::Write, &[&z(&["data/x"])[..], b"guest"].concat());
        t.ok(DOM0, MsgType::SetPerms, &z(&["@releaseDomain", "n0", "r5"]));
        // Watches: absolute, relative, special, with a depth.
        t.ok(DOM0, MsgType::Watch, &z(&["/wide", "w1"]));
        t.ok(g, MsgType::Watch, &z(&["data", "rel"]));
        t.ok(g, MsgType::Watch, &z(&["@releaseDomain", "sp"]));
        // A depth needs version 2 (WATCH_DATA_EXTENDED).
        if version == mig::Version::V2 {
            t.ok(DOM0, MsgType::Watch, &z(&["/d0", "deep", "2"]));
        }
        // A domain quota of its own.
        t.ok(DOM0, MsgType::SetQuota, &z(&["5", "nodes", "77"]));

        let stream = through_the_stream(&t.s, &[(DOM0, 0), (g, 5)], version);
        let mut back = Store::new(StoreConfig::default());
        back.connect(DOM0, ConnKind::Socket);
        back.connect(g, ConnKind::Domain(5));
        back.introduce_domain(5, g);
        let nodes: Vec<mig::Node> = stream
            .records
            .iter()
            .filter_map(|r| match r {
                mig::Record::Node(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        back.restore_nodes(&nodes).expect("nodes");
        let ids = [DOM0, g];
        for r in &stream.records {
            match r {
                mig::Record::Watch(w) => back
                    .restore_watch(ids[w.conn_id as usize - 1], w)
                    .expect("watch"),
                mig::Record::Domain(d) => back.restore_domain(d),
                _ => {}
            }
        }
        assert_eq!(tree(&back), tree(&t.s), "{version:?}");
        assert_eq!(watches(&back), watches(&t.s), "{version:?}");
        let usage = |s: &Store| {
            s.domain(5)
                .map(|d| (d.usage.get(Quota::Nodes), d.usage.get(Quota::Watches)))
        };
        assert_eq!(usage(&back), usage(&t.s), "{version:?}");
        if version == mig::Version::V2 {
            assert_eq!(back.domain(5).map(|d| d.quota.get(Quota::Nodes)), Some(77));
        }
        // Consistent, and working: the restored watch fires.
        assert!(back.check().is_empty(), "{:?}", back.check());
        let out = back.handle(
            DOM0,
            &xenstore_proto::Message::new(
                MsgType::Write as u32,
                1,
                0,
                [&z(&["/wide/new"])[..], b"1"].concat(),
            ),
            &Hyp,
        );
        assert!(out
            .out
            .iter()
            .any(|(c, m)| *c == DOM0 && m.kind() == Some(MsgType::WatchEvent)));
    }
}

#[test]
fn a_node_before_its_parent_or_without_a_root_is_refused() {
    let node = |p: &str| mig::Node {
        path: p.as_bytes().to_vec(),
        transaction: None,
        value: Vec::new(),
        perms: vec![mig::Perm {
            access: mig::PermAccess::None,
            stale: false,
            domid: 0,
        }],
    };
    let mut s = Store::new(StoreConfig::default());
    let before = tree(&s);
    assert_eq!(
        s.restore_nodes(&[node("/"), node("/a/b"), node("/a")]),
        Err(RestoreError::Orphan("/a/b".into()))
    );
    assert_eq!(
        s.restore_nodes(&[node("/a")]),
        Err(RestoreError::Orphan("/a".into()))
    );
    assert_eq!(s.restore_nodes(&[node("@x")]), Err(RestoreError::NoRoot));
    assert!(matches!(
        s.restore_nodes(&[node("/"), node("/a//b")]),
        Err(RestoreError::BadPath(_))
    ));
    assert_eq!(tree(&s), before, "a refused stream changes nothing");
    // Special nodes the stream lacks keep their defaults.
    s.restore_nodes(&[node("/"), node("/a")]).expect("minimal");
    assert!(s.db().get("@releaseDomain").is_some());
    assert!(s.db().get("@introduceDomain").is_some());
}
