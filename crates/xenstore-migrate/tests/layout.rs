//! Each record against bytes laid out by hand from the diagrams of
//! `docs/designs/xenstore-migration.md` (not produced by the crate), in
//! both directions: the writer must produce exactly these bytes and the
//! reader must give back the record.

use xenstore_migrate::*;

const LE1: StreamHeader = StreamHeader {
    version: Version::V1,
    endian: Endian::Little,
};
const LE2: StreamHeader = StreamHeader {
    version: Version::V2,
    endian: Endian::Little,
};
const BE2: StreamHeader = StreamHeader {
    version: Version::V2,
    endian: Endian::Big,
};

/// "xenstore", version 1, flags 0 (little-endian records).
const HDR_LE1: [u8; 16] = [
    b'x', b'e', b'n', b's', b't', b'o', b'r', b'e', 0, 0, 0, 1, 0, 0, 0, 0,
];
/// "xenstore", version 2, flags 0.
const HDR_LE2: [u8; 16] = [
    b'x', b'e', b'n', b's', b't', b'o', b'r', b'e', 0, 0, 0, 2, 0, 0, 0, 0,
];
/// "xenstore", version 2, flags 1 (big-endian records).
const HDR_BE2: [u8; 16] = [
    b'x', b'e', b'n', b's', b't', b'o', b'r', b'e', 0, 0, 0, 2, 0, 0, 0, 1,
];
/// END: type 0, len 0, no body.
const END: [u8; 8] = [0; 8];

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn write(h: StreamHeader, recs: &[Record]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), h).unwrap();
    for r in recs {
        w.write_record(r).unwrap();
    }
    w.finish().unwrap()
}

/// Writes `recs`, compares with `bytes`, reads `bytes` back.
fn both_ways(h: StreamHeader, recs: &[Record], bytes: &[u8]) {
    assert_eq!(write(h, recs), bytes, "writer output");
    let s = Stream::read(bytes).unwrap();
    assert_eq!(s.header, h);
    assert_eq!(s.records, recs);
}

/// A socket connection with id 1 and nothing pending: 24-byte body.
fn sock1() -> Record {
    Record::Connection(Connection {
        conn_id: 1,
        kind: ConnKind::Socket { fd: 9 },
        input: Input::default(),
        output: Output::default(),
        unique_id: None,
    })
}

#[rustfmt::skip]
const SOCK1_LE: [u8; 32] = [
    2, 0, 0, 0,   24, 0, 0, 0,  // type CONNECTION_DATA, len 24
    1, 0, 0, 0,                 // conn-id 1
    1, 0,                       // conn-type 1: socket
    0, 0,                       // fields: none
    9, 0, 0, 0,   0, 0, 0, 0,   // conn-spec: socket-fd 9, pad
    0, 0,  0, 0,  0, 0, 0, 0,   // in-data-len, out-resp-len, out-data-len
];

#[test]
fn empty_stream() {
    both_ways(LE1, &[], &cat(&[&HDR_LE1, &END]));
    both_ways(BE2, &[], &cat(&[&HDR_BE2, &END]));
}

#[test]
fn global_data() {
    let g = Record::Global(Global {
        socket_fd: NO_SOCKET,
        evtchn_fd: 4,
    });
    #[rustfmt::skip]
    let le = [
        1, 0, 0, 0,  8, 0, 0, 0,            // type 1, len 8
        0xff, 0xff, 0xff, 0xff,             // rw-socket-fd -1
        4, 0, 0, 0,                         // evtchn-fd 4
    ];
    both_ways(LE1, std::slice::from_ref(&g), &cat(&[&HDR_LE1, &le, &END]));
    #[rustfmt::skip]
    let be = [
        0, 0, 0, 1,  0, 0, 0, 8,
        0xff, 0xff, 0xff, 0xff,
        0, 0, 0, 4,
    ];
    both_ways(BE2, &[g], &cat(&[&HDR_BE2, &be, &END]));
}

#[test]
fn connection_socket() {
    both_ways(LE1, &[sock1()], &cat(&[&HDR_LE1, &SOCK1_LE, &END]));
}

