//! Drop reasons and load-balancer events, one code space for the switch
//! (P4 and switch-agent) and the hosts.
//!
//! Must match the `DROP_*` and `LB_EVENT_*` constants in `p4/constants.p4`;
//! `tests/` checks that.

/// Why a packet was dropped. The value indexes the per-reason drop counter
/// (`TalariaIngress.drop_counter` on the switch, `NODE_DROPS` on hosts).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum DropReason {
    /// Truncated or unparsable Ethernet, IPv4, UDP or L4 header.
    Malformed = 1,
    /// Geneve version other than 0.
    GeneveVersion = 2,
    /// Geneve protocol type other than IPv4 (0x0800).
    GeneveProtocol = 3,
    /// A Geneve option length that overruns the header, or a Talaria option
    /// whose length is not the fixed 2 words.
    OptionLength = 4,
    /// A Geneve option we do not know, with its critical bit set.
    UnknownCriticalOption = 5,
    /// Talaria option version other than [`crate::wire::TALARIA_VERSION`].
    TalariaVersion = 6,
    /// A Geneve packet for the switch without the Talaria option.
    MissingOption = 7,
    /// No service matches (VIP, port, protocol).
    NoService = 8,
    /// The service's bucket is empty: no ready backend.
    NoBucket = 9,
    /// The bucket names a backend id the backend table does not hold.
    NoBackend = 10,
    /// No route for the destination.
    NoRoute = 11,
    /// TTL reached zero while routing.
    TtlExpired = 12,
    /// Inner IPv4 with options on a load-balanced path (ports cannot be
    /// located at a fixed offset in hardware; hosts never emit these).
    IpOptions = 13,
    /// Inner IPv4 fragment on a load-balanced path (no L4 ports to hash).
    Fragment = 14,
    /// Inner protocol other than TCP or UDP on a load-balanced path (an
    /// ICMP or ICMPv6 error about a Service flow excepted: it is relayed).
    UnsupportedProtocol = 15,
    /// A reply whose client pod address maps to no node.
    NoClientNode = 16,
    /// Host: a pod sent a Geneve/Talaria packet itself (forgery).
    PodEncap = 17,
    /// Host: a pod's source address is not the one assigned to it.
    PodSpoof = 18,
    /// Host: a Talaria packet on the uplink from an outer source other than
    /// the switch.
    TunnelSource = 19,
    /// Host: a Talaria packet on the uplink for a pod this node does not
    /// host.
    UnknownPod = 20,
    /// Host and switch: an ICMP error about a Service flow from a pod that
    /// is not a party of that flow, or (switch) a client's error whose
    /// quoted reply does not match its cookie.
    IcmpSpoof = 21,
    /// Host: a backend-side flow needed a substitute client port (two
    /// Services' flows on one 4-tuple) and none was free.
    PortExhausted = 22,
    /// Host: a new backend-side flow of a pod that holds its share of the
    /// reverse-flow table, or of a full table (established flows are never
    /// evicted to make room).
    FlowLimit = 23,
    /// Switch: a tunnel to the switch from an outer source that is not a
    /// node attached to the port it arrived on (`tunnel_peer`).
    TunnelPeer = 24,
    /// Switch: a packet from a port with one of the switch's own addresses
    /// (or another listed one) as its source, or a tunnel to the switch
    /// with one as its inner source (`spoofed_source`).
    SpoofedSource = 25,
    /// Switch: a REPLY whose source is not the VIP and port of the service
    /// its cookie names, whose cookie names no backend of that service, or
    /// that does not come from that backend's node.
    ForgedReply = 26,
    /// Host: a packet from the uplink, other than a tunnel to this node,
    /// whose source is in a Service CIDR: replies from a VIP only ever come
    /// tunnelled to the client's node.
    ServiceSource = 27,
    /// Host: a new flow to an `internalTrafficPolicy: Local` Service port
    /// from a node with no local endpoint for it (kube-proxy drops it too).
    NoLocalEndpoint = 28,
    /// Switch: an external client's request (a plain packet to a Service
    /// address) whose backend's node has no `tunnel_source` entry, so the
    /// switch knows no address that node accepts tunnels from.
    NoTunnelSource = 29,
}

/// Size of every per-reason drop counter array. Codes are `< DROP_REASON_COUNT`.
pub const DROP_REASON_COUNT: u32 = 32;

