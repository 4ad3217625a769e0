//! P4Runtime bytestrings, checked against the examples and rules of the
//! spec section "Bytestrings".

use std::net::Ipv4Addr;

use proptest::prelude::*;
use talaria_p4rt::bytestring::{
    decode, decode_ipv4, decode_mac, encode, encode_bytes, encode_ipv4, encode_mac,
};
use talaria_p4rt::google::rpc::Code;
use talaria_p4rt::Error;

#[test]
fn spec_examples_of_valid_bytestrings() {
    // (bitwidth, value, bytes on the wire, is that the canonical form)
    let examples: &[(u32, u128, &[u8], bool)] = &[
        (8, 0x63, b"\x63", true),
        (16, 0x63, b"\x00\x63", false),
        (16, 0x63, b"\x63", true),
        (16, 0x3064, b"\x30\x64", true),
        (16, 0x3064, b"\x00\x30\x64", false),
        (12, 0x63, b"\x00\x63", false),
        (12, 0x63, b"\x63", true),
        (12, 0x63, b"\x00\x00\x63", false),
        (16, 0, b"\x00\x00", false),
        (16, 0, b"\x00", true),
    ];
    for &(bitwidth, value, bytes, canonical) in examples {
        assert_eq!(
            decode(bytes, bitwidth).unwrap(),
            value,
            "{bytes:02x?} as bit<{bitwidth}>"
        );
        assert_eq!(encode(value, bitwidth).unwrap() == bytes, canonical);
        assert_eq!(
            encode_bytes(bytes, bitwidth).unwrap(),
            encode(value, bitwidth).unwrap()
        );
    }
}

#[test]
fn zero_is_one_zero_byte() {
    assert_eq!(encode(0, 1).unwrap(), [0]);
    assert_eq!(encode(0, 128).unwrap(), [0]);
    assert_eq!(encode_bytes(&[0, 0, 0, 0], 32).unwrap(), [0]);
    assert_eq!(decode(&[0], 1).unwrap(), 0);
}

#[test]
fn empty_bytestring_is_out_of_range() {
    let error = decode(&[], 8).unwrap_err();
    assert!(matches!(error, Error::EmptyBytestring));
    assert_eq!(error.code(), Code::OutOfRange);
    assert!(encode_bytes(&[], 8).is_err());
}

#[test]
fn values_wider_than_the_field_are_out_of_range() {
    let error = encode(256, 8).unwrap_err();
    assert_eq!(
        error.to_string(),
        "value needs 9 bits, more than bit<8> holds"
    );
    assert_eq!(error.code(), Code::OutOfRange);
    // Spec: bit<9> takes at most 0x01ff, whatever the padding.
    assert_eq!(decode(&[0x01, 0xff], 9).unwrap(), 511);
    assert_eq!(decode(&[0x00, 0x00, 0x01, 0xff], 9).unwrap(), 511);
    assert!(matches!(
        decode(&[0x02, 0x00], 9),
        Err(Error::BytestringOutOfRange {
            bits_needed: 10,
            bitwidth: 9
        })
    ));
}

#[test]
fn zero_bitwidth_is_invalid() {
    let error = encode(0, 0).unwrap_err();
    assert!(matches!(error, Error::InvalidBitwidth { bitwidth: 0 }));
    assert_eq!(error.code(), Code::InvalidArgument);
}

#[test]
fn wide_fields_decode_while_the_value_fits_u128() {
    assert_eq!(decode(&[0; 40], 300).unwrap(), 0);
    assert_eq!(decode(&[0x12, 0x34], 300).unwrap(), 0x1234);
    let mut seventeen_bytes = [0; 17];
    seventeen_bytes[0] = 1;
    assert!(matches!(
        decode(&seventeen_bytes, 300),
        Err(Error::ExceedsU128 { bits_needed: 129 })
    ));
    assert_eq!(
        encode_bytes(&seventeen_bytes, 129).unwrap(),
        seventeen_bytes
    );
}

