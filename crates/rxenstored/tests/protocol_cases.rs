//! The conformance cases of the protocol digest (section 11) that need no
//! guest domain, over the raw protocol against the real daemon. Each test is
//! named after its case number. Cases that need a guest (18, 20, 45-54,
//! 56-57, 64, 69, 71, 73-74 domU side, 90, 97-98, 100-102, 104 and 106-107
//! domU parts) come with the hypervisor layer; the socket-only variants that
//! make sense are here.

mod common;
use common::{z, zs, Daemon};
use std::io::Read;
use std::time::Duration;
use xenstore_proto::{Header, Message, MsgType};

fn err(r: &common::Reply) -> String {
    r.error()
        .unwrap_or_else(|| format!("no error: {:?}", r.text()))
}

fn setup() -> (Daemon, common::Client) {
    let d = Daemon::start(&[]);
    let c = d.client();
    (d, c)
}

// ----- 11.1 framing and generic errors ---------------------------------

#[test]
fn case_01_02_03_unknown_types_enosys() {
    let (_d, mut c) = setup();
    for t in [20u32, 27, 0xFFFF, 15, 16, 1000] {
        let id = c.send(t, 0, b"/\0");
        let r = c.reply();
        assert_eq!(err(&r), "ENOSYS", "type {t}");
        assert_eq!(r.header.req_id, id);
        assert_eq!(r.header.msg_type, MsgType::Error as u32);
    }
    assert_eq!(c.read("/").ok(), b"");
}

#[test]
fn case_04_len_4097_closes_only_that_socket() {
    let (d, mut c) = setup();
    let mut other = d.client();
    let h = Header {
        msg_type: MsgType::Read as u32,
        req_id: 1,
        tx_id: 0,
        len: 4097,
    };
    c.send_raw(&h.to_bytes());
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut b = [0u8; 1];
    assert_eq!(c.stream().read(&mut b).expect("closed, not timed out"), 0);
    assert_eq!(other.write("/alive", b"1").ok(), b"OK\0");
}

#[test]
fn case_05_pipelined_replies_in_order() {
    let (_d, mut c) = setup();
    let mut batch = Vec::new();
    for id in [7u32, 8] {
        Message::new(MsgType::Read as u32, id, 0, z("/")).encode_into(&mut batch);
    }
    c.send_raw(&batch);
    assert_eq!(c.reply().header.req_id, 7);
    assert_eq!(c.reply().header.req_id, 8);
}

#[test]
fn case_05b_many_pipelined_and_split_requests() {
    let (_d, mut c) = setup();
    let mut batch = Vec::new();
    for id in 0..500u32 {
        let mut p = z(&format!("/pipe/k{id}"));
        p.extend_from_slice(id.to_string().as_bytes());
        Message::new(MsgType::Write as u32, id, 0, p).encode_into(&mut batch);
    }
    c.send_raw(&batch);
    for id in 0..500u32 {
        let r = c.reply();
        assert_eq!(r.header.req_id, id);
        assert_eq!(r.ok(), b"OK\0");
    }
    // One request dribbled byte by byte.
    let m = Message::new(MsgType::Read as u32, 9, 0, z("/pipe/k42")).encode();
    for b in m {
        c.send_raw(&[b]);
    }
    let r = c.reply();
    assert_eq!(r.header.req_id, 9);
    assert_eq!(r.ok(), b"42");
}

#[test]
fn case_06_req_id_echoed() {
    let (_d, mut c) = setup();
    c.send_raw(&Message::new(MsgType::Read as u32, 0xDEAD_BEEF, 0, z("/")).encode());
    let r = c.reply();
    assert_eq!(r.header.req_id, 0xDEAD_BEEF);
    assert_eq!(r.header.tx_id, 0);
    assert_eq!(r.header.msg_type, MsgType::Read as u32);
}

#[test]
fn case_07_unknown_tx_id_enoent() {
    let (_d, mut c) = setup();
    let r = c.req_tx(MsgType::Read, 12345, &z("/"));
    assert_eq!(err(&r), "ENOENT");
    assert_eq!(r.header.tx_id, 12345);
}

#[test]
fn case_08_error_reply_format() {
    let (_d, mut c) = setup();
    let r = c.read("/does/not/exist");
    assert_eq!(r.header.msg_type, MsgType::Error as u32);
    assert_eq!(r.payload, b"ENOENT\0");
}

// ----- 11.2 paths -------------------------------------------------------

