//! The external-client cookie: which backend an outside TCP client's
//! connection is on, carried in the client's own TCP timestamps (after
//! Cheetah, NSDI 2020).
//!
//! A client outside the cluster runs no agent and cannot carry the Talaria
//! option, but it echoes the server's last timestamp value (TSval) in the
//! TSecr of every segment it sends (RFC 7323). The backend's node writes a
//! 16-bit cookie into the low half of every TSval its backend sends to such
//! a client ([`stamp`]), and puts back a plausible real value in the TSecr
//! of every segment from the client ([`restore`]) before the backend sees
//! it; the switch reads the cookie from TSecr and maps it, per Service, to
//! the backend through its `ts_cookie` table, so the connection stays on
//! its backend when the pool changes, with no per-connection state in the
//! switch.
//!
//! The cookie is a keyed hash of (service id, backend id) ([`cookie`]), so
//! a client can neither read a backend id from it nor pick one: it can only
//! guess among 2^16 values, and a guess reaches at best another backend of
//! the Service it asked for, as the switch also checks the pair against
//! `cookie_check`. The key is a secret shared by the controller (which
//! fills the table) and the node agents (which stamp).

use crate::be::Be32;

/// The secret the cookies are keyed with: SipHash's two 64-bit key words.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct CookieKey {
    pub k0: u64,
    pub k1: u64,
}
crate::assert_size!(CookieKey, 16);

/// A secret: never printed.
impl core::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

/// Why a key's text was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// Not exactly 32 hexadecimal digits.
    Length,
    /// A character that is not a hexadecimal digit.
    Digit,
    /// All zeros: the value a forgotten key would have.
    Zero,
}

impl CookieKey {
    /// A key written as 32 hexadecimal digits (128 bits, `k0` first, each
    /// word big-endian), as `openssl rand -hex 16` prints one.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.len() != 32 {
            return Err(KeyError::Length);
        }
        let mut words = [0u64; 2];
        for (i, c) in text.bytes().enumerate() {
            let digit = (c as char).to_digit(16).ok_or(KeyError::Digit)?;
            words[i / 16] = words[i / 16] << 4 | u64::from(digit);
        }
        if words == [0, 0] {
            return Err(KeyError::Zero);
        }
        Ok(Self {
            k0: words[0],
            k1: words[1],
        })
    }
}

/// The keys of a key file: one per line, 32 hexadecimal digits each;
/// blank lines and lines starting with `#` are skipped. The first key is
/// the one the nodes stamp new connections with; the controller accepts
/// cookies under every key listed, so a key is rotated by putting the new
/// one first and dropping the old one once its connections are gone.
/// Refused lines come with their 1-based number.
pub fn key_file(text: &str) -> impl Iterator<Item = Result<CookieKey, (usize, KeyError)>> + '_ {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| CookieKey::from_hex(l).map_err(|e| (i + 1, e)))
}

impl core::fmt::Display for KeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Length => "a key is 32 hexadecimal digits",
            Self::Digit => "not a hexadecimal digit",
            Self::Zero => "an all-zero key",
        })
    }
}

/// The cookie of backend `backend_id` of Service `service_id` under `key`:
/// the low 16 bits of SipHash-2-4 over the 64-bit word
/// `service_id << 32 | backend_id` (its 8 little-endian bytes, SipHash's
/// message order).
#[inline(always)]
pub fn cookie(key: &CookieKey, service_id: u16, backend_id: u32) -> u16 {
    siphash24_word(key, u64::from(service_id) << 32 | u64::from(backend_id)) as u16
}