impl DropReason {
    /// Every reason, in code order.
    pub const ALL: [DropReason; 29] = [
        Self::Malformed,
        Self::GeneveVersion,
        Self::GeneveProtocol,
        Self::OptionLength,
        Self::UnknownCriticalOption,
        Self::TalariaVersion,
        Self::MissingOption,
        Self::NoService,
        Self::NoBucket,
        Self::NoBackend,
        Self::NoRoute,
        Self::TtlExpired,
        Self::IpOptions,
        Self::Fragment,
        Self::UnsupportedProtocol,
        Self::NoClientNode,
        Self::PodEncap,
        Self::PodSpoof,
        Self::TunnelSource,
        Self::UnknownPod,
        Self::IcmpSpoof,
        Self::PortExhausted,
        Self::FlowLimit,
        Self::TunnelPeer,
        Self::SpoofedSource,
        Self::ForgedReply,
        Self::ServiceSource,
        Self::NoLocalEndpoint,
        Self::NoTunnelSource,
    ];

    /// The counter index.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The reason for a counter index, if it names one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.code() == code)
    }

    /// A stable snake_case name, used as a metrics label and in P4 as the
    /// suffix of `DROP_<NAME>`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::GeneveVersion => "geneve_version",
            Self::GeneveProtocol => "geneve_protocol",
            Self::OptionLength => "option_length",
            Self::UnknownCriticalOption => "unknown_critical_option",
            Self::TalariaVersion => "talaria_version",
            Self::MissingOption => "missing_option",
            Self::NoService => "no_service",
            Self::NoBucket => "no_bucket",
            Self::NoBackend => "no_backend",
            Self::NoRoute => "no_route",
            Self::TtlExpired => "ttl_expired",
            Self::IpOptions => "ip_options",
            Self::Fragment => "fragment",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::NoClientNode => "no_client_node",
            Self::PodEncap => "pod_encap",
            Self::PodSpoof => "pod_spoof",
            Self::TunnelSource => "tunnel_source",
            Self::UnknownPod => "unknown_pod",
            Self::IcmpSpoof => "icmp_spoof",
            Self::PortExhausted => "port_exhausted",
            Self::FlowLimit => "flow_limit",
            Self::TunnelPeer => "tunnel_peer",
            Self::SpoofedSource => "spoofed_source",
            Self::ForgedReply => "forged_reply",
            Self::ServiceSource => "service_source",
            Self::NoLocalEndpoint => "no_local_endpoint",
            Self::NoTunnelSource => "no_tunnel_source",
        }
    }
}

/// Load-balancer events the switch counts that are not drops. The value
/// indexes `TalariaIngress.lb_event_counter`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum LbEvent {
    /// A packet without a cookie took the bucket hash: a node's new flow,
    /// or an external client's request (a plain packet to a Service
    /// address), which never has one.
    NewFlow = 0,
    /// A packet's cookie was valid and chose the backend.
    CookieHit = 1,
    /// A packet's cookie named a backend not in `cookie_check` for its
    /// service; it was treated as a new flow.
    CookieStale = 2,
    /// A checked reply was re-originated towards the client's node, or
    /// (a client outside the cluster) stripped and routed plain; or an
    /// agentless endpoint's plain reply was tunnelled to the client's node.
    Reply = 3,
    /// An external client's TCP segment carried a timestamp cookie
    /// (`ts_cookie`) that named a backend of its service: it went there.
    TsCookieHit = 4,
    /// An external client's TCP segment echoed a timestamp that is no
    /// valid cookie of its service (not stamped, stale or forged): it took
    /// the bucket hash.
    TsCookieMiss = 5,
}

/// Size of the event counter array.
pub const LB_EVENT_COUNT: u32 = 6;

impl LbEvent {
    /// Every event, in code order.
    pub const ALL: [LbEvent; 6] = [
        Self::NewFlow,
        Self::CookieHit,
        Self::CookieStale,
        Self::Reply,
        Self::TsCookieHit,
        Self::TsCookieMiss,
    ];

    /// A stable snake_case name, used as a metrics label and in P4 as the
    /// suffix of `LB_EVENT_<NAME>`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::NewFlow => "new_flow",
            Self::CookieHit => "cookie_hit",
            Self::CookieStale => "cookie_stale",
            Self::Reply => "reply",
            Self::TsCookieHit => "ts_cookie_hit",
            Self::TsCookieMiss => "ts_cookie_miss",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dense_unique_and_fit_the_counter() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.code() as usize, i + 1, "{r:?}");
            assert!(u32::from(r.code()) < DROP_REASON_COUNT);
            assert_eq!(DropReason::from_code(r.code()), Some(*r));
        }
        assert_eq!(DropReason::from_code(0), None);
        for (i, e) in LbEvent::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
        }
    }
}