#[test]
fn case_09_to_15_malformed_paths_einval() {
    let (_d, mut c) = setup();
    let bad: [&[u8]; 12] = [
        b"",
        b"/a",
        b"/a\0/b\0",
        b"\0",
        b"/a/\0",
        b"//a\0",
        b"/a//b\0",
        b"/a b\0",
        b"/a.b\0",
        b"/a:b\0",
        "/\u{e4}\0".as_bytes(),
        b"a/\0",
    ];
    for p in bad {
        let r = c.req(MsgType::Read, p);
        assert_eq!(err(&r), "EINVAL", "{p:?}");
    }
}

#[test]
fn case_16_valid_special_characters() {
    let (_d, mut c) = setup();
    assert_eq!(c.write("/a@b_c-D9", b"x").ok(), b"OK\0");
    assert_eq!(c.read("/a@b_c-D9").ok(), b"x");
}

#[test]
fn case_17_read_root() {
    let (_d, mut c) = setup();
    assert_eq!(c.read("/").ok(), b"");
}

#[test]
fn case_19_relative_path_from_socket() {
    let (_d, mut c) = setup();
    assert_eq!(c.write("xenstore-test/1", b"").ok(), b"OK\0");
    assert_eq!(c.read("/local/domain/0/xenstore-test/1").ok(), b"");
}

#[test]
fn case_21_22_special_paths_only_for_watch_and_perms() {
    let (_d, mut c) = setup();
    assert_eq!(err(&c.read("@releaseDomain")), "EINVAL");
    assert_eq!(err(&c.write("@foo", b"x")), "EINVAL");
    for t in [MsgType::Mkdir, MsgType::Rm, MsgType::Directory] {
        assert_eq!(err(&c.req(t, &z("@foo"))), "EINVAL", "{t:?}");
    }
    assert_eq!(
        err(&c.req(MsgType::DirectoryPart, &zs(&["@foo", "0"]))),
        "EINVAL"
    );
}

// ----- 11.3 data operations ---------------------------------------------

#[test]
fn case_23_implicit_parents() {
    let (_d, mut c) = setup();
    assert_eq!(c.write("/t/a/b/c", b"v").ok(), b"OK\0");
    assert_eq!(c.read("/t").ok(), b"");
    assert_eq!(c.read("/t/a/b").ok(), b"");
    assert_eq!(c.req(MsgType::Directory, &z("/t/a")).ok(), b"b\0");
}

#[test]
fn case_24_25_binary_and_empty_values() {
    let (_d, mut c) = setup();
    assert_eq!(c.write("/t/bin", &[0, 1, 0]).ok(), b"OK\0");
    assert_eq!(c.read("/t/bin").ok(), &[0, 1, 0]);
    assert_eq!(c.write("/t/e", b"").ok(), b"OK\0");
    assert_eq!(c.read("/t/e").ok(), b"");
}

#[test]
fn case_26_write_without_nul() {
    let (_d, mut c) = setup();
    assert_eq!(err(&c.req(MsgType::Write, b"/t/x")), "EINVAL");
}

#[test]
fn case_27_mkdir_existing_no_change_no_event() {
    let (d, mut c) = setup();
    c.write("/t/a", b"keep").ok();
    let mut w = d.client();
    w.req(MsgType::Watch, &zs(&["/t", "tok"])).ok();
    assert_eq!(w.next_event(2000), Some(("/t".into(), "tok".into())));
    assert_eq!(c.req(MsgType::Mkdir, &z("/t/a")).ok(), b"OK\0");
    assert_eq!(c.read("/t/a").ok(), b"keep");
    assert_eq!(w.next_event(200), None);
}

#[test]
fn case_28_mkdir_new() {
    let (_d, mut c) = setup();
    assert_eq!(c.req(MsgType::Mkdir, &z("/t/new/deep")).ok(), b"OK\0");
    assert_eq!(c.read("/t/new").ok(), b"");
    assert_eq!(c.read("/t/new/deep").ok(), b"");
}

#[test]
fn case_29_30_rm_missing() {
    let (d, mut c) = setup();
    c.write("/t/x", b"").ok();
    let mut w = d.client();
    w.req(MsgType::Watch, &zs(&["/t", "tok"])).ok();
    w.next_event(2000);
    assert_eq!(c.req(MsgType::Rm, &z("/t/missing")).ok(), b"OK\0");
    assert_eq!(err(&c.req(MsgType::Rm, &z("/t/missing/child"))), "ENOENT");
    assert_eq!(w.next_event(200), None);
}

