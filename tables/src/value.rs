//! The Rust types of P4 key fields and action parameters.
//!
//! Every value travels through one carrier, a `u128` (P4Runtime bytestrings
//! are big-endian unsigned integers), so fields up to 128 bits wide work:
//! IPv6 addresses included. No talaria field is wider.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a value is shown in dumps (REST, CLI).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// A decimal number.
    Uint,
    /// Dotted quad.
    Ipv4,
    /// RFC 5952 text.
    Ipv6,
    /// `aa:bb:cc:dd:ee:ff`.
    Mac,
    /// `0x`-prefixed hex, for numbers too wide for JSON.
    Hex,
}

impl Format {
    /// The format of a field known only by its width (a table outside
    /// talaria's definitions).
    pub fn for_width(bits: u32) -> Self {
        if bits <= 53 {
            Self::Uint
        } else {
            Self::Hex
        }
    }

    /// `v` as JSON in this format.
    pub fn json(self, v: u128) -> serde_json::Value {
        match self {
            Self::Uint if v <= (1 << 53) => serde_json::Value::from(v as u64),
            Self::Uint | Self::Hex => format!("{v:#x}").into(),
            Self::Ipv4 => Ipv4Addr::from(v as u32).to_string().into(),
            Self::Ipv6 => Ipv6Addr::from(v).to_string().into(),
            Self::Mac => Mac::from_u128(v).to_string().into(),
        }
    }
}

/// A Rust type that holds a P4 `bit<W>` value.
pub trait Value: Copy + Ord + std::hash::Hash + fmt::Debug + Send + Sync + 'static {
    /// The widest field the type can hold.
    const BITS: u32;
    /// How dumps show it.
    const FORMAT: Format;
    fn to_u128(self) -> u128;
    /// The value of `v`, which the caller has checked fits [`Value::BITS`].
    fn from_u128(v: u128) -> Self;
}

macro_rules! uint_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            const BITS: u32 = <$t>::BITS;
            const FORMAT: Format = Format::Uint;
            fn to_u128(self) -> u128 {
                self as u128
            }
            fn from_u128(v: u128) -> Self {
                v as $t
            }
        }
    )*};
}
uint_value!(u8, u16, u32, u64, u128);

impl Value for Ipv4Addr {
    const BITS: u32 = 32;
    const FORMAT: Format = Format::Ipv4;
    fn to_u128(self) -> u128 {
        u32::from(self).into()
    }
    fn from_u128(v: u128) -> Self {
        Ipv4Addr::from(v as u32)
    }
}

impl Value for Ipv6Addr {
    const BITS: u32 = 128;
    const FORMAT: Format = Format::Ipv6;
    fn to_u128(self) -> u128 {
        self.into()
    }
    fn from_u128(v: u128) -> Self {
        Ipv6Addr::from(v)
    }
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Value for Mac {
    const BITS: u32 = 48;
    const FORMAT: Format = Format::Mac;
    fn to_u128(self) -> u128 {
        self.0.iter().fold(0, |v, b| (v << 8) | u128::from(*b))
    }
    fn from_u128(v: u128) -> Self {
        let b = v.to_be_bytes();
        let mut m = [0; 6];
        m.copy_from_slice(&b[10..]);
        Mac(m)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes: Vec<u8> = s
            .split([':', '-'])
            .map(|p| u8::from_str_radix(p, 16))
            .collect::<Result<_, _>>()
            .map_err(|_| format!("bad MAC address {s:?}"))?;
        let m: [u8; 6] = bytes
            .try_into()
            .map_err(|_| format!("bad MAC address {s:?}: expected 6 bytes"))?;
        Ok(Mac(m))
    }
}

/// An address prefix, the value of an LPM key field. Always stored with
/// its host bits clear ([`Prefix::new`] clears them; decoding rejects a
/// prefix that has any).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix<A> {
    pub addr: A,
    pub len: u8,
}

/// An IPv4 prefix.
pub type Ipv4Prefix = Prefix<Ipv4Addr>;
/// An IPv6 prefix.
pub type Ipv6Prefix = Prefix<Ipv6Addr>;

/// The host-bit mask of a `/len` prefix of a `bits`-wide value.
pub(crate) fn host_mask(bits: u32, len: u32) -> u128 {
    if len >= bits {
        0
    } else {
        let field = if bits >= 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        field >> len
    }
}

