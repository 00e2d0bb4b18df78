//! Streams the document does not allow, each refused with the error that
//! names the problem; and records the writer refuses.

use xenstore_migrate::*;

const HDR_LE1: [u8; 16] = *b"xenstore\0\0\0\x01\0\0\0\0";
const HDR_LE2: [u8; 16] = *b"xenstore\0\0\0\x02\0\0\0\0";
const END: [u8; 8] = [0; 8];

#[rustfmt::skip]
const SOCK1: [u8; 32] = [
    2, 0, 0, 0,  24, 0, 0, 0,
    1, 0, 0, 0,  1, 0,  0, 0,
    9, 0, 0, 0,  0, 0, 0, 0,
    0, 0,  0, 0,  0, 0, 0, 0,
];

fn read(parts: &[&[u8]]) -> Result<Stream> {
    Stream::read(&parts.concat())
}

/// A record with type `ty` and `body` (padded here to 8, `len` padded).
fn rec(ty: u32, body: &[u8]) -> Vec<u8> {
    let mut b = body.to_vec();
    b.resize(body.len().next_multiple_of(8), 0);
    let mut r = ty.to_le_bytes().to_vec();
    r.extend_from_slice(&(b.len() as u32).to_le_bytes());
    r.extend_from_slice(&b);
    r
}

fn invalid(r: Result<Stream>, want: RecordType, reason_part: &str) {
    match r {
        Err(Error::Invalid { record, reason, .. }) => {
            assert_eq!(record, want);
            assert!(
                reason.contains(reason_part),
                "reason {reason:?} lacks {reason_part:?}"
            );
        }
        other => panic!("expected Invalid {want}, got {other:?}"),
    }
}

#[test]
fn header_errors() {
    assert!(matches!(
        read(&[b"xenstorf\0\0\0\x01\0\0\0\0", &END]),
        Err(Error::BadIdent)
    ));
    assert!(matches!(
        read(&[b"xenstore\0\0\0\0\0\0\0\0", &END]),
        Err(Error::UnsupportedVersion(0))
    ));
    assert!(matches!(
        read(&[b"xenstore\0\0\0\x03\0\0\0\0", &END]),
        Err(Error::UnsupportedVersion(3))
    ));
    // Version in little-endian order: 0x01000000.
    assert!(matches!(
        read(&[b"xenstore\x01\0\0\0\0\0\0\0", &END]),
        Err(Error::UnsupportedVersion(0x0100_0000))
    ));
    assert!(matches!(
        read(&[b"xenstore\0\0\0\x01\0\0\0\x02", &END]),
        Err(Error::ReservedFlags(2))
    ));
    assert!(matches!(
        read(&[b"xensto"]),
        Err(Error::Truncated { offset: 0, .. })
    ));
}

#[test]
fn stream_level_errors() {
    // No END.
    assert!(matches!(
        read(&[&HDR_LE1]),
        Err(Error::Truncated { offset: 16, .. })
    ));
    assert!(matches!(
        read(&[&HDR_LE1, &SOCK1]),
        Err(Error::Truncated { offset: 48, .. })
    ));
    // A record length past the end of the input.
    let mut long = SOCK1;
    long[4] = 40;
    assert!(matches!(
        read(&[&HDR_LE1, &long, &END]),
        Err(Error::Truncated { offset: 24, .. })
    ));
    // A length whose padding runs past the end: 0xffff_fff9 rounds up
    // beyond 2^32.
    assert!(matches!(
        read(&[&HDR_LE1, &[1, 0, 0, 0, 0xf9, 0xff, 0xff, 0xff], &END]),
        Err(Error::Truncated { .. })
    ));
    // Reserved record type.
    assert!(matches!(
        read(&[&HDR_LE1, &rec(9, &[]), &END]),
        Err(Error::UnknownRecordType {
            offset: 16,
            code: 9
        })
    ));
    // END with a length.
    invalid(
        read(&[&HDR_LE1, &[0, 0, 0, 0, 8, 0, 0, 0], &[0; 8]]),
        RecordType::End,
        "END",
    );
    // Bytes after END.
    assert!(matches!(
        read(&[&HDR_LE1, &END, &[0]]),
        Err(Error::TrailingData { offset: 24, len: 1 })
    ));
    // ... which the record reader leaves to its caller.
    let bytes = [&HDR_LE1[..], &END, b"xyz"].concat();
    let mut r = Reader::new(&bytes).unwrap();
    assert!(r.next_record().unwrap().is_none());
    assert_eq!(r.rest(), b"xyz");
    assert!(r.ended());
}