#[test]
fn connection_ring_with_data_and_unique_id() {
    let c = Record::Connection(Connection {
        conn_id: 1,
        kind: ConnKind::Ring {
            domid: 5,
            target: None,
            evtchn: 0x21,
        },
        input: Input {
            requests: vec![Message {
                msg_type: 2,
                req_id: 7,
                tx_id: 0,
                payload: b"a\0".to_vec(),
            }],
            partial: Some(PartialInput::Header(vec![1, 0, 0])),
        },
        output: Output {
            partial: b"K\0".to_vec(),
            messages: vec![Message {
                msg_type: 15,
                req_id: 0,
                tx_id: 0,
                payload: b"p\0t\0".to_vec(),
            }],
        },
        unique_id: Some(0x0102_0304_0506_0708),
    });
    // 24 fixed + 21 in + 22 out = 67, padded to 72, + 8 unique-id = 80.
    #[rustfmt::skip]
    let le = [
        2, 0, 0, 0,  80, 0, 0, 0,           // type 2, len 80
        1, 0, 0, 0,                         // conn-id 1
        0, 0,                               // conn-type 0: shared ring
        1, 0,                               // fields: unique-id present
        5, 0,                               // domid 5
        0xf4, 0x7f,                         // tdomid DOMID_INVALID
        0x21, 0, 0, 0,                      // evtchn 0x21
        21, 0,                              // in-data-len 21
        2, 0,                               // out-resp-len 2
        22, 0, 0, 0,                        // out-data-len 22
        // in: one request (type 2, req 7, tx 0, len 2, "a\0")
        2, 0, 0, 0,  7, 0, 0, 0,  0, 0, 0, 0,  2, 0, 0, 0,  b'a', 0,
        // in: 3 bytes of the next header
        1, 0, 0,
        // out: the rest of a partly sent reply
        b'K', 0,
        // out: a watch event (type 15, len 4, "p\0t\0")
        15, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  4, 0, 0, 0,  b'p', 0, b't', 0,
        0, 0, 0, 0, 0,                      // pad 67 -> 72
        8, 7, 6, 5, 4, 3, 2, 1,             // unique-id
    ];
    both_ways(LE2, &[c], &cat(&[&HDR_LE2, &le, &END]));
}

#[test]
fn connection_ring_big_endian_partial_payload() {
    let c = Record::Connection(Connection {
        conn_id: 0x0a0b_0c0d,
        kind: ConnKind::Ring {
            domid: 1,
            target: Some(2),
            evtchn: 3,
        },
        input: Input {
            requests: vec![],
            partial: Some(PartialInput::Payload {
                msg_type: 1,
                req_id: 2,
                tx_id: 3,
                len: 10,
                received: b"abc".to_vec(),
            }),
        },
        output: Output::default(),
        unique_id: None,
    });
    // 24 + 19 = 43 -> 48.
    #[rustfmt::skip]
    let be = [
        0, 0, 0, 2,  0, 0, 0, 48,
        0x0a, 0x0b, 0x0c, 0x0d,             // conn-id
        0, 0,  0, 0,                        // ring, no fields
        0, 1,  0, 2,  0, 0, 0, 3,           // domid 1, tdomid 2, evtchn 3
        0, 19,  0, 0,  0, 0, 0, 0,          // in 19, resp 0, out 0
        0, 0, 0, 1,  0, 0, 0, 2,  0, 0, 0, 3,  0, 0, 0, 10,  b'a', b'b', b'c',
        0, 0, 0, 0, 0,
    ];
    both_ways(BE2, &[c], &cat(&[&HDR_BE2, &be, &END]));
}

#[test]
fn watch_data() {
    let w = Record::Watch(Watch {
        conn_id: 1,
        path: b"/a".to_vec(),
        token: b"tk".to_vec(),
        depth: None,
    });
    // 8 + 3 + 3 = 14 -> 16.
    #[rustfmt::skip]
    let le = [
        3, 0, 0, 0,  16, 0, 0, 0,
        1, 0, 0, 0,                         // conn-id
        3, 0,  3, 0,                        // wpath-len, token-len (with NUL)
        b'/', b'a', 0,  b't', b'k', 0,
        0, 0,
    ];
    both_ways(LE1, &[sock1(), w], &cat(&[&HDR_LE1, &SOCK1_LE, &le, &END]));
}

