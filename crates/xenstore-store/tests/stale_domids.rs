//! C xenstored's second defence against recycled domids (protocol digest
//! 4.7): an ACL entry naming a domain whose record was made after the
//! node last changed, or a domain without a record, grants nothing. The
//! first defence (stripping a dead domain's entries) is bypassed here on
//! purpose, by a transaction that stages the entry before the domain dies
//! and commits after.

mod common;
use common::{z, DOM0, T};
use xenstore_proto::MsgType;
use xenstore_store::{ConnId, ConnKind};

impl T {
    fn read(&mut self, c: ConnId, path: &str) -> Result<Vec<u8>, String> {
        self.req(c, MsgType::Read, &z(&[path]))
    }

    /// `/secret` granting `r7`, committed after domain 7 died, so that its
    /// removal did not strip the entry.
    fn stale_grant(&mut self) {
        let mut p = z(&["/secret"]);
        p.extend_from_slice(b"s3cr3t");
        self.ok(DOM0, MsgType::Write, &p);
        let tx: u32 = String::from_utf8(self.ok(DOM0, MsgType::TransactionStart, &z(&[""])))
            .expect("utf8")
            .trim_end_matches('\0')
            .parse()
            .expect("txid");
        // Domain 7 exists now: the entry is live when staged.
        let old7 = self.introduce(7);
        self.req_tx(DOM0, MsgType::SetPerms, tx, &z(&["/secret", "n0", "r7"]))
            .expect("set_perms");
        assert_eq!(self.read(old7, "/secret"), Err("EACCES".into()));
        // Domain 7 dies; nothing committed names it yet.
        self.s.remove_domain(7);
        self.req_tx(DOM0, MsgType::TransactionEnd, tx, &z(&["T"]))
            .expect("commit");
        assert_eq!(
            self.ok(DOM0, MsgType::GetPerms, &z(&["/secret"])),
            z(&["n0", "r7"])
        );
    }
}

/// A new domain 7 does not inherit the dead domain 7's grant.
#[test]
fn recycled_domid_does_not_inherit_a_stale_grant() {
    let mut t = T::new();
    t.stale_grant();
    let new7 = t.introduce(7);
    assert_eq!(t.read(new7, "/secret"), Err("EACCES".into()));
    // Nor after the node is rewritten (the mark sticks, as in C: the
    // rewritten node is newer than the new domain's record).
    let mut p = z(&["/secret"]);
    p.extend_from_slice(b"v2");
    t.ok(DOM0, MsgType::Write, &p);
    assert_eq!(t.read(new7, "/secret"), Err("EACCES".into()));
    // GET_PERMS still lists the entry, as C does.
    assert_eq!(
        t.ok(DOM0, MsgType::GetPerms, &z(&["/secret"])),
        z(&["n0", "r7"])
    );
    // The owner setting the permissions again grants the new domain.
    t.ok(DOM0, MsgType::SetPerms, &z(&["/secret", "n0", "r7"]));
    assert_eq!(t.read(new7, "/secret"), Ok(b"v2".to_vec()));
}

/// An entry naming a domain with no record grants nothing, nor does it let
/// the domain's watches see events on the node.
#[test]
fn entry_naming_a_domain_without_record_is_ignored() {
    let mut t = T::new();
    t.stale_grant();
    // A connection acting as domain 7 without a record.
    let c = ConnId(999);
    t.s.connect(c, ConnKind::Domain(7));
    assert!(t.s.domain(7).is_none());
    assert_eq!(t.read(c, "/secret"), Err("EACCES".into()));
    t.ok(c, MsgType::Watch, &z(&["/secret", "tok"]));
    let mut p = z(&["/secret"]);
    p.extend_from_slice(b"v3");
    let events: Vec<_> = t
        .send_all(DOM0, MsgType::Write, 0, &p)
        .into_iter()
        .filter(|(to, m)| *to == c && m.kind() == Some(MsgType::WatchEvent))
        .collect();
    assert!(events.is_empty(), "{events:?}");
}

/// The flows that must keep working: the toolstack names a domain that
/// exists but is not introduced yet (libxl's backend directories), the
/// domain is introduced afterwards and uses the grant; DOMID_ANY entries
/// are never ignored.
#[test]
fn grants_made_before_introduction_still_work() {
    let mut t = T::new();
    let be = "/local/domain/0/backend/vbd/9/51712";
    let mut p = z(&[be]);
    p.extend_from_slice(b"state");
    t.ok(DOM0, MsgType::Write, &p);
    t.ok(DOM0, MsgType::SetPerms, &z(&[be, "n0", "r9"]));
    // A child written later copies the grant.
    let child = format!("{be}/params");
    let mut p = z(&[&child]);
    p.extend_from_slice(b"x");
    t.ok(DOM0, MsgType::Write, &p);
    let g = t.introduce(9);
    assert_eq!(t.read(g, be), Ok(b"state".to_vec()));
    assert_eq!(t.read(g, &child), Ok(b"x".to_vec()));
    // @releaseDomain grants DOMID_ANY read: any new domain may watch it.
    let g2 = t.introduce(10);
    t.ok(g2, MsgType::Watch, &z(&["@releaseDomain", "r"]));
    let out = t.s.remove_domain(9);
    assert!(out.out.iter().any(|(to, m)| *to == g2
        && m.kind() == Some(MsgType::WatchEvent)
        && m.payload.starts_with(b"@releaseDomain\0")));
}