#[test]
fn record_type_not_in_version() {
    let wext = rec(8, &[1, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0, 0, b'/', 0, 0]);
    assert!(matches!(
        read(&[&HDR_LE1, &SOCK1, &wext, &END]),
        Err(Error::NotInVersion {
            record: RecordType::WatchExtended,
            version: 1,
            ..
        })
    ));
    assert!(read(&[&HDR_LE2, &SOCK1, &wext, &END]).is_ok());
}

#[test]
fn length_mismatches() {
    // GLOBAL_DATA with 4 bytes.
    invalid(
        read(&[
            &HDR_LE1,
            &[1, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
            &END,
        ]),
        RecordType::Global,
        "past the record length",
    );
    // GLOBAL_DATA with 16: a whole word more than its content.
    invalid(
        read(&[&HDR_LE1, &rec(1, &[0; 16]), &END]),
        RecordType::Global,
        "8 bytes or more",
    );
    // CONNECTION_DATA announcing more data than its length holds.
    let mut c = SOCK1.to_vec();
    c[24] = 1; // in-data-len 1 with len 24
    invalid(
        read(&[&HDR_LE1, &c, &END]),
        RecordType::Connection,
        "past the record length",
    );
    // out-resp-len larger than out-data-len.
    let mut body = SOCK1[8..].to_vec();
    body[18] = 2; // out-resp-len 2
    body[20] = 1; // out-data-len 1
    body.push(b'x');
    invalid(
        read(&[&HDR_LE1, &rec(2, &body), &END]),
        RecordType::Connection,
        "out-resp-len exceeds",
    );
    // Output after the partial response that is not whole messages.
    let mut body = SOCK1[8..].to_vec();
    body[20] = 17; // out-data-len 17: a header announcing 2 bytes, 1 there
    body.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, b'x']);
    invalid(
        read(&[&HDR_LE1, &rec(2, &body), &END]),
        RecordType::Connection,
        "longer than out-data-len",
    );
    let mut body = SOCK1[8..].to_vec();
    body[20] = 5;
    body.extend_from_slice(&[1, 0, 0, 0, 0]);
    invalid(
        read(&[&HDR_LE1, &rec(2, &body), &END]),
        RecordType::Connection,
        "inside a message header",
    );
    // unique-id announced but missing.
    let mut c = SOCK1;
    c[14] = 1;
    invalid(
        read(&[&HDR_LE1, &c, &END]),
        RecordType::Connection,
        "past the record length",
    );
    // NODE_DATA with more permissions than bytes.
    let node = rec(
        5,
        &[
            0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 9, 0, b'n', 0, 0, 0,
        ],
    );
    invalid(
        read(&[&HDR_LE1, &node, &END]),
        RecordType::Node,
        "past the record length",
    );
    // GLOBAL_QUOTA_DATA: two values, one name (the padding inside len
    // would read as an empty name).
    let q = rec(6, &[2, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0]);
    invalid(
        read(&[&HDR_LE1, &q, &END]),
        RecordType::GlobalQuota,
        "empty quota name",
    );
    // The same with an unpadded len: the second name is missing.
    let mut q = q;
    q[4] = 14;
    invalid(
        read(&[&HDR_LE1, &q, &END]),
        RecordType::GlobalQuota,
        "not NUL-terminated",
    );
    // A name running into the padding.
    let q = rec(
        6,
        &[
            1, 0, 0, 0, 1, 0, 0, 0, b'a', b'b', b'c', b'd', b'e', b'f', b'g', b'h',
        ],
    );
    invalid(
        read(&[&HDR_LE1, &q, &END]),
        RecordType::GlobalQuota,
        "not NUL-terminated",
    );
    // DOMAIN_DATA: n-quota 0xffff with no values.
    let d = rec(7, &[1, 0, 0xff, 0xff, 0, 0, 0, 0]);
    invalid(
        read(&[&HDR_LE2, &d, &END]),
        RecordType::Domain,
        "past the record length",
    );
}