#[test]
fn watch_data_extended() {
    let w = Record::Watch(Watch {
        conn_id: 1,
        path: b"/a".to_vec(),
        token: b"tk".to_vec(),
        depth: Some(2),
    });
    // 12 + 6 = 18 -> 24.
    #[rustfmt::skip]
    let le = [
        8, 0, 0, 0,  24, 0, 0, 0,           // type 8
        1, 0, 0, 0,
        3, 0,  3, 0,
        2, 0,  0, 0,                        // depth 2, pad
        b'/', b'a', 0,  b't', b'k', 0,
        0, 0, 0, 0, 0, 0,
    ];
    both_ways(LE2, &[sock1(), w], &cat(&[&HDR_LE2, &SOCK1_LE, &le, &END]));
}

#[test]
fn transaction_data() {
    let t = Record::Transaction(Transaction {
        conn_id: 1,
        tx_id: 0x1234,
    });
    let le = [4, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0x34, 0x12, 0, 0];
    both_ways(LE1, &[sock1(), t], &cat(&[&HDR_LE1, &SOCK1_LE, &le, &END]));
}

#[test]
fn node_data_committed() {
    let n = Record::Node(Node {
        path: b"/a".to_vec(),
        transaction: None,
        value: b"xy".to_vec(),
        perms: vec![
            Perm {
                access: PermAccess::None,
                stale: false,
                domid: 0,
            },
            Perm {
                access: PermAccess::Read,
                stale: true,
                domid: 5,
            },
        ],
    });
    // 16 + 8 + 3 + 2 = 29 -> 32.
    #[rustfmt::skip]
    let le = [
        5, 0, 0, 0,  32, 0, 0, 0,
        0, 0, 0, 0,                         // conn-id 0: committed
        0, 0, 0, 0,                         // tx-id
        3, 0,  2, 0,                        // path-len, value-len
        0, 0,  2, 0,                        // access, perm-count
        b'n', 0, 0, 0,                      // owner: dom0, no access for others
        b'r', 1, 5, 0,                      // dom5 read, stale
        b'/', b'a', 0,
        b'x', b'y',
        0, 0, 0,
    ];
    both_ways(LE1, &[n], &cat(&[&HDR_LE1, &le, &END]));
}

#[test]
fn node_data_in_transaction() {
    let t = Record::Transaction(Transaction {
        conn_id: 1,
        tx_id: 9,
    });
    let deleted = Record::Node(Node {
        path: b"/a".to_vec(),
        transaction: Some(NodeTx {
            conn_id: 1,
            tx_id: 9,
            read: false,
            written: false,
        }),
        value: vec![],
        perms: vec![],
    });
    let written = Record::Node(Node {
        path: b"/b".to_vec(),
        transaction: Some(NodeTx {
            conn_id: 1,
            tx_id: 9,
            read: true,
            written: true,
        }),
        value: vec![0, 1],
        perms: vec![Perm {
            access: PermAccess::Both,
            stale: false,
            domid: 7,
        }],
    });
    #[rustfmt::skip]
    let le = [
        4, 0, 0, 0,  8, 0, 0, 0,  1, 0, 0, 0,  9, 0, 0, 0,
        // deleted: 16 + 3 = 19 -> 24
        5, 0, 0, 0,  24, 0, 0, 0,
        1, 0, 0, 0,  9, 0, 0, 0,
        3, 0,  0, 0,  0, 0,  0, 0,          // access 0, no perms
        b'/', b'a', 0,
        0, 0, 0, 0, 0,
        // read and written: 16 + 4 + 3 + 2 = 25 -> 32
        5, 0, 0, 0,  32, 0, 0, 0,
        1, 0, 0, 0,  9, 0, 0, 0,
        3, 0,  2, 0,  3, 0,  1, 0,
        b'b', 0, 7, 0,
        b'/', b'b', 0,
        0, 1,                               // value with a NUL
        0, 0, 0, 0, 0, 0, 0,
    ];
    both_ways(
        LE1,
        &[sock1(), t, deleted, written],
        &cat(&[&HDR_LE1, &SOCK1_LE, &le, &END]),
    );
}

