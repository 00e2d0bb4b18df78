//! Property tests: any sequence of valid records round-trips through the
//! writer and the reader (versions 1 and 2, both byte orders, byte for
//! byte); any truncation of a valid stream is refused as truncated; any
//! input, arbitrary or a damaged valid stream, gives records or an error,
//! never a panic, and what is read writes back to the same records.

use std::collections::HashSet;

use proptest::collection::vec;
use proptest::prelude::*;
use xenstore_migrate::*;

fn no_nul(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(1u8..=255, 0..max)
}

fn message() -> impl Strategy<Value = Message> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        vec(any::<u8>(), 0..40),
    )
        .prop_map(|(msg_type, req_id, tx_id, payload)| Message {
            msg_type,
            req_id,
            tx_id,
            payload,
        })
}

fn input() -> impl Strategy<Value = Input> {
    let partial = prop_oneof![
        Just(None),
        vec(any::<u8>(), 1..16).prop_map(|h| Some(PartialInput::Header(h))),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            vec(any::<u8>(), 0..30)
        )
            .prop_map(|(msg_type, req_id, tx_id, extra, received)| {
                Some(PartialInput::Payload {
                    msg_type,
                    req_id,
                    tx_id,
                    len: received.len() as u32 + 1 + (extra >> 1),
                    received,
                })
            }),
    ];
    (vec(message(), 0..3), partial).prop_map(|(requests, partial)| Input { requests, partial })
}

fn output() -> impl Strategy<Value = Output> {
    (vec(any::<u8>(), 0..30), vec(message(), 0..3))
        .prop_map(|(partial, messages)| Output { partial, messages })
}

fn conn_kind() -> impl Strategy<Value = ConnKind> {
    prop_oneof![
        (
            any::<u16>(),
            proptest::option::of(
                any::<u16>().prop_filter("not DOMID_INVALID", |&d| d != DOMID_INVALID)
            ),
            any::<u32>()
        )
            .prop_map(|(domid, target, evtchn)| ConnKind::Ring {
                domid,
                target,
                evtchn
            }),
        any::<i32>().prop_map(|fd| ConnKind::Socket { fd }),
    ]
}

fn perm() -> impl Strategy<Value = Perm> {
    (
        prop_oneof![
            Just(PermAccess::None),
            Just(PermAccess::Read),
            Just(PermAccess::Write),
            Just(PermAccess::Both)
        ],
        any::<bool>(),
        any::<u16>(),
    )
        .prop_map(|(access, stale, domid)| Perm {
            access,
            stale,
            domid,
        })
}

fn quotas(max: usize) -> impl Strategy<Value = Vec<Quota>> {
    vec(
        (vec(1u8..=255, 1..12), any::<u32>()).prop_map(|(name, value)| Quota { name, value }),
        0..max,
    )
}

fn node() -> impl Strategy<Value = Node> {
    (
        prop_oneof![Just(b'/'), Just(b'@')],
        no_nul(20),
        vec(any::<u8>(), 0..30),
        vec(perm(), 1..4),
        0u8..3,
        any::<u32>(),
    )
        .prop_map(|(first, rest, value, perms, kind, sel)| {
            let mut path = vec![first];
            path.extend(rest);
            // conn-id/tx-id chosen later among the transactions defined.
            let tx = |read, written| NodeTx {
                conn_id: sel | 1,
                tx_id: sel,
                read,
                written,
            };
            match kind {
                0 => Node {
                    path,
                    transaction: None,
                    value,
                    perms,
                },
                1 => Node {
                    path,
                    transaction: Some(tx(false, false)),
                    value: vec![],
                    perms: vec![],
                },
                _ => Node {
                    path,
                    transaction: Some(tx(sel & 2 != 0, sel & 2 == 0 || sel & 4 != 0)),
                    value,
                    perms,
                },
            }
        })
}

/// Records with arbitrary ids; [`make_valid`] fixes the references.
fn raw_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        1 => (any::<i32>(), any::<i32>()).prop_map(|(socket_fd, evtchn_fd)| Record::Global(Global {
            socket_fd,
            evtchn_fd
        })),
        3 => (any::<u32>(), conn_kind(), input(), output(), proptest::option::of(any::<u64>()))
            .prop_map(|(conn_id, kind, input, output, unique_id)| {
                Record::Connection(Connection {
                    conn_id,
                    kind,
                    input,
                    output,
                    unique_id,
                })
            }),
        3 => (any::<u32>(), no_nul(30), no_nul(30), proptest::option::of(any::<u16>()))
            .prop_map(|(conn_id, path, token, depth)| Record::Watch(Watch {
                conn_id,
                path,
                token,
                depth
            })),
        1 => (any::<u32>(), any::<u32>()).prop_map(|(conn_id, tx_id)| Record::Transaction(
            Transaction { conn_id, tx_id }
        )),
        4 => node().prop_map(Record::Node),
        1 => (quotas(5), quotas(3)).prop_map(|(per_domain, global)| Record::GlobalQuota(
            GlobalQuota { per_domain, global }
        )),
        1 => (any::<u16>(), any::<u32>(), quotas(5)).prop_map(|(domid, features, quotas)| {
            Record::Domain(Domain {
                domid,
                features,
                quotas,
            })
        }),
    ]
}