#[test]
fn case_31_rm_subtree() {
    let (_d, mut c) = setup();
    c.write("/t/a/b/c", b"v").ok();
    c.write("/t/z", b"v").ok();
    assert_eq!(c.req(MsgType::Rm, &z("/t/a")).ok(), b"OK\0");
    for p in ["/t/a", "/t/a/b", "/t/a/b/c"] {
        assert_eq!(err(&c.read(p)), "ENOENT", "{p}");
    }
    assert_eq!(c.req(MsgType::Directory, &z("/t")).ok(), b"z\0");
}

#[test]
fn case_32_rm_root_einval() {
    let (_d, mut c) = setup();
    assert_eq!(err(&c.req(MsgType::Rm, &z("/"))), "EINVAL");
    assert_eq!(c.req(MsgType::Directory, &z("/")).ok(), b"local\0tool\0");
}

#[test]
fn case_33_34_directory_empty_and_creation_order() {
    let (_d, mut c) = setup();
    c.write("/o/2/foo", b"").ok();
    c.write("/o/1", b"").ok();
    c.write("/o/3", b"").ok();
    assert_eq!(c.req(MsgType::Directory, &z("/o")).ok(), b"2\x001\x003\0");
    assert_eq!(c.req(MsgType::Directory, &z("/o/1")).ok(), b"");
    // Deleting and re-creating appends at the end.
    c.req(MsgType::Rm, &z("/o/2")).ok();
    c.write("/o/2", b"").ok();
    assert_eq!(c.req(MsgType::Directory, &z("/o")).ok(), b"1\x003\x002\0");
}

fn big_dir(c: &mut common::Client) -> Vec<u8> {
    let mut expected = Vec::new();
    let mut batch = Vec::new();
    for i in 0..500 {
        let name = format!("child{i:05}");
        expected.extend_from_slice(name.as_bytes());
        expected.push(0);
        Message::new(MsgType::Write as u32, i, 0, z(&format!("/big/{name}")))
            .encode_into(&mut batch);
    }
    c.send_raw(&batch);
    for _ in 0..500 {
        c.reply().ok();
    }
    expected
}

#[test]
fn case_35_to_38_directory_part() {
    let (_d, mut c) = setup();
    let expected = big_dir(&mut c);
    assert!(expected.len() > 4096);
    assert_eq!(err(&c.req(MsgType::Directory, &z("/big"))), "E2BIG");
    // Chunks, as libxenstore fetches them.
    let mut got = Vec::new();
    let mut gen = None;
    let mut off = 0usize;
    loop {
        let r = c.req(MsgType::DirectoryPart, &zs(&["/big", &off.to_string()]));
        let p = r.ok().to_vec();
        assert!(p.len() <= 4096);
        let nul = p.iter().position(|&b| b == 0).expect("gen");
        let g = p[..nul].to_vec();
        assert!(gen.as_ref().is_none_or(|x| *x == g), "gen changed");
        gen = Some(g);
        let chunk = &p[nul + 1..];
        if chunk.ends_with(b"\0\0") || chunk == b"\0" {
            got.extend_from_slice(&chunk[..chunk.len() - 1]);
            break;
        }
        assert!(chunk.len() <= 4096 - nul - 2);
        off += chunk.len();
        got.extend_from_slice(chunk);
    }
    assert_eq!(got, expected);
    // Past the end, and an empty node.
    let r = c.req(MsgType::DirectoryPart, &zs(&["/big", "999999"]));
    assert!(r.ok().ends_with(b"\0\0"));
    assert_eq!(r.ok().iter().filter(|&&b| b == 0).count(), 2);
    c.write("/empty", b"").ok();
    let r = c.req(MsgType::DirectoryPart, &zs(&["/empty", "0"]));
    assert!(r.ok().ends_with(b"\0\0"));
}

#[test]
fn case_39_40_directory_part_args_and_generation() {
    let (_d, mut c) = setup();
    big_dir(&mut c);
    assert_eq!(err(&c.req(MsgType::DirectoryPart, &z("/big"))), "EINVAL");
    let first = c
        .req(MsgType::DirectoryPart, &zs(&["/big", "0"]))
        .ok()
        .to_vec();
    let gen1 = first.split(|&b| b == 0).next().expect("gen").to_vec();
    c.write("/big/newchild", b"").ok();
    let second = c
        .req(MsgType::DirectoryPart, &zs(&["/big", "100"]))
        .ok()
        .to_vec();
    let gen2 = second.split(|&b| b == 0).next().expect("gen").to_vec();
    assert_ne!(gen1, gen2);
}