#[test]
fn string_rules() {
    let watch = |plen: u8, tlen: u8, strings: &[u8]| {
        let mut b = vec![1, 0, 0, 0, plen, 0, tlen, 0];
        b.extend_from_slice(strings);
        read(&[&HDR_LE1, &SOCK1, &rec(3, &b), &END])
    };
    assert!(watch(3, 2, b"/a\0t\0").is_ok());
    invalid(
        watch(2, 2, b"/at\0"),
        RecordType::Watch,
        "not NUL-terminated",
    );
    invalid(
        watch(3, 2, b"/\0\0t\0"),
        RecordType::Watch,
        "NUL inside the watch path",
    );
    invalid(
        watch(3, 3, b"/a\0\0t\0"),
        RecordType::Watch,
        "NUL inside the watch token",
    );
    invalid(watch(0, 2, b"t\0"), RecordType::Watch, "length 0");
    invalid(
        watch(3, 200, b"/a\0t\0"),
        RecordType::Watch,
        "past the record length",
    );

    let node = |path: &[u8]| {
        let mut b = vec![
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            path.len() as u8,
            0,
            0,
            0,
            0,
            0,
            1,
            0,
        ];
        b.extend_from_slice(b"b\0\0\0");
        b.extend_from_slice(path);
        read(&[&HDR_LE1, &rec(5, &b), &END])
    };
    assert!(node(b"/a\0").is_ok());
    assert!(node(b"@introduceDomain\0").is_ok());
    invalid(
        node(b"a\0"),
        RecordType::Node,
        "neither absolute nor special",
    );
    invalid(
        node(b"\0"),
        RecordType::Node,
        "neither absolute nor special",
    );
    invalid(node(b"/a"), RecordType::Node, "not NUL-terminated");
    invalid(
        node(b"/\0a\0"),
        RecordType::Node,
        "NUL inside the node path",
    );
}

#[test]
fn reserved_values() {
    // conn-type 2.
    let mut c = SOCK1;
    c[12] = 2;
    invalid(
        read(&[&HDR_LE1, &c, &END]),
        RecordType::Connection,
        "conn-type",
    );
    // fields bit 1.
    let mut c = SOCK1;
    c[14] = 2;
    invalid(
        read(&[&HDR_LE1, &c, &END]),
        RecordType::Connection,
        "fields",
    );
    // conn-id 0.
    let mut c = SOCK1;
    c[8] = 0;
    invalid(
        read(&[&HDR_LE1, &c, &END]),
        RecordType::Connection,
        "conn-id 0",
    );

    let node = |perm: [u8; 4], conn: u8, access: u8, vlen: u8, nperm: u8| {
        let mut b = vec![
            conn, 0, 0, 0, 0, 0, 0, 0, 2, 0, vlen, 0, access, 0, nperm, 0,
        ];
        if nperm > 0 {
            b.extend_from_slice(&perm);
        }
        b.extend_from_slice(b"/\0");
        b.extend(std::iter::repeat_n(b'v', usize::from(vlen)));
        read(&[
            &HDR_LE1,
            &SOCK1,
            &rec(4, &[1, 0, 0, 0, 0, 0, 0, 0]),
            &rec(5, &b),
            &END,
        ])
    };
    assert!(node(*b"r\x01\0\0", 0, 0, 0, 1).is_ok());
    invalid(
        node(*b"x\0\0\0", 0, 0, 0, 1),
        RecordType::Node,
        "permission letter",
    );
    invalid(
        node(*b"r\x02\0\0", 0, 0, 0, 1),
        RecordType::Node,
        "permission flag",
    );
    invalid(
        node(*b"r\0\0\0", 0, 0, 0, 0),
        RecordType::Node,
        "without permissions",
    );
    // Transaction nodes.
    assert!(node(*b"r\0\0\0", 1, 1, 1, 1).is_ok());
    assert!(node(*b"r\0\0\0", 1, 0, 0, 0).is_ok());
    invalid(
        node(*b"r\0\0\0", 1, 4, 0, 1),
        RecordType::Node,
        "access bits",
    );
    invalid(node(*b"r\0\0\0", 1, 0, 0, 1), RecordType::Node, "deleted");
    invalid(node(*b"r\0\0\0", 1, 0, 1, 0), RecordType::Node, "deleted");
    invalid(
        node(*b"r\0\0\0", 1, 2, 0, 0),
        RecordType::Node,
        "not deleted",
    );
}

