//! Geneve (RFC 8926) with the Talaria option: the encapsulation between
//! nodes and the switch.
//!
//! [`TalariaEncap`] is the fixed 20-byte layout talaria emits: the Geneve
//! base header followed by exactly one Talaria option. It must match
//! `header geneve_t` and `header talaria_opt_t` in p4/headers.p4. eBPF code
//! overlays it on packet bytes and calls [`TalariaEncap::validate`];
//! userspace can also walk arbitrary option lists with [`parse`].

use crate::{
    be::{Be16, Be32},
    drop::DropReason,
};

/// IANA UDP port for Geneve.
pub const GENEVE_UDP_PORT: u16 = 6081;
/// Geneve protocol type for an IPv4 payload (an EtherType).
pub const GENEVE_PROTO_IPV4: u16 = 0x0800;
/// Geneve protocol type for an IPv6 payload: IPv6 Services ride the same
/// IPv4 underlay, told apart by this field alone.
pub const GENEVE_PROTO_IPV6: u16 = 0x86DD;
/// Geneve base header length.
pub const GENEVE_HDR_LEN: usize = 8;
/// Geneve option header length (class, type, length).
pub const OPT_HDR_LEN: usize = 4;
/// Experimental option class (RFC 8926 reserves 0xFF00–0xFFFF).
pub const TALARIA_OPT_CLASS: u16 = 0xFF7A;
/// Geneve option type bit meaning "drop the packet if you do not know me".
pub const OPT_TYPE_CRITICAL: u8 = 0x80;
/// Talaria option type, critical: a switch that cannot read the cookie must
/// not forward the packet un-load-balanced.
pub const TALARIA_OPT_TYPE: u8 = OPT_TYPE_CRITICAL | 0x21;
/// Talaria option data length in 4-byte words (the option length field).
pub const TALARIA_OPT_WORDS: u8 = 2;
/// Talaria option length including its header.
pub const TALARIA_OPT_LEN: usize = OPT_HDR_LEN + 4 * TALARIA_OPT_WORDS as usize;
/// The option format version this code speaks.
pub const TALARIA_VERSION: u8 = 1;
/// Bytes added in front of the inner IPv4 packet: outer IPv4 (20, no
/// options) + UDP (8) + Geneve (8) + Talaria option (12). Pod MTU is the
/// uplink MTU minus this.
pub const ENCAP_OVERHEAD: usize = 20 + 8 + GENEVE_HDR_LEN + TALARIA_OPT_LEN;

/// Talaria option flag bits.
pub mod flags {
    /// The sender had no cookie for this flow.
    pub const NEW_FLOW: u8 = 0x01;
    /// Backend-to-client direction.
    pub const REPLY: u8 = 0x02;
    /// `backend_id` names a backend (the cookie).
    pub const COOKIE_VALID: u8 = 0x04;
    /// A later fragment of a request, without a cookie: `backend_id`
    /// carries its datagram's ports (source << 16 | destination), which
    /// only the first fragment has, for the switch's lookup and hash.
    pub const FRAG_PORTS: u8 = 0x08;
    /// A reply the switch tunnelled for an endpoint that runs no talaria
    /// agent (with `REPLY | COOKIE_VALID`): its source is still the
    /// endpoint's; the client's node restores the VIP from its own flow
    /// state, or leaves it when the client talked to the endpoint directly.
    pub const ENDPOINT: u8 = 0x10;
    /// A backend's node tells the client's node a UDP flow's cookie (with
    /// `REPLY | COOKIE_VALID`, and an empty datagram from the VIP): the
    /// flow sent requests without one and its backend has not replied
    /// (one-way UDP). The client's node learns the cookie and drops it.
    pub const NOTIFY: u8 = 0x20;
    /// A request the switch tunnelled for a client outside the cluster
    /// (with `COOKIE_VALID`): the backend's node stamps the connection's
    /// TCP timestamps with its cookie and restores the client's echoes
    /// ([`crate::ts_cookie`]). The switch clears it on every request a node
    /// sends.
    pub const EXTERNAL: u8 = 0x40;
    /// Every bit this version defines; others are ignored on receive.
    pub const KNOWN: u8 =
        NEW_FLOW | REPLY | COOKIE_VALID | FRAG_PORTS | ENDPOINT | NOTIFY | EXTERNAL;
}

/// Geneve base header byte 1: the `C` bit, set when a critical option is
/// present.
pub const GENEVE_FLAG_CRITICAL: u8 = 0x40;
/// Geneve base header byte 1: the `O` (control packet) bit.
pub const GENEVE_FLAG_OAM: u8 = 0x80;