/// Turns arbitrary records into a valid sequence for `version`: fresh
/// connection ids, references to connections and transactions defined
/// earlier (records that cannot have one are dropped or made committed),
/// one DOMAIN_DATA per domain, nothing version 2 in version 1.
fn make_valid(raw: Vec<Record>, version: Version) -> Vec<Record> {
    let mut conns: Vec<u32> = Vec::new();
    let mut txs: Vec<(u32, u32)> = Vec::new();
    let mut domains = HashSet::new();
    let mut out = Vec::new();
    for r in raw {
        let r = match r {
            Record::Connection(mut c) => {
                if c.conn_id == 0 || conns.contains(&c.conn_id) {
                    c.conn_id = (1..).find(|i| !conns.contains(i)).unwrap();
                }
                conns.push(c.conn_id);
                Record::Connection(c)
            }
            Record::Watch(mut w) => {
                if conns.is_empty() {
                    continue;
                }
                w.conn_id = conns[w.conn_id as usize % conns.len()];
                if version == Version::V1 {
                    w.depth = None;
                }
                Record::Watch(w)
            }
            Record::Transaction(mut t) => {
                if conns.is_empty() {
                    continue;
                }
                t.conn_id = conns[t.conn_id as usize % conns.len()];
                if txs.contains(&(t.conn_id, t.tx_id)) {
                    continue;
                }
                txs.push((t.conn_id, t.tx_id));
                Record::Transaction(t)
            }
            Record::Node(mut n) => {
                if let Some(tx) = &mut n.transaction {
                    if txs.is_empty() {
                        n.transaction = None;
                        if n.perms.is_empty() {
                            n.perms.push(Perm {
                                access: PermAccess::None,
                                stale: false,
                                domid: 0,
                            });
                        }
                    } else {
                        (tx.conn_id, tx.tx_id) = txs[tx.conn_id as usize % txs.len()];
                    }
                }
                Record::Node(n)
            }
            Record::Domain(mut d) => {
                if !domains.insert(d.domid) {
                    continue;
                }
                if version == Version::V1 {
                    d.features = 0;
                }
                Record::Domain(d)
            }
            r @ (Record::Global(_) | Record::GlobalQuota(_)) => r,
        };
        out.push(r);
    }
    out
}

fn header() -> impl Strategy<Value = StreamHeader> {
    (
        prop_oneof![Just(Version::V1), Just(Version::V2)],
        prop_oneof![Just(Endian::Little), Just(Endian::Big)],
    )
        .prop_map(|(version, endian)| StreamHeader { version, endian })
}

fn valid_stream() -> impl Strategy<Value = Stream> {
    (header(), vec(raw_record(), 0..12)).prop_map(|(header, raw)| Stream {
        header,
        records: make_valid(raw, header.version),
    })
}

/// Reading anything either fails or gives records that write back and
/// read again to the same records.
fn read_is_consistent(data: &[u8]) -> std::result::Result<(), TestCaseError> {
    if let Ok(s) = Stream::read(data) {
        let again = s.to_bytes().expect("what was read can be written");
        prop_assert_eq!(Stream::read(&again).expect("and read again"), s);
    }
    // The record reader agrees with Stream::read up to the first error,
    // and the borrowing reader with the record reader, error for error.
    if let (Ok(mut r), Ok(mut items)) = (Reader::new(data), Reader::new(data)) {
        loop {
            match (r.next_record(), items.next_item()) {
                (Ok(None), Ok(None)) => break,
                (Err(a), Err(b)) => {
                    prop_assert_eq!(a.to_string(), b.to_string());
                    break;
                }
                (Ok(Some(rec)), Ok(Some(item))) => prop_assert_eq!(owned(item), rec),
                (a, b) => prop_assert!(false, "the readers disagree: {:?} / {:?}", a, b),
            }
        }
        prop_assert_eq!(r.offset(), items.offset());
    }
    Ok(())
}

/// What an item stands for, as the record reader gives it.
fn owned(item: Item<'_>) -> Record {
    match item {
        Item::Node(n) => Record::Node(Node {
            path: n.path.to_vec(),
            transaction: None,
            value: n.value.to_vec(),
            perms: n.perms.iter().collect(),
        }),
        Item::Record(r) => r,
    }
}