#[test]
fn references_between_records() {
    let watch = rec(3, &[1, 0, 0, 0, 2, 0, 1, 0, b'/', 0, 0]);
    assert!(matches!(
        read(&[&HDR_LE1, &watch, &SOCK1, &END]),
        Err(Error::UnknownConnection {
            offset: 16,
            record: RecordType::Watch,
            conn_id: 1
        })
    ));
    assert!(read(&[&HDR_LE1, &SOCK1, &watch, &END]).is_ok());
    assert!(matches!(
        read(&[&HDR_LE1, &SOCK1, &SOCK1, &END]),
        Err(Error::DuplicateConnection {
            offset: 48,
            conn_id: 1
        })
    ));
    let tx = rec(4, &[1, 0, 0, 0, 5, 0, 0, 0]);
    assert!(matches!(
        read(&[&HDR_LE1, &tx, &END]),
        Err(Error::UnknownConnection {
            record: RecordType::Transaction,
            ..
        })
    ));
    assert!(matches!(
        read(&[&HDR_LE1, &SOCK1, &tx, &tx, &END]),
        Err(Error::DuplicateTransaction {
            conn_id: 1,
            tx_id: 5,
            ..
        })
    ));
    let txnode = rec(
        5,
        &[1, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'/', 0],
    );
    assert!(read(&[&HDR_LE1, &SOCK1, &tx, &txnode, &END]).is_ok());
    assert!(matches!(
        read(&[&HDR_LE1, &SOCK1, &txnode, &tx, &END]),
        Err(Error::UnknownTransaction {
            conn_id: 1,
            tx_id: 5,
            ..
        })
    ));
    let dom = rec(7, &[4, 0, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(
        read(&[&HDR_LE2, &dom, &dom, &END]),
        Err(Error::DuplicateDomain {
            offset: 32,
            domid: 4
        })
    ));
}

#[test]
fn reader_stops_after_an_error() {
    let bytes = [&HDR_LE1[..], &rec(9, &[]), &SOCK1, &END].concat();
    let mut r = Reader::new(&bytes).unwrap();
    assert!(r.next().unwrap().is_err());
    assert!(r.next().is_none());
}

fn sock(id: u32) -> Record {
    Record::Connection(Connection {
        conn_id: id,
        kind: ConnKind::Socket { fd: 3 },
        input: Input::default(),
        output: Output::default(),
        unique_id: None,
    })
}

#[test]
fn writer_refuses_what_cannot_be_written() {
    let h = StreamHeader {
        version: Version::V1,
        endian: Endian::Little,
    };
    let mut w = Writer::new(Vec::new(), h).unwrap();
    let before = w.offset();
    let watch = |path: &[u8], depth| {
        Record::Watch(Watch {
            conn_id: 1,
            path: path.to_vec(),
            token: b"t".to_vec(),
            depth,
        })
    };
    assert!(matches!(
        w.write_record(&watch(b"/a", None)),
        Err(Error::UnknownConnection { .. })
    ));
    w.write_record(&sock(1)).unwrap();
    assert!(matches!(
        w.write_record(&sock(1)),
        Err(Error::DuplicateConnection { .. })
    ));
    assert!(matches!(
        w.write_record(&sock(0)),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        w.write_record(&watch(b"/a", Some(1))),
        Err(Error::NotInVersion {
            record: RecordType::WatchExtended,
            ..
        })
    ));
    assert!(matches!(
        w.write_record(&watch(b"/\0a", None)),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        w.write_record(&watch(&[b'a'; 65535], None)),
        Err(Error::Invalid { .. })
    ));
    w.write_record(&watch(&[b'a'; 65534], None)).unwrap();
    let mut bad = |c: Connection| {
        matches!(
            w.write_record(&Record::Connection(c)),
            Err(Error::Invalid {
                record: RecordType::Connection,
                ..
            })
        )
    };
    let base = Connection {
        conn_id: 7,
        kind: ConnKind::Ring {
            domid: 1,
            target: Some(DOMID_INVALID),
            evtchn: 1,
        },
        input: Input::default(),
        output: Output::default(),
        unique_id: None,
    };
    assert!(bad(base.clone()));
    let mut c = base.clone();
    c.kind = ConnKind::Socket { fd: 1 };
    c.input.partial = Some(PartialInput::Header(vec![0; 16]));
    assert!(bad(c.clone()));
    c.input.partial = Some(PartialInput::Header(vec![]));
    assert!(bad(c.clone()));
    c.input.partial = Some(PartialInput::Payload {
        msg_type: 0,
        req_id: 0,
        tx_id: 0,
        len: 3,
        received: vec![0; 3],
    });
    assert!(bad(c.clone()));
    c.input.partial = None;
    c.input.requests = vec![Message {
        msg_type: 0,
        req_id: 0,
        tx_id: 0,
        payload: vec![0; 65535 - 15],
    }];
    assert!(bad(c.clone()));
    c.input.requests[0].payload.pop();
    c.output.partial = vec![0; 65536];
    assert!(bad(c.clone()));
    c.output.partial.pop();
    // Everything refused above wrote nothing: the stream goes on.
    let n = w.offset();
    w.write_record(&Record::Connection(c)).unwrap();
    assert!(w.offset() > n);
    let bytes = w.finish().unwrap();
    let s = Stream::read(&bytes).unwrap();
    assert_eq!(s.records.len(), 3);
    assert!(before < bytes.len());

    let node = |path: &[u8], transaction, value: Vec<u8>, perms: Vec<Perm>| {
        Record::Node(Node {
            path: path.to_vec(),
            transaction,
            value,
            perms,
        })
    };
    let p = vec![Perm {
        access: PermAccess::None,
        stale: false,
        domid: 0,
    }];
    let mut w = Writer::new(Vec::new(), h).unwrap();
    for r in [
        node(b"a", None, vec![], p.clone()),
        node(b"", None, vec![], p.clone()),
        node(b"/a", None, vec![], vec![]),
        node(b"/a", None, vec![0; 65536], p.clone()),
        node(
            b"/a",
            Some(NodeTx {
                conn_id: 0,
                tx_id: 0,
                read: true,
                written: false,
            }),
            vec![],
            p.clone(),
        ),
    ] {
        assert!(
            matches!(w.write_record(&r), Err(Error::Invalid { .. })),
            "{r:?}"
        );
    }
    let tx = NodeTx {
        conn_id: 1,
        tx_id: 2,
        read: false,
        written: false,
    };
    assert!(matches!(
        w.write_record(&node(b"/a", Some(tx), vec![], vec![])),
        Err(Error::UnknownTransaction { .. })
    ));
    w.write_record(&sock(1)).unwrap();
    w.write_record(&Record::Transaction(Transaction {
        conn_id: 1,
        tx_id: 2,
    }))
    .unwrap();
    assert!(matches!(
        w.write_record(&node(b"/a", Some(tx), vec![1], vec![])),
        Err(Error::Invalid { .. })
    ));
    w.write_record(&node(b"/a", Some(tx), vec![], vec![]))
        .unwrap();
    let q = |name: &[u8]| Quota {
        name: name.to_vec(),
        value: 1,
    };
    assert!(matches!(
        w.write_record(&Record::GlobalQuota(GlobalQuota {
            per_domain: vec![q(b"a\0b")],
            global: vec![],
        })),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        w.write_record(&Record::GlobalQuota(GlobalQuota {
            per_domain: vec![],
            global: vec![q(b"")],
        })),
        Err(Error::Invalid { .. })
    ));
    let d = Record::Domain(Domain {
        domid: 1,
        features: 0,
        quotas: vec![q(b"nodes")],
    });
    w.write_record(&d).unwrap();
    assert!(matches!(
        w.write_record(&d),
        Err(Error::DuplicateDomain { domid: 1, .. })
    ));
}

/// A writer whose output fails after `n` bytes.
struct Broken(usize);

impl std::io::Write for Broken {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0 == 0 {
            return Err(std::io::Error::other("full"));
        }
        let n = buf.len().min(self.0);
        self.0 -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn io_errors_are_reported() {
    let h = StreamHeader {
        version: Version::V2,
        endian: Endian::NATIVE,
    };
    assert!(matches!(Writer::new(Broken(3), h), Err(Error::Io(_))));
    let mut w = Writer::new(Broken(20), h).unwrap();
    assert!(matches!(w.write_record(&sock(1)), Err(Error::Io(_))));
}