// ----- 11.4 permissions (dom0 side) -------------------------------------

#[test]
fn case_41_fresh_node_inherits_root_perms() {
    let (_d, mut c) = setup();
    c.write("/p", b"").ok();
    assert_eq!(c.req(MsgType::GetPerms, &z("/p")).ok(), b"n0\0");
}

#[test]
fn case_42_round_trip_with_existing_domain() {
    // Only dom0 exists without a hypervisor: round-trip with owner 0 and
    // ACL entries naming absent domains (kept and listed, but ignored).
    let (_d, mut c) = setup();
    c.write("/p", b"").ok();
    assert_eq!(
        c.req(MsgType::SetPerms, &zs(&["/p", "r0", "w2", "b3"]))
            .ok(),
        b"OK\0"
    );
    assert_eq!(c.req(MsgType::GetPerms, &z("/p")).ok(), b"r0\0w2\0b3\0");
}

#[test]
fn case_43_44_malformed_set_perms() {
    let (_d, mut c) = setup();
    c.write("/p", b"").ok();
    assert_eq!(err(&c.req(MsgType::SetPerms, &z("/p"))), "EINVAL");
    for bad in ["x5", "r", "r5x"] {
        assert_eq!(
            err(&c.req(MsgType::SetPerms, &zs(&["/p", bad]))),
            "EINVAL",
            "{bad}"
        );
    }
}

#[test]
fn case_55_owner_must_exist() {
    let (_d, mut c) = setup();
    c.write("/p", b"").ok();
    assert_eq!(
        err(&c.req(MsgType::SetPerms, &zs(&["/p", "n31000"]))),
        "ENOENT"
    );
    assert_eq!(c.req(MsgType::GetPerms, &z("/p")).ok(), b"n0\0");
}

#[test]
fn case_58_special_node_perms() {
    let (_d, mut c) = setup();
    assert_eq!(
        c.req(MsgType::GetPerms, &z("@releaseDomain")).ok(),
        b"n0\0r32757\0"
    );
    assert_eq!(
        c.req(MsgType::GetPerms, &z("@introduceDomain")).ok(),
        b"n0\0"
    );
}

// ----- 11.5 watches ------------------------------------------------------

#[test]
fn case_59_60_61_registration() {
    let (_d, mut c) = setup();
    assert_eq!(c.req(MsgType::Watch, &zs(&["/w", "tok"])).ok(), b"OK\0");
    let ev = c.read_message().expect("initial event");
    assert_eq!(ev.header.msg_type, MsgType::WatchEvent as u32);
    assert_eq!(ev.header.req_id, 0);
    assert_eq!(ev.payload, zs(&["/w", "tok"]));
    assert_eq!(err(&c.req(MsgType::Watch, &zs(&["/w", "tok"]))), "EEXIST");
    assert_eq!(c.req(MsgType::Watch, &zs(&["/w", "tok2"])).ok(), b"OK\0");
    assert_eq!(c.next_event(2000), Some(("/w".into(), "tok2".into())));
    assert_eq!(err(&c.req(MsgType::Watch, &z("/w"))), "EINVAL");
}

#[test]
fn case_62_63_matching() {
    let (d, mut c) = setup();
    let mut w = d.client();
    w.req(MsgType::Watch, &zs(&["/w", "tok"])).ok();
    w.req(MsgType::Watch, &zs(&["/w/a/b/c", "deep"])).ok();
    w.next_event(2000);
    w.next_event(2000);
    c.write("/w/a/b", b"x").ok();
    assert_eq!(w.next_event(2000), Some(("/w/a/b".into(), "tok".into())));
    c.write("/wx", b"1").ok();
    assert_eq!(w.next_event(300), None);
}

#[test]
fn case_65_subtree_removal_events() {
    let (d, mut c) = setup();
    c.write("/r/a/b/c", b"").ok();
    let mut w = d.client();
    w.req(MsgType::Watch, &zs(&["/r/a/b/c", "deep"])).ok();
    w.req(MsgType::Watch, &zs(&["/r", "top"])).ok();
    w.next_event(2000);
    w.next_event(2000);
    c.req(MsgType::Rm, &z("/r/a")).ok();
    let mut got = vec![
        w.next_event(2000).expect("ev"),
        w.next_event(2000).expect("ev"),
    ];
    got.sort();
    assert_eq!(
        got,
        [
            ("/r/a".into(), "top".into()),
            ("/r/a/b/c".into(), "deep".into())
        ]
    );
    assert_eq!(w.next_event(300), None);
}

