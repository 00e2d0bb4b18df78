//! Memory accounting against a hostile guest, at the engine level: what a
//! guest makes the store hold must be charged to its memory quota, and
//! refused once the quota is reached.

mod common;
use common::{z, DOM0, T};
use xenstore_proto::MsgType;
use xenstore_store::quota::Quota;
use xenstore_store::ConnId;

fn w(path: &str, value: &[u8]) -> Vec<u8> {
    let mut p = z(&[path]);
    p.extend_from_slice(value);
    p
}

impl T {
    fn start(&mut self, c: ConnId) -> u32 {
        String::from_utf8(self.ok(c, MsgType::TransactionStart, &z(&[""])))
            .expect("utf8")
            .trim_end_matches('\0')
            .parse()
            .expect("txid")
    }

    fn usage(&self, domid: u32, q: Quota) -> u64 {
        self.s.domain(domid).map_or(0, |d| d.usage.get(q))
    }
}

/// Finding 6: 995 nested nodes cost megabytes of paths but were charged a
/// few dozen bytes each. Every node's path is now charged, so a deep
/// chain of nodes is refused by the memory quota (EIO, as for any node
/// write over it) long before the node quota, and what is charged covers
/// the paths held.
#[test]
fn nested_nodes_are_charged_their_paths() {
    let mut t = T::new();
    let g = t.guest(5);
    let quota = 600_000u64;
    t.ok(
        DOM0,
        MsgType::SetQuota,
        &z(&["5", "memory", &quota.to_string()]),
    );
    let mut path = String::from("/local/domain/5");
    let mut paths_held = path.len() as u64;
    let mut refused = None;
    for i in 0..1200 {
        path.push_str("/x");
        match t.req(g, MsgType::Mkdir, &z(&[&path])) {
            Ok(_) => paths_held += path.len() as u64,
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (i, e) = refused.expect("a write was refused");
    assert_eq!(
        e, "EIO",
        "refused at depth {i} by {e}, not by the memory quota"
    );
    assert!(i < 900, "refused only at depth {i}");
    let mem = t.usage(5, Quota::Memory);
    assert!(mem <= quota, "charged {mem} over the quota {quota}");
    assert!(
        mem >= paths_held,
        "charged {mem} for {paths_held} bytes of paths"
    );
    assert_eq!(t.s.recount(), 0);
}

/// A node's charge is its record plus its full path.
#[test]
fn node_charge_is_record_plus_path() {
    let mut t = T::new();
    let g = t.guest(5);
    let before = t.usage(5, Quota::Memory);
    t.ok(g, MsgType::Write, &w("abc", b"12345"));
    // The new node: 16 header + 8 per permission + 5 value + the path
    // "/local/domain/5/abc"; its parent, also owned by 5, lists "abc\0".
    let path = "/local/domain/5/abc";
    assert_eq!(
        t.usage(5, Quota::Memory) - before,
        (16 + 8 + 5 + path.len() + 4) as u64
    );
    assert_eq!(t.s.recount(), 0);
}

/// Finding 5: ten open transactions of 990 staged 1.9 KB nodes each
/// pinned 45 MiB while the guest was charged almost nothing. Staged data
/// is now charged to the guest while its transactions are open, so staging
/// is refused (EIO, as a node write over the memory quota) once all its
/// transactions together hold the quota.
#[test]
fn open_transactions_are_charged_and_refused_at_the_quota() {
    let mut t = T::new();
    let g = t.guest(5);
    let quota = t.s.domain(5).expect("record").quota.get(Quota::Memory);
    let base = t.usage(5, Quota::Memory);
    let value = vec![b'v'; 1900];
    let mut staged = 0u64;
    let mut first_error = None;
    let mut txs = Vec::new();
    let mut first_refused = None;
    for k in 0..10 {
        let tx = t.start(g);
        txs.push(tx);
        // 950 nodes stay within the node quota (1000) in each transaction.
        for i in 0..950 {
            let p = format!("t{k}/g{}/n{}", i / 40, i % 40);
            match t.req_tx(g, MsgType::Write, tx, &w(&p, &value)) {
                Ok(_) => staged += value.len() as u64,
                Err(e) => {
                    first_error.get_or_insert(e);
                    first_refused.get_or_insert((k, tx, i));
                    break;
                }
            }
            let mem = t.usage(5, Quota::Memory);
            assert!(mem <= quota, "charged {mem} over the quota {quota}");
        }
    }
    assert_eq!(first_error.as_deref(), Some("EIO"));
    assert!(staged <= quota, "{staged} bytes staged, quota {quota}");
    // Refused close to the quota, not long before.
    assert!(staged > quota / 2, "only {staged} bytes staged");
    // Accounting agrees with a recount while the transactions are open.
    assert_eq!(t.s.recount(), 0);
    assert!(t.s.check().is_empty());
    // A refusal does not doom the transaction: reads of what it staged
    // still work and it commits (the data moves to committed nodes).
    let (k, refused, done) = first_refused.expect("a refusal");
    assert!(done > 0, "the first refused transaction staged something");
    for &tx in txs.iter().filter(|&&tx| tx != refused) {
        t.req_tx(g, MsgType::TransactionEnd, tx, &z(&["F"]))
            .expect("abort");
    }
    let n0 = format!("t{k}/g0/n0");
    let len = |r: Result<Vec<u8>, String>| r.map(|v| v.len());
    assert_eq!(
        len(t.req_tx(g, MsgType::Read, refused, &z(&[&n0]))),
        Ok(1900)
    );
    t.req_tx(g, MsgType::TransactionEnd, refused, &z(&["T"]))
        .expect("commit");
    assert_eq!(len(t.req(g, MsgType::Read, &z(&[&n0]))), Ok(1900));
    assert!(t.usage(5, Quota::Memory) <= quota);
    assert_eq!(t.s.recount(), 0);
    // Removing what it committed brings the charge back to the start.
    t.req(g, MsgType::Rm, &z(&[&format!("t{k}")])).expect("rm");
    assert_eq!(t.usage(5, Quota::Memory), base);
    assert_eq!(t.s.recount(), 0);
}

/// The charge follows the transaction: it grows with what is staged,
/// moves to the committed nodes at commit, and is released by abort,
/// connection reset, disconnection and domain removal. Privileged
/// connections are not charged.
#[test]
fn transaction_charge_is_released_when_it_ends() {
    let mut t = T::new();
    let g = t.guest(5);
    let base = t.usage(5, Quota::Memory);
    let value = vec![b'v'; 1000];

    // Commit: the staged data is released, the committed nodes charged.
    let tx = t.start(g);
    t.req_tx(g, MsgType::Write, tx, &w("a", &value))
        .expect("write");
    let during = t.usage(5, Quota::Memory);
    assert!(during >= base + 1000, "{during} charged while staged");
    t.req_tx(g, MsgType::TransactionEnd, tx, &z(&["T"]))
        .expect("commit");
    let committed = t.usage(5, Quota::Memory);
    assert!(committed >= base + 1000 && committed < during);
    assert_eq!(t.s.recount(), 0);

    // Abort.
    let tx = t.start(g);
    t.req_tx(g, MsgType::Write, tx, &w("b", &value))
        .expect("write");
    t.req_tx(g, MsgType::Read, tx, &z(&["a"])).expect("read");
    assert!(t.usage(5, Quota::Memory) > committed);
    t.req_tx(g, MsgType::TransactionEnd, tx, &z(&["F"]))
        .expect("abort");
    assert_eq!(t.usage(5, Quota::Memory), committed);

    // Connection reset (a repeated INTRODUCE).
    let tx = t.start(g);
    t.req_tx(g, MsgType::Write, tx, &w("b", &value))
        .expect("write");
    assert!(t.usage(5, Quota::Memory) > committed);
    t.s.reset_connection(g);
    assert_eq!(t.usage(5, Quota::Memory), committed);
    assert_eq!(t.s.recount(), 0);

    // Disconnection.
    let tx = t.start(g);
    t.req_tx(g, MsgType::Write, tx, &w("b", &value))
        .expect("write");
    t.s.disconnect(g);
    assert_eq!(t.usage(5, Quota::Memory), committed);
    assert_eq!(t.s.recount(), 0);

    // Domain removal takes the record and everything charged with it.
    let g = t.guest(6);
    let tx = t.start(g);
    t.req_tx(g, MsgType::Write, tx, &w("b", &value))
        .expect("write");
    t.s.remove_domain(6);
    assert!(t.s.domain(6).is_none());
    assert_eq!(t.s.recount(), 0);

    // A privileged connection's transaction is charged to nobody.
    let before: Vec<u64> = t.s.domains().map(|d| d.usage.get(Quota::Memory)).collect();
    let tx = t.start(DOM0);
    t.req_tx(DOM0, MsgType::Write, tx, &w("/local/domain/5/c", &value))
        .expect("write");
    let after: Vec<u64> = t.s.domains().map(|d| d.usage.get(Quota::Memory)).collect();
    assert_eq!(before, after);
    assert_eq!(t.s.recount(), 0);
}

/// The daemon's charges (queued output): added to memory usage, limited by
/// the same quota as everything else, kept by recount, gone with the
/// domain's record, never creating a record.
#[test]
fn external_memory_charges() {
    let mut t = T::new();
    let g = t.guest(5);
    let quota = 10_000u64;
    t.ok(
        DOM0,
        MsgType::SetQuota,
        &z(&["5", "memory", &quota.to_string()]),
    );
    let base = t.usage(5, Quota::Memory);
    t.s.charge_memory(5, 3000);
    assert_eq!(t.usage(5, Quota::Memory), base + 3000);
    assert_eq!(t.s.domain(5).map(|d| d.external_memory), Some(3000));
    // recount() keeps the daemon's share.
    assert_eq!(t.s.recount(), 0);
    assert!(t.s.check().is_empty());
    assert_eq!(t.usage(5, Quota::Memory), base + 3000);
    // Releasing more than was charged stops at the daemon's share.
    t.s.charge_memory(5, -5000);
    assert_eq!(t.usage(5, Quota::Memory), base);
    assert_eq!(t.s.recount(), 0);

    // Limits: up to the quota is allowed; full at the quota.
    let room = quota - base;
    assert!(!t.s.memory_would_exceed(5, room));
    assert!(t.s.memory_would_exceed(5, room + 1));
    assert!(!t.s.memory_full(5));
    t.s.charge_memory(5, room as i64 - 1);
    assert!(!t.s.memory_full(5));
    t.s.charge_memory(5, 1);
    assert!(t.s.memory_full(5));
    assert!(t.s.memory_would_exceed(5, 1));
    // Queued output counts against node writes too.
    assert_eq!(t.req(g, MsgType::Write, &w("x", b"1")), Err("EIO".into()));
    t.s.charge_memory(5, -(room as i64));
    assert!(t.req(g, MsgType::Write, &w("x", b"1")).is_ok());
    // Quota 0 disables; the privileged domain is never limited.
    t.ok(DOM0, MsgType::SetQuota, &z(&["5", "memory", "0"]));
    t.s.charge_memory(5, 1 << 40);
    assert!(!t.s.memory_full(5) && !t.s.memory_would_exceed(5, u64::MAX));
    assert!(!t.s.memory_full(0) && !t.s.memory_would_exceed(0, u64::MAX));

    // Removing the domain clears the charge; charges for a domain without
    // a record do nothing and make none.
    t.s.remove_domain(5);
    t.s.charge_memory(5, 100);
    t.s.charge_outstanding(5, 1);
    assert!(t.s.domain(5).is_none());
    t.s.charge_memory(77, 100);
    assert!(t.s.domain(77).is_none());
    // A domain without a record is judged by the global quota.
    assert!(!t.s.memory_would_exceed(77, 100));
    assert!(t.s.memory_would_exceed(77, 2_621_441));
    let _g = t.guest(5);
    assert_eq!(t.s.domain(5).map(|d| d.external_memory), Some(0));
    assert_eq!(t.s.recount(), 0);
}

#[test]
fn outstanding_charges() {
    let mut t = T::new();
    let _g = t.guest(5);
    let quota = t.s.domain(5).expect("record").quota.get(Quota::Outstanding);
    assert_eq!(quota, 20);
    for i in 0..quota {
        assert!(!t.s.outstanding_full(5), "full at {i}");
        t.s.charge_outstanding(5, 1);
    }
    assert!(t.s.outstanding_full(5));
    // recount() does not touch it.
    assert_eq!(t.s.recount(), 0);
    assert_eq!(t.usage(5, Quota::Outstanding), quota);
    t.s.charge_outstanding(5, -1);
    assert!(!t.s.outstanding_full(5));
    // Saturates at 0 and records the maximum.
    t.s.charge_outstanding(5, -100);
    assert_eq!(t.usage(5, Quota::Outstanding), 0);
    assert_eq!(
        t.s.domain(5)
            .map(|d| d.usage.max[Quota::Outstanding.index()]),
        Some(quota)
    );
    // Quota 0 disables; the privileged domain is never limited.
    t.ok(DOM0, MsgType::SetQuota, &z(&["5", "outstanding", "0"]));
    t.s.charge_outstanding(5, 1000);
    assert!(!t.s.outstanding_full(5));
    t.s.charge_outstanding(0, 1000);
    assert!(!t.s.outstanding_full(0));
    // Gone with the record.
    t.s.remove_domain(5);
    let _g = t.guest(5);
    assert_eq!(t.usage(5, Quota::Outstanding), 0);
}
