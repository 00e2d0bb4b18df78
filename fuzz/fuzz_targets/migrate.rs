//! Feeds arbitrary bytes to the migration-stream reader: it must give
//! records or an error, never panic; whatever it reads must write back
//! and read again to the same records, and the same bytes behind a valid
//! header of each version and byte order must behave alike.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstore_migrate::{Endian, Item, Reader, Record, Stream, StreamHeader, Version};

fn check(data: &[u8]) {
    if let Ok(s) = Stream::read(data) {
        let bytes = s.to_bytes().expect("a stream read can be written");
        assert_eq!(bytes.len() % 8, 0);
        let again = Stream::read(&bytes).expect("a stream written can be read");
        assert_eq!(again, s);
        assert_eq!(again.to_bytes().expect("and written again"), bytes);
    }
    // The borrowing reader gives what the record reader gives, error for
    // error.
    if let (Ok(mut r), Ok(mut items)) = (Reader::new(data), Reader::new(data)) {
        loop {
            match (r.next_record(), items.next_item()) {
                (Ok(None), Ok(None)) => break,
                (Err(a), Err(b)) => {
                    assert_eq!(a.to_string(), b.to_string());
                    break;
                }
                (Ok(Some(rec)), Ok(Some(Item::Record(item)))) => assert_eq!(item, rec),
                (Ok(Some(Record::Node(n))), Ok(Some(Item::Node(item)))) => {
                    assert!(n.transaction.is_none());
                    assert_eq!(item.path, &n.path[..]);
                    assert_eq!(item.value, &n.value[..]);
                    assert!(item.perms.iter().eq(n.perms.iter().copied()));
                }
                (a, b) => panic!("the readers disagree: {a:?} / {b:?}"),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // The first byte picks a header; the rest is the records.
    if let Some((&sel, rest)) = data.split_first() {
        let h = StreamHeader {
            version: if sel & 1 == 0 {
                Version::V1
            } else {
                Version::V2
            },
            endian: if sel & 2 == 0 {
                Endian::Little
            } else {
                Endian::Big
            },
        };
        let mut stream = b"xenstore".to_vec();
        stream.extend_from_slice(&h.version.number().to_be_bytes());
        stream.extend_from_slice(&u32::from(h.endian == Endian::Big).to_be_bytes());
        stream.extend_from_slice(rest);
        check(&stream);
    }
});
