//! The P4Info loader on damaged input: the real P4Infos with bytes
//! overwritten, lines dropped or the text cut short are loaded or refused
//! with an error, never a panic, and a P4Info that loads either builds a
//! name/id schema or is refused by it.

mod common;

use proptest::prelude::*;
use talaria_p4rt::p4info::{self, Schema};

/// A damaged copy of `text`.
fn damage(text: &str, edits: &[(usize, u8, u8)]) -> String {
    let mut b = text.as_bytes().to_vec();
    for &(at, kind, byte) in edits {
        if b.is_empty() {
            break;
        }
        let at = at % b.len();
        match kind % 4 {
            0 => b[at] = byte,
            1 => b.truncate(at),
            2 => {
                // Drop the line around `at`.
                let start = b[..at]
                    .iter()
                    .rposition(|c| *c == b'\n')
                    .map_or(0, |i| i + 1);
                let end = b[at..]
                    .iter()
                    .position(|c| *c == b'\n')
                    .map_or(b.len(), |i| at + i);
                b.drain(start..end);
            }
            _ => b.insert(at, b"{}\":# \n0-"[usize::from(byte) % 9]),
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn damaged_p4info_loads_or_is_refused(
        full in any::<bool>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
    ) {
        let path = if full { common::full_p4info_path() } else { common::tiny_p4info_path() };
        let text = damage(&common::read(&path), &edits);
        if let Ok(info) = p4info::parse_text(&text) {
            let _ = Schema::new(&info);
        }
    }
}