#[test]
fn case_66_67_68_depth() {
    let (d, mut c) = setup();
    let mut w = d.client();
    w.req(MsgType::Watch, &zs(&["/d", "t0", "0"])).ok();
    w.next_event(2000);
    c.write("/d", b"1").ok();
    assert_eq!(w.next_event(2000), Some(("/d".into(), "t0".into())));
    c.write("/d/x", b"1").ok();
    assert_eq!(w.next_event(300), None);
    w.req(MsgType::Unwatch, &zs(&["/d", "t0"])).ok();
    w.req(MsgType::Watch, &zs(&["/d", "t1", "1"])).ok();
    w.next_event(2000);
    c.write("/d/x", b"2").ok();
    assert_eq!(w.next_event(2000), Some(("/d/x".into(), "t1".into())));
    c.write("/d/x/y", b"2").ok();
    assert_eq!(w.next_event(300), None);
    assert_eq!(
        err(&w.req(MsgType::Watch, &zs(&["/d", "t", "-1"]))),
        "EINVAL"
    );
}

#[test]
fn case_70_72_unwatch_errors() {
    let (_d, mut c) = setup();
    assert_eq!(
        err(&c.req(MsgType::Unwatch, &zs(&["/nope", "tok"]))),
        "ENOENT"
    );
    c.req(MsgType::Watch, &zs(&["/w", "tok"])).ok();
    c.next_event(2000);
    assert_eq!(
        err(&c.req(MsgType::Unwatch, &zs(&["/w", "tok", "1"]))),
        "EINVAL"
    );
    assert_eq!(c.req(MsgType::Unwatch, &zs(&["/w", "tok"])).ok(), b"OK\0");
}

#[test]
fn case_71_socket_relative_and_absolute_name_one_watch() {
    let (_d, mut c) = setup();
    c.req(MsgType::Watch, &zs(&["data", "t"])).ok();
    assert_eq!(c.next_event(2000), Some(("data".into(), "t".into())));
    c.write("/local/domain/0/data/k", b"1").ok();
    assert_eq!(c.next_event(2000), Some(("data/k".into(), "t".into())));
    assert_eq!(
        c.req(MsgType::Unwatch, &zs(&["/local/domain/0/data", "t"]))
            .ok(),
        b"OK\0"
    );
    c.write("/local/domain/0/data/k", b"2").ok();
    assert_eq!(c.next_event(300), None);
}

#[test]
fn case_75_76_same_value_fires_reads_do_not() {
    let (d, mut c) = setup();
    c.write("/w", b"v").ok();
    let mut w = d.client();
    w.req(MsgType::Watch, &zs(&["/w", "tok"])).ok();
    w.next_event(2000);
    c.write("/w", b"v").ok();
    assert_eq!(w.next_event(2000), Some(("/w".into(), "tok".into())));
    c.read("/w").ok();
    c.req(MsgType::Directory, &z("/w")).ok();
    c.req(MsgType::GetPerms, &z("/w")).ok();
    assert_eq!(w.next_event(300), None);
}

#[test]
fn case_77_watch_ignores_tx_id() {
    let (_d, mut c) = setup();
    let r = c.req_tx(MsgType::Watch, 999, &zs(&["/w", "tok"]));
    assert_eq!(r.ok(), b"OK\0");
    assert_eq!(r.header.tx_id, 999);
}

#[test]
fn case_78_reset_watches() {
    let (d, mut c) = setup();
    let mut w = d.client();
    w.req(MsgType::Watch, &zs(&["/w", "tok"])).ok();
    w.next_event(2000);
    let tx = w.req(MsgType::TransactionStart, &z("")).text();
    let tx: u32 = tx.trim_end_matches('\0').parse().expect("txid");
    assert_eq!(w.req(MsgType::ResetWatches, &z("")).ok(), b"OK\0");
    c.write("/w", b"x").ok();
    assert_eq!(w.next_event(300), None);
    assert_eq!(err(&w.req_tx(MsgType::Read, tx, &z("/w"))), "ENOENT");
}

