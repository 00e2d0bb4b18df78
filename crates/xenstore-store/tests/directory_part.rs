//! DIRECTORY_PART at every byte offset of child lists of many shapes
//! (names of varied lengths, small and large lists, after removals)
//! against the rule written out plainly over the whole wire form: whole
//! names from the offset (the first possibly cut by it) while the next
//! still fits under `4096 - len(gen) - 1`, an extra NUL when the end is
//! reached.

mod common;
use common::{z, DOM0, T};
use proptest::prelude::*;
use xenstore_proto::{MsgType, PAYLOAD_MAX};

fn expected(gen: &[u8], wire: &[u8], off: usize) -> Vec<u8> {
    let mut out = gen.to_vec();
    out.push(0);
    if off >= wire.len() {
        out.push(0);
        return out;
    }
    let maxlen = PAYLOAD_MAX - gen.len() - 2;
    let mut len = 0;
    loop {
        let rest = &wire[off + len..];
        let name_len = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if len + name_len >= maxlen {
            break;
        }
        len += name_len + 1;
        if off + len >= wire.len() {
            break;
        }
    }
    out.extend_from_slice(&wire[off..off + len]);
    if off + len == wire.len() {
        out.push(0);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn every_offset_gives_the_plain_rule(
        lens in prop::collection::vec(1usize..60, 1..400),
        removed in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let mut t = T::new();
        let mut names = Vec::new();
        for (i, l) in lens.iter().enumerate() {
            let name: String = format!("{i}-").chars().chain(std::iter::repeat_n('x', *l)).collect();
            t.ok(DOM0, MsgType::Mkdir, &z(&[&format!("/d/{name}")]));
            names.push(name);
        }
        for r in removed {
            if names.is_empty() { break; }
            let name = names.remove(r.index(names.len()));
            t.ok(DOM0, MsgType::Rm, &z(&[&format!("/d/{name}")]));
        }
        let wire: Vec<u8> = names.iter().flat_map(|n| n.bytes().chain([0])).collect();
        let first = t.ok(DOM0, MsgType::DirectoryPart, &z(&["/d", "0"]));
        let gen_len = first.iter().position(|&b| b == 0).unwrap();
        let gen = first[..gen_len].to_vec();
        let step = (wire.len() / 300).max(1);
        for off in (0..wire.len() + 3).step_by(step).chain([wire.len() - 1, wire.len()]) {
            let got = t.ok(DOM0, MsgType::DirectoryPart, &z(&["/d", &off.to_string()]));
            prop_assert_eq!(&got, &expected(&gen, &wire, off), "offset {}", off);
        }
        // A listing in parts, as a client reads it, while the list changes
        // between two parts: every part follows the list as it is then.
        let mut off = 0;
        let mut changed = false;
        loop {
            let got = t.ok(DOM0, MsgType::DirectoryPart, &z(&["/d", &off.to_string()]));
            let g = got.iter().position(|&b| b == 0).unwrap();
            let wire: Vec<u8> = names.iter().flat_map(|n| n.bytes().chain([0])).collect();
            prop_assert_eq!(&got, &expected(&got[..g], &wire, off), "offset {}", off);
            let chunk = &got[g + 1..];
            if chunk == [0] || chunk.ends_with(&[0, 0]) {
                break;
            }
            off += chunk.len();
            if !changed {
                changed = true;
                let name = names.remove(0);
                t.ok(DOM0, MsgType::Rm, &z(&[&format!("/d/{name}")]));
                t.ok(DOM0, MsgType::Mkdir, &z(&["/d/new-child"]));
                names.push("new-child".into());
            }
        }
    }
}