/// Geneve base header. Must match `header geneve_t` in p4/headers.p4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeneveHdr {
    /// Version (2 bits, high) and total option length in words (6 bits).
    pub ver_opt_len: u8,
    /// `O` and `C` bits, then 6 reserved bits.
    pub flags: u8,
    /// EtherType of the payload.
    pub protocol: Be16,
    /// 24-bit VNI then 8 reserved bits. talaria sends 0 and ignores it.
    pub vni: [u8; 4],
}
crate::assert_size!(GeneveHdr, GENEVE_HDR_LEN);

impl GeneveHdr {
    /// Geneve version, the top two bits.
    #[inline(always)]
    pub const fn version(&self) -> u8 {
        self.ver_opt_len >> 6
    }

    /// Length of the option area in bytes.
    #[inline(always)]
    pub const fn options_len(&self) -> usize {
        (self.ver_opt_len & 0x3f) as usize * 4
    }
}

/// The Talaria option, header included. Must match `header talaria_opt_t`
/// in p4/headers.p4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TalariaOpt {
    pub class: Be16,
    pub opt_type: u8,
    /// Three reserved bits, then the data length in words (5 bits).
    pub len: u8,
    pub version: u8,
    pub flags: u8,
    pub service_id: Be16,
    /// The cookie: the backend the switch chose. Meaningful only with
    /// [`flags::COOKIE_VALID`].
    pub backend_id: Be32,
}
crate::assert_size!(TalariaOpt, TALARIA_OPT_LEN);

impl TalariaOpt {
    /// Whether the option header names the Talaria option.
    #[inline(always)]
    pub fn is_talaria(&self) -> bool {
        self.class.get() == TALARIA_OPT_CLASS && self.opt_type == TALARIA_OPT_TYPE
    }

    /// The cookie, if the option carries one.
    #[inline(always)]
    pub fn cookie(&self) -> Option<u32> {
        (self.flags & flags::COOKIE_VALID != 0).then(|| self.backend_id.get())
    }
}

/// The fixed encapsulation talaria emits: Geneve with exactly one option,
/// the Talaria one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TalariaEncap {
    pub geneve: GeneveHdr,
    pub opt: TalariaOpt,
}
crate::assert_size!(TalariaEncap, GENEVE_HDR_LEN + TALARIA_OPT_LEN);

impl TalariaEncap {
    /// Bytes from the start of the Geneve header to the inner packet.
    pub const LEN: usize = GENEVE_HDR_LEN + TALARIA_OPT_LEN;

    /// A header carrying `flags`, `service_id` and `backend_id`.
    #[inline(always)]
    pub fn new(flags: u8, service_id: u16, backend_id: u32) -> Self {
        Self {
            geneve: GeneveHdr {
                ver_opt_len: (TALARIA_OPT_LEN / 4) as u8,
                flags: GENEVE_FLAG_CRITICAL,
                protocol: Be16::new(GENEVE_PROTO_IPV4),
                vni: [0; 4],
            },
            opt: TalariaOpt {
                class: Be16::new(TALARIA_OPT_CLASS),
                opt_type: TALARIA_OPT_TYPE,
                len: TALARIA_OPT_WORDS,
                version: TALARIA_VERSION,
                flags: flags & flags::KNOWN,
                service_id: Be16::new(service_id),
                backend_id: Be32::new(backend_id),
            },
        }
    }

    /// Checks a header in talaria's own fixed shape (one option, ours
    /// first). This is the fast path the eBPF data planes take; a packet
    /// whose first option is not ours fails here with the reason [`parse`]
    /// would give for the first option.
    #[inline(always)]
    pub fn validate(&self) -> Result<(), WireError> {
        check_base(&self.geneve)?;
        if !self.opt.is_talaria() {
            return Err(unknown_option(self.opt.class.get(), self.opt.opt_type));
        }
        if self.opt.len & 0x1f != TALARIA_OPT_WORDS || self.geneve.options_len() != TALARIA_OPT_LEN
        {
            return Err(WireError::OptionLength);
        }
        if self.opt.version != TALARIA_VERSION {
            return Err(WireError::TalariaVersion(self.opt.version));
        }
        Ok(())
    }

    /// The 20 wire bytes.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let g = &self.geneve;
        let o = &self.opt;
        let mut b = [0u8; Self::LEN];
        b[0] = g.ver_opt_len;
        b[1] = g.flags;
        b[2..4].copy_from_slice(&g.protocol.0);
        b[4..8].copy_from_slice(&g.vni);
        b[8..10].copy_from_slice(&o.class.0);
        b[10] = o.opt_type;
        b[11] = o.len;
        b[12] = o.version;
        b[13] = o.flags;
        b[14..16].copy_from_slice(&o.service_id.0);
        b[16..20].copy_from_slice(&o.backend_id.0);
        b
    }
}

/// Why bytes are not a valid Talaria encapsulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than the headers claim.
    Truncated,
    /// Geneve version other than 0.
    GeneveVersion(u8),
    /// Payload protocol other than IPv4.
    GeneveProtocol(u16),
    /// An option length that overruns the option area, or a Talaria option
    /// of the wrong length.
    OptionLength,
    /// An unknown option with its critical bit set.
    UnknownCriticalOption { class: u16, opt_type: u8 },
    /// Talaria option of another version.
    TalariaVersion(u8),
    /// No Talaria option among the options.
    MissingOption,
}