#[test]
fn special_node_as_c_417_writes_it() {
    // xenstored_domain.c (4.17) dump_state_special_node: no value, the
    // permissions, path "@releaseDomain".
    let n = Record::Node(Node {
        path: b"@releaseDomain".to_vec(),
        transaction: None,
        value: vec![],
        perms: vec![Perm {
            access: PermAccess::None,
            stale: false,
            domid: 0,
        }],
    });
    // 16 + 4 + 15 = 35 -> 40.
    let mut le = vec![5, 0, 0, 0, 40, 0, 0, 0];
    le.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 15, 0, 0, 0, 0, 0, 1, 0]);
    le.extend_from_slice(b"n\0\0\0@releaseDomain\0");
    le.extend_from_slice(&[0; 5]);
    both_ways(LE1, &[n], &cat(&[&HDR_LE1, &le, &END]));
}

#[test]
fn global_quota_data() {
    let q = |name: &[u8], value| Quota {
        name: name.to_vec(),
        value,
    };
    let g = Record::GlobalQuota(GlobalQuota {
        per_domain: vec![q(b"nodes", 1000), q(b"memory", 0)],
        global: vec![q(b"x", 5)],
    });
    // 4 + 12 + 6 + 7 + 2 = 31 -> 32.
    #[rustfmt::skip]
    let le = [
        6, 0, 0, 0,  32, 0, 0, 0,
        2, 0,  1, 0,                        // n-dom-quota 2, n-glob-quota 1
        0xe8, 3, 0, 0,  0, 0, 0, 0,  5, 0, 0, 0,
        b'n', b'o', b'd', b'e', b's', 0,
        b'm', b'e', b'm', b'o', b'r', b'y', 0,
        b'x', 0,
        0,
    ];
    both_ways(LE1, &[g], &cat(&[&HDR_LE1, &le, &END]));
}

#[test]
fn domain_data() {
    let d = Record::Domain(Domain {
        domid: 3,
        features: 6,
        quotas: vec![Quota {
            name: b"nodes".to_vec(),
            value: 42,
        }],
    });
    // 8 + 4 + 6 = 18 -> 24.
    #[rustfmt::skip]
    let be = [
        0, 0, 0, 7,  0, 0, 0, 24,
        0, 3,  0, 1,                        // domain-id 3, n-quota 1
        0, 0, 0, 6,                         // features
        0, 0, 0, 42,
        b'n', b'o', b'd', b'e', b's', 0,
        0, 0, 0, 0, 0, 0,
    ];
    both_ways(BE2, &[d], &cat(&[&HDR_BE2, &be, &END]));
}

#[test]
fn domain_data_version_1_has_no_features() {
    let d = |features| {
        Record::Domain(Domain {
            domid: 3,
            features,
            quotas: vec![],
        })
    };
    let le = [7, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0];
    both_ways(LE1, &[d(0)], &cat(&[&HDR_LE1, &le, &END]));
    // A version-1 reader ignores the field.
    let mut with = le;
    with[12] = 6;
    let s = Stream::read(&cat(&[&HDR_LE1, &with, &END])).unwrap();
    assert_eq!(s.records, [d(0)]);
    // And the writer refuses to lose it.
    let mut w = Writer::new(Vec::new(), LE1).unwrap();
    assert!(matches!(
        w.write_record(&d(6)),
        Err(Error::NotInVersion {
            record: RecordType::Domain,
            version: 1,
            ..
        })
    ));
}

#[test]
fn document_length_without_padding_is_read_too() {
    // The document's `len` excludes the padding; C writes it padded. A
    // record with the unpadded length reads the same.
    #[rustfmt::skip]
    let le = [
        3, 0, 0, 0,  14, 0, 0, 0,           // len 14: body only
        1, 0, 0, 0,  3, 0,  3, 0,
        b'/', b'a', 0,  b't', b'k', 0,
        0, 0,                               // padding, outside len
    ];
    let s = Stream::read(&cat(&[&HDR_LE1, &SOCK1_LE, &le, &END])).unwrap();
    assert_eq!(
        s.records[1],
        Record::Watch(Watch {
            conn_id: 1,
            path: b"/a".to_vec(),
            token: b"tk".to_vec(),
            depth: None,
        })
    );
}

