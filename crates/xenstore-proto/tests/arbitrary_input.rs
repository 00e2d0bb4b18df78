//! Property tests: the decoder and parsers accept any bytes without
//! panicking, and encoding round-trips.

use proptest::prelude::*;
use xenstore_proto::{args, number, path, Decoder, Header, Message, PermList, PAYLOAD_MAX};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoder_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20)) {
        let mut d = Decoder::new();
        for c in &chunks {
            d.feed(c);
            loop {
                match d.next_message() {
                    Ok(Some(m)) => prop_assert!(m.payload.len() <= PAYLOAD_MAX),
                    Ok(None) => break,
                    Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn messages_round_trip(t in any::<u32>(), r in any::<u32>(), tx in any::<u32>(),
                           payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..10),
                           split in any::<usize>()) {
        let mut wire = Vec::new();
        let msgs: Vec<Message> = payloads.iter().map(|p| Message::new(t, r, tx, p.clone())).collect();
        for m in &msgs {
            m.encode_into(&mut wire);
        }
        let cut = split % (wire.len() + 1);
        let mut d = Decoder::new();
        d.feed(&wire[..cut]);
        let mut got = Vec::new();
        while let Ok(Some(m)) = d.next_message() { got.push(m); }
        d.feed(&wire[cut..]);
        while let Ok(Some(m)) = d.next_message() { got.push(m); }
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn parsers_never_panic(s in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = args::one_arg(&s);
        let _ = args::write_args(&s);
        let _ = args::exactly::<3>(&s);
        let _ = number::parse_domid(&s);
        let _ = number::atoi(&s);
        let _ = number::strtol_full(&s);
        let _ = PermList::parse(args::strings(&s));
        if let Ok(r) = path::resolve(&s, "/local/domain/3") {
            prop_assert!(path::validate(r.path.as_bytes()).is_ok());
            let _ = path::ancestors(&r.path).count();
            let _ = path::measured_len(&r.path);
        }
    }

    #[test]
    fn header_round_trip(b in any::<[u8; 16]>()) {
        prop_assert_eq!(Header::from_bytes(&b).to_bytes(), b);
    }
}