#[test]
fn case_79_oversized_event_dropped() {
    let (_d, mut c) = setup();
    let path = format!("/{}", "a".repeat(2000));
    let token = "t".repeat(2090);
    assert_eq!(c.req(MsgType::Watch, &zs(&[&path, &token])).ok(), b"OK\0");
    // The initial event fits (2001 + 2090 + 2 bytes).
    assert_eq!(c.next_event(2000), Some((path.clone(), token.clone())));
    // An event for a descendant would not: it is dropped, nothing else.
    c.write(&format!("{path}/cccccccccc"), b"v").ok();
    assert_eq!(c.next_event(300), None);
    c.write(&path, b"v").ok();
    assert_eq!(c.next_event(2000), Some((path, token)));
}

// ----- 11.6 transactions ---------------------------------------------------

fn start(c: &mut common::Client) -> u32 {
    let r = c.req(MsgType::TransactionStart, &z(""));
    r.text().trim_end_matches('\0').parse().expect("txid")
}

#[test]
fn case_80_81_start_and_nesting() {
    let (_d, mut c) = setup();
    let tx = start(&mut c);
    assert!(tx >= 1);
    assert_eq!(
        err(&c.req_tx(MsgType::TransactionStart, tx, &z(""))),
        "EBUSY"
    );
}

#[test]
fn case_82_isolation() {
    let (_d, mut c) = setup();
    let tx = start(&mut c);
    let mut p = z("/tx/a");
    p.push(b'1');
    assert_eq!(c.req_tx(MsgType::Write, tx, &p).ok(), b"OK\0");
    assert_eq!(err(&c.read("/tx/a")), "ENOENT");
    assert_eq!(c.req_tx(MsgType::Read, tx, &z("/tx/a")).ok(), b"1");
    assert_eq!(c.req_tx(MsgType::TransactionEnd, tx, &z("T")).ok(), b"OK\0");
    assert_eq!(c.read("/tx/a").ok(), b"1");
}

#[test]
fn case_83_abort() {
    let (d, mut c) = setup();
    let mut w = d.client();
    w.req(MsgType::Watch, &zs(&["/tx", "tok"])).ok();
    w.next_event(2000);
    let tx = start(&mut c);
    let mut p = z("/tx/b");
    p.push(b'1');
    c.req_tx(MsgType::Write, tx, &p).ok();
    assert_eq!(c.req_tx(MsgType::TransactionEnd, tx, &z("F")).ok(), b"OK\0");
    assert_eq!(err(&c.read("/tx/b")), "ENOENT");
    assert_eq!(w.next_event(300), None);
}

#[test]
fn case_84_85_conflict() {
    let (d, mut c) = setup();
    let mut other = d.client();
    c.write("/x", b"a").ok();
    let tx = start(&mut c);
    assert_eq!(c.req_tx(MsgType::Read, tx, &z("/x")).ok(), b"a");
    other.write("/x", b"b").ok();
    assert_eq!(c.req_tx(MsgType::Read, tx, &z("/x")).ok(), b"a");
    let mut p = z("/x");
    p.push(b'c');
    c.req_tx(MsgType::Write, tx, &p).ok();
    assert_eq!(c.req_tx(MsgType::Read, tx, &z("/x")).ok(), b"c");
    assert_eq!(
        err(&c.req_tx(MsgType::TransactionEnd, tx, &z("T"))),
        "EAGAIN"
    );
    assert_eq!(c.read("/x").ok(), b"b");
    assert_eq!(
        err(&c.req_tx(MsgType::TransactionEnd, tx, &z("T"))),
        "ENOENT"
    );
}

#[test]
fn case_86_events_at_commit_before_reply() {
    let (_d, mut c) = setup();
    c.req(MsgType::Watch, &zs(&["/tx", "tok"])).ok();
    c.next_event(2000);
    let tx = start(&mut c);
    c.req_tx(MsgType::Write, tx, &z("/tx/c")).ok();
    assert_eq!(c.next_event(300), None);
    c.send(MsgType::TransactionEnd as u32, tx, &z("T"));
    let first = c.read_message().expect("event");
    assert_eq!(first.header.msg_type, MsgType::WatchEvent as u32);
    assert_eq!(first.payload, zs(&["/tx/c", "tok"]));
    let second = c.read_message().expect("reply");
    assert_eq!(second.header.msg_type, MsgType::TransactionEnd as u32);
}