impl WireError {
    /// The drop reason to count this under.
    pub const fn drop_reason(self) -> DropReason {
        match self {
            Self::Truncated => DropReason::Malformed,
            Self::GeneveVersion(_) => DropReason::GeneveVersion,
            Self::GeneveProtocol(_) => DropReason::GeneveProtocol,
            Self::OptionLength => DropReason::OptionLength,
            Self::UnknownCriticalOption { .. } => DropReason::UnknownCriticalOption,
            Self::TalariaVersion(_) => DropReason::TalariaVersion,
            Self::MissingOption => DropReason::MissingOption,
        }
    }
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated Geneve header or option"),
            Self::GeneveVersion(v) => write!(f, "Geneve version {v}, expected 0"),
            Self::GeneveProtocol(p) => write!(f, "Geneve protocol type {p:#06x}, expected 0x0800"),
            Self::OptionLength => f.write_str("Geneve option length inconsistent with the header"),
            Self::UnknownCriticalOption { class, opt_type } => {
                write!(
                    f,
                    "unknown critical Geneve option class {class:#06x} type {opt_type:#04x}"
                )
            }
            Self::TalariaVersion(v) => {
                write!(f, "Talaria option version {v}, expected {TALARIA_VERSION}")
            }
            Self::MissingOption => f.write_str("Geneve packet without the Talaria option"),
        }
    }
}

#[inline(always)]
fn check_base(g: &GeneveHdr) -> Result<(), WireError> {
    if g.version() != 0 {
        return Err(WireError::GeneveVersion(g.version()));
    }
    if g.protocol.get() != GENEVE_PROTO_IPV4 {
        return Err(WireError::GeneveProtocol(g.protocol.get()));
    }
    Ok(())
}

#[inline(always)]
fn unknown_option(class: u16, opt_type: u8) -> WireError {
    if opt_type & OPT_TYPE_CRITICAL != 0 {
        WireError::UnknownCriticalOption { class, opt_type }
    } else {
        WireError::MissingOption
    }
}

/// A parsed Geneve header with its Talaria option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub geneve: GeneveHdr,
    pub opt: TalariaOpt,
    /// Offset of the inner packet from the start of the Geneve header.
    pub inner_offset: usize,
}

/// Parses a Geneve header and its options starting at `buf[0]` (just after
/// the outer UDP header), with any number of options in any order.
/// Non-critical unknown options are skipped; the first Talaria option wins.
pub fn parse(buf: &[u8]) -> Result<Parsed, WireError> {
    let base: &[u8; GENEVE_HDR_LEN] = buf
        .get(..GENEVE_HDR_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or(WireError::Truncated)?;
    let geneve = GeneveHdr {
        ver_opt_len: base[0],
        flags: base[1],
        protocol: Be16([base[2], base[3]]),
        vni: [base[4], base[5], base[6], base[7]],
    };
    check_base(&geneve)?;
    let inner_offset = GENEVE_HDR_LEN + geneve.options_len();
    let mut options = buf
        .get(GENEVE_HDR_LEN..inner_offset)
        .ok_or(WireError::Truncated)?;
    let mut found = None;
    while !options.is_empty() {
        let [c0, c1, opt_type, len] = *options
            .first_chunk::<OPT_HDR_LEN>()
            .ok_or(WireError::OptionLength)?;
        let opt_len = OPT_HDR_LEN + 4 * (len & 0x1f) as usize;
        let body = options.get(..opt_len).ok_or(WireError::OptionLength)?;
        let class = u16::from_be_bytes([c0, c1]);
        if class == TALARIA_OPT_CLASS && opt_type == TALARIA_OPT_TYPE {
            if len & 0x1f != TALARIA_OPT_WORDS {
                return Err(WireError::OptionLength);
            }
            if found.is_none() {
                let opt = TalariaOpt {
                    class: Be16::new(class),
                    opt_type,
                    len,
                    version: body[4],
                    flags: body[5],
                    service_id: Be16([body[6], body[7]]),
                    backend_id: Be32([body[8], body[9], body[10], body[11]]),
                };
                if opt.version != TALARIA_VERSION {
                    return Err(WireError::TalariaVersion(opt.version));
                }
                found = Some(opt);
            }
        } else if opt_type & OPT_TYPE_CRITICAL != 0 {
            return Err(WireError::UnknownCriticalOption { class, opt_type });
        }
        options = &options[opt_len..];
    }
    let opt = found.ok_or(WireError::MissingOption)?;
    Ok(Parsed {
        geneve,
        opt,
        inner_offset,
    })
}

#[cfg(test)]
mod tests;