#[test]
fn ipv4_addresses() {
    assert_eq!(encode_ipv4(Ipv4Addr::new(10, 0, 0, 1)), [10, 0, 0, 1]);
    assert_eq!(encode_ipv4(Ipv4Addr::new(0, 0, 1, 2)), [1, 2]);
    assert_eq!(encode_ipv4(Ipv4Addr::UNSPECIFIED), [0]);
    assert_eq!(decode_ipv4(&[1, 2]).unwrap(), Ipv4Addr::new(0, 0, 1, 2));
    assert_eq!(
        decode_ipv4(&[0, 192, 168, 0, 1]).unwrap(),
        Ipv4Addr::new(192, 168, 0, 1)
    );
    assert!(decode_ipv4(&[1, 0, 0, 0, 0]).is_err());
}

#[test]
fn mac_addresses() {
    let mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
    assert_eq!(encode_mac(mac), mac);
    assert_eq!(encode_mac([0, 0, 0, 0, 0, 7]), [7]);
    assert_eq!(decode_mac(&[7]).unwrap(), [0, 0, 0, 0, 0, 7]);
    assert_eq!(decode_mac(&[0, 0x02, 0, 0, 0, 0, 0x01]).unwrap(), mac);
    assert!(decode_mac(&[1, 0, 0, 0, 0, 0, 0]).is_err());
}

/// Bits a value needs; zero needs one (spec).
fn bits_needed(value: u128) -> u32 {
    (128 - value.leading_zeros()).max(1)
}

/// A value and a bitwidth it fits in.
fn value_and_fitting_width() -> impl Strategy<Value = (u128, u32)> {
    (0u32..=128)
        .prop_flat_map(|bits| {
            let value = match bits {
                0 => Just(0u128).boxed(),
                128 => any::<u128>().boxed(),
                _ => (0..(1u128 << bits)).boxed(),
            };
            (value, 0u32..=64)
        })
        .prop_map(|(value, slack)| (value, bits_needed(value) + slack))
}

proptest! {
    #[test]
    fn decode_inverts_encode((value, bitwidth) in value_and_fitting_width()) {
        prop_assert_eq!(decode(&encode(value, bitwidth)?, bitwidth)?, value);
    }

    #[test]
    fn encode_gives_the_shortest_form((value, bitwidth) in value_and_fitting_width()) {
        let bytes = encode(value, bitwidth)?;
        prop_assert_eq!(bytes.len() as u32, bits_needed(value).div_ceil(8));
        prop_assert!(bytes == [0] || bytes[0] != 0);
    }

    #[test]
    fn leading_zero_bytes_do_not_matter(
        (value, bitwidth) in value_and_fitting_width(),
        padding in 0usize..24,
    ) {
        let mut padded = vec![0; padding];
        padded.extend(encode(value, bitwidth)?);
        prop_assert_eq!(decode(&padded, bitwidth)?, value);
        prop_assert_eq!(encode_bytes(&padded, bitwidth)?, encode(value, bitwidth)?);
    }

    #[test]
    fn values_that_do_not_fit_are_rejected(
        bitwidth in 1u32..128,
        excess_bits in 1u32..=8,
        low_bits: u128,
    ) {
        // A value whose top set bit lies `excess_bits` above the field.
        let top_bit = (bitwidth + excess_bits - 1).min(127);
        let value = (1u128 << top_bit) | (low_bits & ((1u128 << top_bit) - 1));
        let is_out_of_range = |e: Error| matches!(e, Error::BytestringOutOfRange { .. });
        prop_assert!(encode(value, bitwidth).is_err_and(is_out_of_range));
        prop_assert!(encode_bytes(&value.to_be_bytes(), bitwidth).is_err_and(is_out_of_range));
        prop_assert!(decode(&value.to_be_bytes(), bitwidth).is_err_and(is_out_of_range));
    }
}