/// SipHash-2-4 of a message of exactly one 64-bit word `m`.
#[inline(always)]
fn siphash24_word(key: &CookieKey, m: u64) -> u64 {
    let mut v = [
        key.k0 ^ 0x736f_6d65_7073_6575,
        key.k1 ^ 0x646f_7261_6e64_6f6d,
        key.k0 ^ 0x6c79_6765_6e65_7261,
        key.k1 ^ 0x7465_6462_7974_6573,
    ];
    // The message word, then the final block: the length (8) in the top
    // byte and no bytes left over.
    for block in [m, 8u64 << 56] {
        v[3] ^= block;
        sip_round(&mut v);
        sip_round(&mut v);
        v[0] ^= block;
    }
    v[2] ^= 0xff;
    sip_round(&mut v);
    sip_round(&mut v);
    sip_round(&mut v);
    sip_round(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[inline(always)]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// The TSval the client sees for the backend's real `tsval`: its high half
/// kept, the cookie in the low half. For a fixed cookie this never
/// decreases while the real clock does not, so the client's PAWS check
/// (RFC 7323, section 5) passes; the client's own TSvals, which the
/// backend's PAWS checks, are not touched.
#[inline(always)]
pub const fn stamp(tsval: u32, cookie: u16) -> u32 {
    tsval & 0xffff_0000 | cookie as u32
}

/// The TSecr the backend sees for the `echoed` one the client sent, given
/// `last_real`, the last real TSval the backend sent on the connection.
///
/// The high half of an echo is the real clock's; the low half is lost. An
/// echo of the current high half gets `last_real`, the newest value the
/// client can be echoing; an older one gets the last value its high half
/// could have had. Either is at least the true echo and never later than
/// what the backend sent, so the backend's RTT samples from timestamps
/// (used only where Karn's rule forbids sequence-based ones) come out
/// short rather than long, and its checks that an echo is not from the
/// future (Linux's on the handshake's ACK) pass. An echo from a high half
/// the backend has not reached yet is forged: it gets `last_real` too.
#[inline(always)]
pub const fn restore(echoed: u32, last_real: u32) -> u32 {
    let behind = (last_real >> 16).wrapping_sub(echoed >> 16) as u16;
    if behind == 0 || behind >= 0x8000 {
        last_real
    } else {
        echoed | 0xffff
    }
}

/// The TCP option bytes `NOP, NOP, kind 8, length 10` that open a segment's
/// options when it carries only timestamps, or timestamps first, as Linux,
/// the BSDs and Windows lay them out on every segment but the SYN and the
/// SYN-ACK. The switch reads a TSecr only behind them (RFC 7323, appendix
/// A's layout).
pub const NOP_NOP_TIMESTAMP: Be32 = Be32([1, 1, 8, 10]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(deprecated)] // SipHasher is SipHash-2-4, the reference here.
    fn cookie_is_the_low_half_of_siphash_2_4() {
        use core::hash::{Hasher, SipHasher};
        let key = CookieKey {
            k0: 0x0706_0504_0302_0100,
            k1: 0x0f0e_0d0c_0b0a_0908,
        };
        for (service_id, backend_id) in [(0u16, 0u32), (1, 1), (7, 0xdead_beef), (65535, u32::MAX)]
        {
            let m = u64::from(service_id) << 32 | u64::from(backend_id);
            let mut h = SipHasher::new_with_keys(key.k0, key.k1);
            h.write(&m.to_le_bytes());
            assert_eq!(siphash24_word(&key, m), h.finish());
            assert_eq!(cookie(&key, service_id, backend_id), h.finish() as u16);
        }
        // The reference vector of the SipHash paper (appendix A) for the
        // 8 bytes 00..07 under key 00..0f.
        assert_eq!(
            siphash24_word(&key, 0x0706_0504_0302_0100),
            0x93f5_f579_9a93_2462
        );
    }

    #[test]
    fn keys_parse_from_32_hex_digits_only() {
        let key = CookieKey::from_hex("00010203040506070809a0b0c0d0e0ff\n").unwrap();
        assert_eq!(key.k0, 0x0001_0203_0405_0607);
        assert_eq!(key.k1, 0x0809_a0b0_c0d0_e0ff);
        assert_eq!(CookieKey::from_hex("abc"), Err(KeyError::Length));
        assert_eq!(
            CookieKey::from_hex("g0010203040506070809a0b0c0d0e0ff"),
            Err(KeyError::Digit)
        );
        assert_eq!(CookieKey::from_hex(&"0".repeat(32)), Err(KeyError::Zero));
    }

    #[test]
    fn key_files_skip_comments_and_number_bad_lines() {
        let text = "# current\n00010203040506070809a0b0c0d0e0ff\n\n  # old\nffffffffffffffffffffffffffffffff\nnope\n";
        let mut keys = key_file(text);
        assert_eq!(keys.next().unwrap().unwrap().k0, 0x0001_0203_0405_0607);
        assert_eq!(keys.next().unwrap().unwrap().k1, u64::MAX);
        assert_eq!(keys.next(), Some(Err((6, KeyError::Length))));
        assert_eq!(keys.next(), None);
    }

    #[test]
    fn stamped_values_never_decrease_with_the_clock() {
        // Through the 32-bit wrap, in serial-number order (RFC 1982) as
        // PAWS compares.
        let clock = (0xfffe_0000u32..=0xffff_ffff)
            .step_by(977)
            .chain((0..0x0002_0000).step_by(977));
        let mut last: Option<u32> = None;
        for real in clock {
            let s = stamp(real, 0x1234);
            assert_eq!(s >> 16, real >> 16);
            assert_eq!(s & 0xffff, 0x1234);
            if let Some(last) = last {
                assert!(s.wrapping_sub(last) < 0x8000_0000, "{real:#x}");
            }
            last = Some(s);
        }
    }

    #[test]
    fn restored_echoes_are_bounded_by_what_was_sent() {
        let last_real = 0x0005_4321;
        // The newest echo the client can send: exactly the last value.
        assert_eq!(restore(stamp(last_real, 0xbeef), last_real), last_real);
        // An echo of an earlier high half: that half's last value.
        assert_eq!(restore(stamp(0x0004_0001, 0xbeef), last_real), 0x0004_ffff);
        // From the future, or any forged high half: the last value.
        assert_eq!(restore(0x0006_0000, last_real), last_real);
        assert_eq!(restore(0x8005_0000, last_real), last_real);
        // Across the 32-bit wrap.
        assert_eq!(restore(0xffff_0000, 0x0000_0010), 0xffff_ffff);
    }
}