#[test]
fn case_87_88_bad_end() {
    let (_d, mut c) = setup();
    let tx = start(&mut c);
    assert_eq!(
        err(&c.req_tx(MsgType::TransactionEnd, tx, &z("X"))),
        "EINVAL"
    );
    assert_eq!(err(&c.req_tx(MsgType::TransactionEnd, tx, b"")), "EINVAL");
    assert_eq!(err(&c.req(MsgType::TransactionEnd, &z("T"))), "ENOENT");
    assert_eq!(c.req_tx(MsgType::TransactionEnd, tx, &z("F")).ok(), b"OK\0");
}

#[test]
fn case_89_foreign_transaction() {
    let (d, mut a) = setup();
    let mut b = d.client();
    let tx = start(&mut b);
    assert_eq!(err(&a.req_tx(MsgType::Read, tx, &z("/"))), "ENOENT");
}

#[test]
fn case_91_read_only_transaction_conflict() {
    let (d, mut c) = setup();
    let mut other = d.client();
    c.write("/x", b"a").ok();
    let tx = start(&mut c);
    c.req_tx(MsgType::Read, tx, &z("/x")).ok();
    other.write("/x", b"b").ok();
    assert_eq!(
        err(&c.req_tx(MsgType::TransactionEnd, tx, &z("T"))),
        "EAGAIN"
    );
}

// ----- 11.7 domain management and misc (socket-only variants) ----------

#[test]
fn case_93_get_domain_path() {
    let (_d, mut c) = setup();
    assert_eq!(
        c.req(MsgType::GetDomainPath, &z("7")).ok(),
        b"/local/domain/7\0"
    );
    assert_eq!(err(&c.req(MsgType::GetDomainPath, &z("70000"))), "EINVAL");
    assert_eq!(err(&c.req(MsgType::GetDomainPath, &z("abc"))), "EINVAL");
}

#[test]
fn case_94_is_domain_introduced() {
    let (_d, mut c) = setup();
    assert_eq!(c.req(MsgType::IsDomainIntroduced, &z("32752")).ok(), b"T\0");
    assert_eq!(c.req(MsgType::IsDomainIntroduced, &z("0")).ok(), b"T\0");
    assert_eq!(c.req(MsgType::IsDomainIntroduced, &z("17")).ok(), b"F\0");
    assert_eq!(err(&c.req(MsgType::IsDomainIntroduced, &z("x"))), "EINVAL");
}

#[test]
fn case_95_96_introduce_argument_errors() {
    let (_d, mut c) = setup();
    assert_eq!(
        err(&c.req(MsgType::Introduce, &zs(&["5", "123", "0"]))),
        "EINVAL"
    );
    assert_eq!(
        err(&c.req(MsgType::Introduce, &zs(&["5", "123"]))),
        "EINVAL"
    );
    assert_eq!(
        err(&c.req(MsgType::Introduce, &zs(&["x", "123", "4"]))),
        "EINVAL"
    );
    // A valid request cannot map a ring without a hypervisor.
    assert_eq!(
        err(&c.req(MsgType::Introduce, &zs(&["5", "123", "4"]))),
        "EINVAL"
    );
    assert_eq!(c.req(MsgType::IsDomainIntroduced, &z("5")).ok(), b"F\0");
}

#[test]
fn case_99_release_unknown_and_dom0() {
    let (_d, mut c) = setup();
    assert_eq!(err(&c.req(MsgType::Release, &z("4242"))), "ENOENT");
    assert_eq!(err(&c.req(MsgType::Release, &z("0"))), "EINVAL");
    assert_eq!(err(&c.req(MsgType::Resume, &z("4242"))), "ENOENT");
    assert_eq!(err(&c.req(MsgType::Resume, &z("0"))), "EINVAL");
    assert_eq!(err(&c.req(MsgType::SetTarget, &zs(&["7", "5"]))), "ENOENT");
}

#[test]
fn case_101_102_features() {
    let (_d, mut c) = setup();
    assert_eq!(c.req(MsgType::GetFeature, b"").ok(), b"14\0");
    assert_eq!(c.req(MsgType::GetFeature, &z("0")).ok(), b"14\0");
    assert_eq!(err(&c.req(MsgType::GetFeature, &z("4242"))), "ENOENT");
    assert_eq!(err(&c.req(MsgType::SetFeature, &zs(&["0", "14"]))), "EBUSY");
    assert_eq!(
        err(&c.req(MsgType::SetFeature, &zs(&["9", "16"]))),
        "ENOENT"
    );
}

