//! The bucket hash: CRC-32/ISO-HDLC over the inner flow.
//!
//! This is the CRC that bmv2 computes for v1model `HashAlgorithm.crc32`
//! (polynomial 0x04C11DB7 reflected = 0xEDB88320, init and final xor
//! 0xFFFFFFFF; zlib's `crc32`). The input is the [`FlowTuple`] bytes in
//! network byte order, in the order the P4 `hash()` call lists its fields:
//! source address, destination address, protocol, source port, destination
//! port (13 bytes). P4, the switch-agent eBPF and userspace all agree on it;
//! the test vectors below were computed independently with zlib.

use crate::be::{Be16, Be32};

const POLY_REFLECTED: u32 = 0xEDB8_8320;

const fn build_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY_REFLECTED
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// Byte-at-a-time lookup table, built at compile time.
pub static CRC32_TABLE: [u32; 256] = build_table();

/// One byte of the running (pre-inversion) CRC state.
#[inline(always)]
pub fn crc32_step(state: u32, byte: u8) -> u32 {
    CRC32_TABLE[((state ^ byte as u32) & 0xff) as usize] ^ (state >> 8)
}

/// CRC-32/ISO-HDLC of `data`.
#[inline(always)]
pub fn crc32(data: &[u8]) -> u32 {
    let mut state = !0u32;
    for &b in data {
        state = crc32_step(state, b);
    }
    !state
}

/// The hash input for a flow: exactly the bytes the switch hashes.
///
/// Must match the field list of the `hash()` call in p4/talaria.p4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    pub src: Be32,
    pub dst: Be32,
    pub proto: u8,
    pub src_port: Be16,
    pub dst_port: Be16,
}
crate::assert_size!(FlowTuple, 13);

impl FlowTuple {
    /// The 13 bytes hashed, in order.
    #[inline(always)]
    pub fn to_bytes(&self) -> [u8; 13] {
        let mut b = [0u8; 13];
        b[0..4].copy_from_slice(&self.src.0);
        b[4..8].copy_from_slice(&self.dst.0);
        b[8] = self.proto;
        b[9..11].copy_from_slice(&self.src_port.0);
        b[11..13].copy_from_slice(&self.dst_port.0);
        b
    }

    /// The 5-tuple hash that picks a bucket for a new flow.
    #[inline(always)]
    pub fn hash(&self) -> u32 {
        crc32(&self.to_bytes())
    }

    /// The sessionAffinity ClientIP hash: the source address alone.
    #[inline(always)]
    pub fn client_ip_hash(&self) -> u32 {
        crc32(&self.src.0)
    }
}

/// [`FlowTuple`] of an IPv6 flow: the same fields in the same order, the
/// addresses 16 bytes each (37 bytes). Must match the field list of the
/// IPv6 `hash()` call in p4/talaria.p4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowTuple6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub proto: u8,
    pub src_port: Be16,
    pub dst_port: Be16,
}
crate::assert_size!(FlowTuple6, 37);

impl FlowTuple6 {
    /// The 37 bytes hashed, in order.
    #[inline(always)]
    pub fn to_bytes(&self) -> [u8; 37] {
        let mut b = [0u8; 37];
        b[0..16].copy_from_slice(&self.src);
        b[16..32].copy_from_slice(&self.dst);
        b[32] = self.proto;
        b[33..35].copy_from_slice(&self.src_port.0);
        b[35..37].copy_from_slice(&self.dst_port.0);
        b
    }

    /// The 5-tuple hash that picks a bucket for a new flow.
    #[inline(always)]
    pub fn hash(&self) -> u32 {
        crc32(&self.to_bytes())
    }

    /// The sessionAffinity ClientIP hash: the source address alone.
    #[inline(always)]
    pub fn client_ip_hash(&self) -> u32 {
        crc32(&self.src)
    }
}

/// How a service hashes new flows: the `hash_mode` parameter of the P4
/// `set_service` action.
pub mod hash_mode {
    /// CRC32 over the 5-tuple.
    pub const FIVE_TUPLE: u8 = 0;
    /// CRC32 over the client (inner source) address: sessionAffinity ClientIP.
    pub const CLIENT_IP: u8 = 1;
}

/// The bucket a hash falls in. `bucket_mask` is `buckets - 1` with `buckets`
/// a power of two: hardware has no modulo.
#[inline(always)]
pub const fn bucket_of(hash: u32, bucket_mask: u16) -> u16 {
    (hash as u16) & bucket_mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(src: [u8; 4], dst: [u8; 4], proto: u8, sp: u16, dp: u16) -> FlowTuple {
        FlowTuple {
            src: Be32(src),
            dst: Be32(dst),
            proto,
            src_port: Be16::new(sp),
            dst_port: Be16::new(dp),
        }
    }

    #[test]
    fn check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    /// (tuple, bytes hashed, zlib.crc32 of those bytes).
    #[test]
    fn flow_vectors() {
        let cases = [
            (
                tuple([10, 1, 0, 2], [10, 96, 0, 10], 6, 40000, 80),
                "0a0100020a60000a069c400050",
                0x2d02_c23d,
            ),
            (
                tuple([10, 1, 1, 5], [10, 96, 0, 11], 17, 5353, 53),
                "0a0101050a60000b1114e90035",
                0xd450_f35f,
            ),
            (
                tuple([0; 4], [0; 4], 0, 0, 0),
                "00000000000000000000000000",
                0x0f74_4682,
            ),
            (
                tuple([255; 4], [255; 4], 255, 65535, 65535),
                "ffffffffffffffffffffffffff",
                0xf2d6_f3c1,
            ),
        ];
        for (t, hex, want) in cases {
            let bytes = t.to_bytes();
            for (i, b) in bytes.iter().enumerate() {
                let expect = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
                assert_eq!(*b, expect, "byte {i} of {t:?}");
            }
            assert_eq!(t.hash(), want, "{t:?}");
        }
        assert_eq!(
            tuple([10, 1, 0, 2], [0; 4], 0, 0, 0).client_ip_hash(),
            0xa135_3463
        );
    }

    /// Computed with Python's `zlib.crc32` over the bytes shown.
    #[test]
    fn flow6_vectors() {
        let mut src = [0u8; 16];
        src[..2].copy_from_slice(&[0xfd, 0x00]);
        src[15] = 2;
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[0xfd, 0x00, 0x00, 0x96]);
        dst[15] = 10;
        let t = FlowTuple6 {
            src,
            dst,
            proto: 6,
            src_port: Be16::new(40000),
            dst_port: Be16::new(80),
        };
        let hex = "fd000000000000000000000000000002fd00009600000000000000000000000a069c400050";
        for (i, b) in t.to_bytes().iter().enumerate() {
            assert_eq!(
                *b,
                u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap(),
                "byte {i}"
            );
        }
        assert_eq!(t.hash(), 0x94e7_19e5);
        assert_eq!(t.client_ip_hash(), 0x8864_36cd);
    }

    #[test]
    fn bucket_masks_low_bits() {
        assert_eq!(bucket_of(0x2d02_c23d, 0xff), 0x3d);
        assert_eq!(bucket_of(0x2d02_c23d, 0), 0);
        assert_eq!(bucket_of(0xffff_ffff, 0x0fff), 0x0fff);
    }
}
