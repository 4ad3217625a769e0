//! P4Runtime bytestrings: how P4 `bit<W>` values travel in `bytes` fields
//! (match keys, action parameters, packet metadata).
//!
//! The rules, from the P4Runtime spec section "Bytestrings":
//! - Big-endian. The canonical form is the shortest string that holds the
//!   value; zero counts as needing one bit, so its canonical form is the
//!   single byte `0x00`. [`encode`] and [`encode_bytes`] always produce it.
//! - A receiver also accepts longer strings padded with leading zero bytes,
//!   and checks only that the value, with its leading zero bits dropped, fits
//!   in W bits. An empty string is always rejected. Both rejections are
//!   `OUT_OF_RANGE` (see [`Error::code`]).
//!
//! Signed `int<W>` (sign-extended, and only allowed in `P4Data`) is not
//! handled here: talaria's P4 program has no signed control-plane values.

use std::net::Ipv4Addr;

use crate::{Error, Result};

/// Width of an IPv4 address field.
pub const IPV4_BITWIDTH: u32 = 32;
/// Width of an Ethernet MAC address field.
pub const MAC_BITWIDTH: u32 = 48;

/// The canonical bytestring of `value` for a `bit<bitwidth>` field.
pub fn encode(value: u128, bitwidth: u32) -> Result<Vec<u8>> {
    encode_bytes(&value.to_be_bytes(), bitwidth)
}

/// The canonical bytestring of a big-endian `value` for a `bit<bitwidth>`
/// field; also canonicalizes a received, possibly padded, bytestring.
pub fn encode_bytes(value: &[u8], bitwidth: u32) -> Result<Vec<u8>> {
    match significant_bytes(value, bitwidth)? {
        [] => Ok(vec![0]),
        significant => Ok(significant.to_vec()),
    }
}

/// The value of a received bytestring for a `bit<bitwidth>` field, in
/// canonical or zero-padded form. Fields wider than 128 bits decode as long
/// as the value itself fits in a `u128`.
pub fn decode(bytes: &[u8], bitwidth: u32) -> Result<u128> {
    let significant = significant_bytes(bytes, bitwidth)?;
    let mut be_bytes = [0u8; 16];
    let Some(start) = be_bytes.len().checked_sub(significant.len()) else {
        let bits_needed = bits_needed(significant);
        return Err(Error::ExceedsU128 { bits_needed });
    };
    be_bytes[start..].copy_from_slice(significant);
    Ok(u128::from_be_bytes(be_bytes))
}

/// The canonical bytestring of an IPv4 address (a `bit<32>` field).
pub fn encode_ipv4(address: Ipv4Addr) -> Vec<u8> {
    encode_bytes(&address.octets(), IPV4_BITWIDTH).expect("4 bytes fit in 32 bits")
}

/// The IPv4 address in a `bit<32>` bytestring.
pub fn decode_ipv4(bytes: &[u8]) -> Result<Ipv4Addr> {
    let value = decode(bytes, IPV4_BITWIDTH)?;
    Ok(Ipv4Addr::from(value as u32))
}

/// The canonical bytestring of a MAC address (a `bit<48>` field).
pub fn encode_mac(address: [u8; 6]) -> Vec<u8> {
    encode_bytes(&address, MAC_BITWIDTH).expect("6 bytes fit in 48 bits")
}

/// The MAC address in a `bit<48>` bytestring.
pub fn decode_mac(bytes: &[u8]) -> Result<[u8; 6]> {
    let value = decode(bytes, MAC_BITWIDTH)?;
    let mut address = [0; 6];
    address.copy_from_slice(&value.to_be_bytes()[10..]);
    Ok(address)
}

/// `bytes` without its leading zero bytes (empty for the value zero),
/// after checking it is a valid bytestring for a `bit<bitwidth>` field.
fn significant_bytes(bytes: &[u8], bitwidth: u32) -> Result<&[u8]> {
    if bitwidth == 0 {
        return Err(Error::InvalidBitwidth { bitwidth: 0 });
    }
    if bytes.is_empty() {
        return Err(Error::EmptyBytestring);
    }
    let first_nonzero = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let significant = &bytes[first_nonzero..];
    let bits_needed = bits_needed(significant);
    if bits_needed > u64::from(bitwidth) {
        return Err(Error::BytestringOutOfRange {
            bits_needed,
            bitwidth,
        });
    }
    Ok(significant)
}

/// Bits from the highest set bit down, for bytes with no leading zero byte.
fn bits_needed(significant: &[u8]) -> u64 {
    match significant.first() {
        None => 0,
        Some(first) => {
            let whole_bytes = (significant.len() - 1) as u64;
            whole_bytes * 8 + u64::from(8 - first.leading_zeros())
        }
    }
}