#[test]
fn case_103_104_quotas() {
    let (_d, mut c) = setup();
    assert_eq!(
        c.req(MsgType::GetQuota, b"").ok(),
        &z("nodes watches outstanding memory soft-memory transactions transaction-nodes node-permissions path-max node-size")[..]
    );
    assert_eq!(c.req(MsgType::GetQuota, &z("nodes")).ok(), b"1000\0");
    assert_eq!(err(&c.req(MsgType::GetQuota, &z("soft-nodes"))), "EINVAL");
    assert_eq!(
        c.req(MsgType::GetQuota, &zs(&["0", "nodes"])).ok(),
        b"1000\0"
    );
    assert_eq!(
        err(&c.req(MsgType::GetQuota, &zs(&["4242", "nodes"]))),
        "ENOENT"
    );
    assert_eq!(
        err(&c.req(MsgType::GetQuota, &zs(&["0", "nodes", "x"]))),
        "EINVAL"
    );
    assert_eq!(c.req(MsgType::SetQuota, &zs(&["nodes", "5"])).ok(), b"OK\0");
    assert_eq!(c.req(MsgType::GetQuota, &z("nodes")).ok(), b"5\0");
    // Domains made before keep their value.
    assert_eq!(
        c.req(MsgType::GetQuota, &zs(&["0", "nodes"])).ok(),
        b"1000\0"
    );
    assert_eq!(
        err(&c.req(MsgType::SetQuota, &zs(&["nodes", "-1"]))),
        "EINVAL"
    );
    assert_eq!(
        err(&c.req(MsgType::SetQuota, &zs(&["bogus", "1"]))),
        "EINVAL"
    );
}

#[test]
fn case_105_control() {
    let (_d, mut c) = setup();
    let help = c.req(MsgType::Control, &z("help")).ok().to_vec();
    assert!(help.ends_with(b"\n\0"));
    let help = String::from_utf8_lossy(&help);
    for cmd in [
        "check",
        "log",
        "logfile",
        "memreport",
        "print",
        "quota",
        "quota-soft",
        "live-update",
        "help",
    ] {
        assert!(
            help.lines().any(|l| l.starts_with(cmd)),
            "{cmd} missing:\n{help}"
        );
    }
    assert_eq!(err(&c.req(MsgType::Control, &z("bogus"))), "EINVAL");
    // live-update needs arguments (tests/live_update.rs has the rest).
    assert_eq!(err(&c.req(MsgType::Control, &z("live-update"))), "EINVAL");
    assert_eq!(c.req(MsgType::Control, &z("check")).ok(), b"OK\0");
    assert_eq!(
        c.req(MsgType::Control, &zs(&["print", "hello"])).ok(),
        b"OK\0"
    );
    let q = c.req(MsgType::Control, &z("quota")).text();
    assert!(
        q.starts_with("Quota settings:\n") && q.contains("nodes            :     1000"),
        "{q}"
    );
    let q = c.req(MsgType::Control, &zs(&["quota", "0"])).text();
    assert!(q.starts_with("Domain 0:\n"), "{q}");
    assert_eq!(
        err(&c.req(MsgType::Control, &zs(&["quota", "4242"]))),
        "ENOENT"
    );
    // `quota set` reads its value as C's atoi into an int: a value beyond
    // INT_MAX is refused, not stored saturated (issue 8).
    for bad in ["99999999999999999999", "2147483648", "0", "-5", "x"] {
        assert_eq!(
            err(&c.req(MsgType::Control, &zs(&["quota", "set", "nodes", bad]))),
            "EINVAL",
            "{bad}"
        );
    }
    assert_eq!(
        c.req(
            MsgType::Control,
            &zs(&["quota", "set", "nodes", "2147483647"])
        )
        .ok(),
        b"OK\0"
    );
    let q = c.req(MsgType::Control, &z("quota")).text();
    assert!(q.contains("2147483647"), "{q}");
    let m = c.req(MsgType::Control, &z("memreport")).text();
    assert!(m.contains("domid"), "{m}");
    let l = c.req(MsgType::Control, &z("log")).text();
    assert!(
        l.starts_with("Log switch settings:\n") && l.contains("io      : on"),
        "{l}"
    );
}

#[test]
fn case_106_dom0_large_value() {
    let (_d, mut c) = setup();
    let v = vec![b'x'; 4000];
    assert_eq!(c.write("/big", &v).ok(), b"OK\0");
    assert_eq!(c.read("/big").ok(), &v[..]);
}
