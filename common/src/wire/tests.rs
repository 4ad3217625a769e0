use super::*;
use proptest::prelude::*;

extern crate std;
use std::vec::Vec;

fn encap_bytes(flags: u8, service: u16, backend: u32) -> Vec<u8> {
    TalariaEncap::new(flags, service, backend)
        .to_bytes()
        .to_vec()
}

#[test]
fn emitted_layout_is_the_documented_one() {
    let b = encap_bytes(flags::COOKIE_VALID | flags::REPLY, 0x0102, 0x0a0b0c0d);
    assert_eq!(
        b,
        [
            0x03, 0x40, 0x08, 0x00, 0, 0, 0, 0, // Geneve: optlen 3 words, C bit, IPv4, VNI 0
            0xff, 0x7a, 0xa1, 0x02, // class, critical type, 2 data words
            0x01, 0x06, 0x01, 0x02, // version, flags, service id
            0x0a, 0x0b, 0x0c, 0x0d, // backend id
        ]
    );
    assert_eq!(ENCAP_OVERHEAD, 48);
}

#[test]
fn unknown_flag_bits_are_not_sent() {
    assert_eq!(TalariaEncap::new(0xff, 1, 2).opt.flags, flags::KNOWN);
}

#[test]
fn skips_non_critical_options_and_rejects_critical_ones() {
    let ours = &encap_bytes(flags::NEW_FLOW, 7, 0)[GENEVE_HDR_LEN..];
    let other = |critical: bool| {
        [
            0x01,
            0x02,
            if critical { 0x85 } else { 0x05 },
            0x01,
            0xaa,
            0xbb,
            0xcc,
            0xdd,
        ]
    };
    let with = |first: &[u8], second: &[u8]| {
        let words = ((first.len() + second.len()) / 4) as u8;
        let mut b = std::vec![words, 0x40, 0x08, 0x00, 0, 0, 0, 0];
        b.extend_from_slice(first);
        b.extend_from_slice(second);
        b.extend_from_slice(&[0x45; 20]); // inner packet
        b
    };
    let p = parse(&with(&other(false), ours)).unwrap();
    assert_eq!(p.opt.service_id.get(), 7);
    assert_eq!(p.inner_offset, GENEVE_HDR_LEN + 20);
    assert_eq!(
        parse(&with(ours, &other(true))),
        Err(WireError::UnknownCriticalOption {
            class: 0x0102,
            opt_type: 0x85
        })
    );
    assert_eq!(
        parse(&with(&other(false), &[])),
        Err(WireError::MissingOption)
    );
}

#[test]
fn errors_map_to_their_drop_reasons() {
    assert_eq!(WireError::Truncated.drop_reason(), DropReason::Malformed);
    assert_eq!(
        WireError::TalariaVersion(2).drop_reason(),
        DropReason::TalariaVersion
    );
    assert_eq!(
        WireError::OptionLength.drop_reason(),
        DropReason::OptionLength
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Any bytes: parsed or refused, never a panic; what parses validates.
    #[test]
    fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
        if let Ok(p) = parse(&bytes) {
            prop_assert!(p.inner_offset <= bytes.len());
            prop_assert_eq!(p.opt.version, TALARIA_VERSION);
        }
    }

    /// A valid header with bytes overwritten: refused, or parsed to what
    /// the bytes say.
    #[test]
    fn mutated_headers_parse_or_are_refused(
        at in proptest::collection::vec((0usize..TalariaEncap::LEN, any::<u8>()), 1..4),
    ) {
        let mut bytes = encap_bytes(flags::COOKIE_VALID, 7, 42);
        for (i, b) in at {
            bytes[i] = b;
        }
        if let Ok(p) = parse(&bytes) {
            prop_assert_eq!(p.inner_offset, TalariaEncap::LEN);
            prop_assert_eq!(p.opt.service_id.get(), u16::from_be_bytes([bytes[14], bytes[15]]));
        }
    }
}

proptest! {
    #[test]
    fn round_trip(flags in any::<u8>(), service in any::<u16>(), backend in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let encap = TalariaEncap::new(flags, service, backend);
        let mut bytes = encap.to_bytes().to_vec();
        bytes.extend_from_slice(&payload);
        let p = parse(&bytes).unwrap();
        prop_assert_eq!(p.geneve, encap.geneve);
        prop_assert_eq!(p.opt, encap.opt);
        prop_assert_eq!(p.inner_offset, TalariaEncap::LEN);
        prop_assert_eq!(&bytes[p.inner_offset..], &payload[..]);
        prop_assert!(encap.validate().is_ok());
        prop_assert_eq!(p.opt.cookie(), (flags & flags::COOKIE_VALID != 0).then_some(backend));
    }

    #[test]
    fn truncation_is_rejected(cut in 0usize..TalariaEncap::LEN) {
        let bytes = encap_bytes(flags::NEW_FLOW, 1, 0);
        let err = parse(&bytes[..cut]).unwrap_err();
        prop_assert!(matches!(err, WireError::Truncated | WireError::OptionLength), "{:?}", err);
    }

    #[test]
    fn wrong_geneve_version_is_rejected(version in 1u8..4) {
        let mut encap = TalariaEncap::new(0, 1, 2);
        encap.geneve.ver_opt_len |= version << 6;
        prop_assert_eq!(parse(&encap.to_bytes()), Err(WireError::GeneveVersion(version)));
        prop_assert_eq!(encap.validate(), Err(WireError::GeneveVersion(version)));
    }

    #[test]
    fn wrong_talaria_version_is_rejected(version in any::<u8>().prop_filter("not ours", |v| *v != TALARIA_VERSION)) {
        let mut encap = TalariaEncap::new(0, 1, 2);
        encap.opt.version = version;
        prop_assert_eq!(parse(&encap.to_bytes()), Err(WireError::TalariaVersion(version)));
        prop_assert_eq!(encap.validate(), Err(WireError::TalariaVersion(version)));
    }

    #[test]
    fn bad_option_length_is_rejected(words in 0u8..32, total in 0u8..64) {
        prop_assume!(words != TALARIA_OPT_WORDS || total != 3);
        let mut encap = TalariaEncap::new(0, 1, 2);
        encap.opt.len = words;
        encap.geneve.ver_opt_len = total;
        let mut bytes = encap.to_bytes().to_vec();
        bytes.resize(GENEVE_HDR_LEN + 4 * usize::from(total), 0);
        let parsed = parse(&bytes);
        if words == TALARIA_OPT_WORDS && total > 3 {
            // Ours, then zero bytes: a valid run of empty non-critical options.
            prop_assert!(parsed.is_ok(), "{:?}", parsed);
        } else {
            prop_assert!(
                matches!(parsed, Err(WireError::OptionLength | WireError::MissingOption)),
                "{:?}", parsed
            );
        }
        prop_assert_eq!(encap.validate(), Err(WireError::OptionLength));
    }

    #[test]
    fn unknown_critical_option_is_rejected(class in any::<u16>(), ty in 0u8..0x80) {
        prop_assume!(class != TALARIA_OPT_CLASS);
        let mut encap = TalariaEncap::new(0, 1, 2);
        encap.opt.class = Be16::new(class);
        encap.opt.opt_type = ty | OPT_TYPE_CRITICAL;
        let want = WireError::UnknownCriticalOption { class, opt_type: ty | OPT_TYPE_CRITICAL };
        prop_assert_eq!(parse(&encap.to_bytes()), Err(want));
        prop_assert_eq!(encap.validate(), Err(want));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = parse(&bytes);
    }
}