#[test]
fn padding_and_ignored_fields_are_ignored() {
    // C leaves the padding of DOMAIN_DATA and GLOBAL_QUOTA_DATA records
    // uninitialised (domain.c, talloc_size); the socket pad, the
    // WATCH_DATA_EXTENDED pad and tx-id/access of committed nodes are to
    // be ignored as well.
    // 8 + 4 + 3 = 15 -> 16: one byte of padding, here not zero.
    #[rustfmt::skip]
    let dom = [
        7, 0, 0, 0,  16, 0, 0, 0,
        3, 0,  1, 0,  0, 0, 0, 0,
        1, 0, 0, 0,  b'a', b'b', 0,  0xaa,
    ];
    let s = Stream::read(&cat(&[&HDR_LE2, &dom, &END])).unwrap();
    assert_eq!(
        s.records,
        [Record::Domain(Domain {
            domid: 3,
            features: 0,
            quotas: vec![Quota {
                name: b"ab".to_vec(),
                value: 1
            }],
        })]
    );

    let mut sock = SOCK1_LE;
    sock[20..24].copy_from_slice(&[1, 2, 3, 4]); // socket pad
    #[rustfmt::skip]
    let node = [
        5, 0, 0, 0,  24, 0, 0, 0,
        0, 0, 0, 0,  0x55, 0, 0, 0,         // committed, tx-id 0x55 ignored
        2, 0,  0, 0,  0xff, 0xff,  1, 0,    // access 0xffff ignored
        b'b', 0, 0, 0,
        b'/', 0,
        0xde, 0xad,                         // padding
    ];
    #[rustfmt::skip]
    let wext = [
        8, 0, 0, 0,  16, 0, 0, 0,
        1, 0, 0, 0,  2, 0,  1, 0,
        0xff, 0xff,  0x99, 0x99,            // depth unlimited, pad
        b'/', 0,  0,  0x77,
    ];
    let s = Stream::read(&cat(&[&HDR_LE2, &sock, &node, &wext, &END])).unwrap();
    assert_eq!(s.records[0], sock1());
    assert_eq!(
        s.records[1],
        Record::Node(Node {
            path: b"/".to_vec(),
            transaction: None,
            value: vec![],
            perms: vec![Perm {
                access: PermAccess::Both,
                stale: false,
                domid: 0,
            }],
        })
    );
    assert_eq!(
        s.records[2],
        Record::Watch(Watch {
            conn_id: 1,
            path: b"/".to_vec(),
            token: vec![],
            depth: Some(DEPTH_UNLIMITED),
        })
    );
}

#[test]
fn c_order_stream_reads_in_order() {
    // The order C 4.21+ writes (lu.c lu_dump_state): GLOBAL, connections
    // each followed by its watches, nodes from "/" then the special
    // nodes, DOMAIN records, END.
    let perm0 = vec![Perm {
        access: PermAccess::None,
        stale: false,
        domid: 0,
    }];
    let node = |p: &[u8]| {
        Record::Node(Node {
            path: p.to_vec(),
            transaction: None,
            value: vec![],
            perms: perm0.clone(),
        })
    };
    let recs = vec![
        Record::Global(Global {
            socket_fd: 3,
            evtchn_fd: 5,
        }),
        Record::Connection(Connection {
            conn_id: 1,
            kind: ConnKind::Ring {
                domid: 0,
                target: None,
                evtchn: 7,
            },
            input: Input::default(),
            output: Output::default(),
            unique_id: Some(1),
        }),
        Record::Watch(Watch {
            conn_id: 1,
            path: b"@releaseDomain".to_vec(),
            token: b"t".to_vec(),
            depth: None,
        }),
        node(b"/"),
        node(b"/local"),
        node(b"@releaseDomain"),
        node(b"@introduceDomain"),
        Record::Domain(Domain {
            domid: 0,
            features: 0,
            quotas: vec![],
        }),
    ];
    for h in [LE1, LE2, BE2] {
        let bytes = write(h, &recs);
        // Every record body is a multiple of 8 and so is the whole.
        assert_eq!(bytes.len() % 8, 0);
        let got: Vec<Record> = Reader::new(&bytes).unwrap().collect::<Result<_>>().unwrap();
        assert_eq!(got, recs);
    }
}