impl<A: Value> Prefix<A> {
    /// `addr/len` with the host bits cleared; `None` when `len` is longer
    /// than the address.
    pub fn new(addr: A, len: u8) -> Option<Self> {
        if u32::from(len) > A::BITS {
            return None;
        }
        let net = addr.to_u128() & !host_mask(A::BITS, len.into());
        Some(Self {
            addr: A::from_u128(net),
            len,
        })
    }

    /// Whether `a` lies inside the prefix.
    pub fn contains(&self, a: A) -> bool {
        Self::new(a, self.len).is_some_and(|p| p.addr == self.addr)
    }
}

impl<A: fmt::Display> fmt::Display for Prefix<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl<A: Value + FromStr> FromStr for Prefix<A> {
    type Err = String;
    /// `addr/len`, or a bare address as a host prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: A = a.parse().map_err(|_| format!("bad address in {s:?}"))?;
        let len = match l {
            Some(l) => l
                .parse()
                .map_err(|_| format!("bad prefix length in {s:?}"))?,
            None => A::BITS as u8,
        };
        Self::new(addr, len).ok_or_else(|| format!("prefix length too long in {s:?}"))
    }
}

/// A prefix of either family, where one list holds both (a fabric's
/// routes): IPv4 if it parses as such, else IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpPrefix {
    V4(Ipv4Prefix),
    V6(Ipv6Prefix),
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(p) => p.fmt(f),
            Self::V6(p) => p.fmt(f),
        }
    }
}

impl FromStr for IpPrefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let addr = s.split_once('/').map_or(s, |(a, _)| a);
        if addr.parse::<Ipv4Addr>().is_ok() {
            s.parse().map(Self::V4)
        } else if addr.parse::<Ipv6Addr>().is_ok() {
            s.parse().map(Self::V6)
        } else {
            Err(format!("bad address in {s:?}: neither IPv4 nor IPv6"))
        }
    }
}

macro_rules! serde_as_string {
    ($(impl$(<$g:ident: $b:path>)? for $t:ty;)*) => {$(
        impl$(<$g: $b + fmt::Display>)? Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de $(, $g: $b + FromStr)?> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
serde_as_string! {
    impl for Mac;
    impl for IpPrefix;
    impl<A: Value> for Prefix<A>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_clear_host_bits_and_parse() {
        let p: Ipv4Prefix = "10.1.2.3/16".parse().unwrap();
        assert_eq!(p.to_string(), "10.1.0.0/16");
        assert!(p.contains(Ipv4Addr::new(10, 1, 200, 1)));
        assert!(!p.contains(Ipv4Addr::new(10, 2, 0, 1)));
        assert_eq!("10.0.0.1".parse::<Ipv4Prefix>().unwrap().len, 32);
        assert!("10.0.0.0/33".parse::<Ipv4Prefix>().is_err());
        let q: Ipv6Prefix = "fd00:1:2::5/48".parse().unwrap();
        assert_eq!(q.to_string(), "fd00:1:2::/48");
        assert_eq!(
            Prefix::new(Ipv6Addr::LOCALHOST, 0).unwrap().addr,
            Ipv6Addr::UNSPECIFIED
        );
    }

    #[test]
    fn either_family_parses_as_its_own() {
        let v4: IpPrefix = "10.1.2.3/16".parse().unwrap();
        assert_eq!(v4, IpPrefix::V4("10.1.0.0/16".parse().unwrap()));
        let v6: IpPrefix = "fd00::1".parse().unwrap();
        assert_eq!(v6.to_string(), "fd00::1/128");
        assert!("fd00::/129".parse::<IpPrefix>().is_err());
        assert!("example.com/8".parse::<IpPrefix>().is_err());
        assert_eq!(
            serde_json::from_str::<IpPrefix>("\"::/0\"").unwrap(),
            IpPrefix::V6("::/0".parse().unwrap())
        );
    }

    #[test]
    fn macs_round_trip() {
        let m: Mac = "02:00:0a:ff:00:01".parse().unwrap();
        assert_eq!(Mac::from_u128(m.to_u128()), m);
        assert_eq!(m.to_string(), "02:00:0a:ff:00:01");
        assert!("02:00".parse::<Mac>().is_err());
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"02:00:0a:ff:00:01\"");
    }

    #[test]
    fn formats() {
        assert_eq!(Format::Ipv4.json(0x0a60_000a), "10.96.0.10");
        assert_eq!(Format::Uint.json(80), 80);
        assert_eq!(Format::for_width(128), Format::Hex);
        assert_eq!(Format::Hex.json(255), "0xff");
    }
}