/// `s` written with [`Writer::write_node`] for its committed nodes.
fn write_borrowing(s: &Stream) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), s.header).unwrap();
    for rec in &s.records {
        match rec {
            Record::Node(n) if n.transaction.is_none() => {
                w.write_node(&n.path, &n.value, &n.perms).unwrap()
            }
            r => w.write_record(r).unwrap(),
        }
    }
    w.finish().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn valid_records_round_trip(s in valid_stream()) {
        let bytes = s.to_bytes().unwrap();
        prop_assert_eq!(bytes.len() % 8, 0);
        let back = Stream::read(&bytes).unwrap();
        prop_assert_eq!(&back, &s);
        // Byte for byte as well.
        prop_assert_eq!(back.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn both_versions_agree_on_version_1_records(raw in vec(raw_record(), 0..12)) {
        // Records valid in version 1 read the same from a version-2 stream,
        // and the two encodings differ only in the header.
        let records = make_valid(raw, Version::V1);
        for endian in [Endian::Little, Endian::Big] {
            let v1 = Stream { header: StreamHeader { version: Version::V1, endian }, records: records.clone() };
            let v2 = Stream { header: StreamHeader { version: Version::V2, endian }, records: records.clone() };
            let (b1, b2) = (v1.to_bytes().unwrap(), v2.to_bytes().unwrap());
            prop_assert_eq!(&b1[16..], &b2[16..]);
            prop_assert_eq!(Stream::read(&b2).unwrap().records, records.clone());
        }
    }

    #[test]
    fn committed_nodes_written_from_borrowed_parts_are_the_same_bytes(s in valid_stream()) {
        let bytes = s.to_bytes().unwrap();
        prop_assert_eq!(write_borrowing(&s), bytes.clone());
        read_is_consistent(&bytes)?;
    }

    #[test]
    fn every_truncation_is_refused(s in valid_stream()) {
        let bytes = s.to_bytes().unwrap();
        for cut in 0..bytes.len() {
            let r = Stream::read(&bytes[..cut]);
            prop_assert!(matches!(r, Err(Error::Truncated { .. })), "cut {}: {:?}", cut, r);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..600)) {
        read_is_consistent(&data)?;
    }

    #[test]
    fn arbitrary_records_after_a_good_header_never_panic(
        h in header(),
        words in vec((0u32..10, 0u32..64, vec(any::<u8>(), 0..64)), 0..8),
    ) {
        // Plausible record headers (known types, small lengths) with
        // arbitrary bodies get past the first checks more often.
        let mut data = s_header(h);
        for (ty, len, body) in words {
            data.extend_from_slice(&word(h.endian, ty));
            data.extend_from_slice(&word(h.endian, len));
            data.extend_from_slice(&body);
        }
        data.extend_from_slice(&[0; 8]);
        read_is_consistent(&data)?;
    }

    #[test]
    fn changed_lengths_never_panic(s in valid_stream(), pick in any::<usize>(), delta in -9i64..10) {
        // A record length off by a little (unpadded, too short, too long),
        // then the stream cut anywhere.
        let mut bytes = s.to_bytes().unwrap();
        let offs = record_offsets(&bytes, s.header.endian);
        let at = offs[pick % offs.len()] + 4;
        let old = i64::from(match s.header.endian {
            Endian::Little => u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()),
            Endian::Big => u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()),
        });
        let new = (old + delta).clamp(0, i64::from(u32::MAX)) as u32;
        bytes[at..at + 4].copy_from_slice(&word(s.header.endian, new));
        for cut in (0..=bytes.len()).rev() {
            read_is_consistent(&bytes[..cut])?;
        }
    }

    #[test]
    fn damaged_streams_never_panic(
        s in valid_stream(),
        edits in vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = s.to_bytes().unwrap();
        for (at, v) in edits {
            let i = at % bytes.len();
            bytes[i] = v;
        }
        read_is_consistent(&bytes)?;
    }
}

/// Offsets of the record headers of a stream the crate wrote.
fn record_offsets(bytes: &[u8], e: Endian) -> Vec<usize> {
    let mut offs = Vec::new();
    let mut at = 16;
    while at + 8 <= bytes.len() {
        offs.push(at);
        let len = match e {
            Endian::Little => u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()),
            Endian::Big => u32::from_be_bytes(bytes[at + 4..at + 8].try_into().unwrap()),
        };
        at += 8 + len as usize;
    }
    offs
}

fn s_header(h: StreamHeader) -> Vec<u8> {
    let mut v = b"xenstore".to_vec();
    v.extend_from_slice(&h.version.number().to_be_bytes());
    v.extend_from_slice(&u32::from(h.endian == Endian::Big).to_be_bytes());
    v
}

fn word(e: Endian, v: u32) -> [u8; 4] {
    match e {
        Endian::Little => v.to_le_bytes(),
        Endian::Big => v.to_be_bytes(),
    }
}
