//! Feeds arbitrary bytes to the frame decoder and every payload parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstore_proto::{args, number, path, Decoder, PermList};

fuzz_target!(|data: &[u8]| {
    // The stream, cut at an arbitrary point.
    let cut = data.first().map_or(0, |&b| b as usize).min(data.len());
    let mut d = Decoder::new();
    d.feed(&data[..cut]);
    d.feed(&data[cut..]);
    while let Ok(Some(m)) = d.next_message() {
        assert_eq!(m.payload.len(), m.header.len as usize);
        let _ = args::one_arg(&m.payload);
        let _ = args::exactly::<2>(&m.payload);
        let _ = args::write_args(&m.payload);
        let strings = args::strings(&m.payload);
        let _ = PermList::parse(strings.iter().copied());
        for s in &strings {
            let _ = number::parse_domid(s);
            let _ = number::atoi(s);
            let _ = number::strtol_full(s);
            if let Ok(r) = path::resolve(s, "/local/domain/5") {
                let _ = path::parent(&r.path);
                let _ = path::depth(&r.path);
                let _ = path::measured_len(&r.path);
                let _ = path::ancestors(&r.path).count();
            }
        }
    }
});
