//! The switch pipeline: `TalariaIngress` of p4/talaria.p4 (the reference),
//! with its parser's verdicts, in one pass per packet.
//!
//! 1. Ethernet → IPv4 or IPv6. Any other frame (ARP, LLDP, VLAN-tagged,
//!    ...) has no route and is dropped as `no_route`, like the P4: a switch
//!    port forwards only what `ipv4_route` or `ipv6_route` routes, the
//!    switch answers no ARP or NDP, and the lab configures static
//!    neighbours. IPv6 is routed (`route_v6`) and nothing else: a
//!    truncated header or version ≠ 6 is `malformed`, hop limit ≤ 1
//!    `ttl_expired`. A truncated IPv4 header,
//!    version ≠ 4, ihl < 5 or a wrong outer header checksum is `malformed`;
//!    a source in `spoofed_source` (the switch's own) is `spoofed_source`:
//!    the outer source, or for a tunnel to the switch that parses, the
//!    inner one (`tunnel_peer` vouches for the outer; the inner may leave
//!    plain, to a backend without an agent).
//! 2. UDP (first fragment) to port 6081 looks up `switch_addr`. On a hit the
//!    tunnel terminates here and the P4 parser's verdict on the Geneve part
//!    counts: the first option must be ours and alone (P4 parses exactly one
//!    option), then the inner IPv4 and, in a first fragment without
//!    options, TCP/UDP, or (unfragmented) an ICMP error down to the ports
//!    it quotes; a later request fragment goes by its option. The
//!    sender must be a node on its port (`tunnel_peer`). A `REPLY` is
//!    checked (its source is its service's VIP and port, its cookie names a
//!    backend of that service, the sender is that backend's node: else
//!    `forged_reply`) and re-originated towards the client's node
//!    (`pod_node`), or, to a client outside the cluster, stripped and
//!    routed plain (not a `NOTIFY`: `no_client_node`); a client's ICMP
//!    error about a reply goes to the backend its cookie names, the quoted
//!    reply rewritten as the backend sent it;
//!    anything else is load-balanced (`service_v4`, `cookie_check`,
//!    `lb_bucket`, `backend`), DNATed and cookied. The outer header becomes
//!    (switch address → node, TTL `TUNNEL_TTL`). A tunnel whose Geneve
//!    protocol is 0x86DD carries an IPv6 Service's packet (`terminate_v6`,
//!    a subprogram of its own): the same walk with `service_v6`,
//!    `backend_v6` (FlowTuple6 hash, L4 checksum over both 128-bit
//!    addresses) and `pod_node_v6`, for TCP or UDP right after the fixed
//!    header, or a `REPLY` whose next header is ICMPv6 (a backend's error
//!    about its flow, checked as an IPv4 reply without ports: no
//!    `service_v6` lookup, its ICMPv6 message unread), or a request whose
//!    next header is ICMPv6: a client's error (type < 128) quoting an IPv6
//!    header with TCP or UDP right after it, parsed down to the quoted
//!    ports (each whole, else `malformed`) and relayed to the backend as
//!    IPv4's (`relay_icmp6_error`, a subprogram too: `icmp_spoof`,
//!    `no_service`, `no_backend`; inner destination, quoted source address
//!    and port rewritten, ICMPv6 checksum updated over its pseudo header
//!    and the quote). Nothing else (`unsupported_protocol`: extension
//!    headers, fragments, informational ICMPv6 such as echo requests,
//!    quotes without ports); an IPv6 reply without a client node and an
//!    IPv6 backend without a node are drops (`no_client_node`,
//!    `no_backend`), never stripped.
//! 3. A plain TCP or UDP first fragment without options (UDP to 6081
//!    excluded) to a Service address in `service_v4` is an external
//!    client's request. A TCP segment that echoes a timestamp (options
//!    starting NOP, NOP, timestamp, all 12 bytes there; ACK, no SYN) goes
//!    to the backend its timestamp cookie (TSecr's low half) names in
//!    `ts_cookie`, if `cookie_check` vouches for it (`ts_cookie_hit`),
//!    else (`ts_cookie_miss`) and without an echo (`new_flow`) it is hashed
//!    (`lb_bucket`); then `backend`, DNAT, and it is routed plain to a
//!    backend without an agent or tunnelled to the backend's node from its
//!    `tunnel_source`, flagged `EXTERNAL`. Otherwise it may be
//!    an agentless endpoint's reply (`endpoint_reply`, `pod_node`,
//!    `tunnel_source`), tunnelled unchanged to the client's node.
//! 4. Everything else is routed by `ipv4_route` after the TTL check, Geneve
//!    in transit included, however odd its Geneve part.
//! 5. `forward`: TTL decrement, MAC rewrite, `bpf_redirect` out of the port.
//!
//! The P4 and this program agree packet for packet, bytes and counters
//! (the parity suite in `bmv2-testbed/tests/parity.rs` runs the scenarios
//! on both): outer UDP checksum 0 on re-originated tunnels, inner checksums
//! updated incrementally (RFC 1624), a UDP checksum that comes out zero
//! sent as 0xFFFF (RFC 768).
//!
//! Packet bytes are read with `bpf_skb_load_bytes` into stack copies and
//! written with `bpf_skb_store_bytes` and the checksum helpers, so the
//! variable outer header length needs no pointer juggling for the verifier.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_DECAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_FIXED_GSO,
        BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_F_RECOMPUTE_CSUM, TC_ACT_SHOT,
    },
    helpers::{bpf_redirect, bpf_skb_load_bytes},
    macros::{classifier, map},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray, PerCpuHashMap},
    programs::TcContext,
};
use talaria_common::{
    be::{Be16, Be32},
    drop::{DropReason, LbEvent, DROP_REASON_COUNT, LB_EVENT_COUNT},
    hash::{bucket_of, crc32_step, hash_mode, FlowTuple},
    maps::{
        BackendV6Value, BackendValue, BucketValue, EndpointReplyKey, EndpointReplyValue, NodeValue,
        PacketBytes, RouteValue, ServiceKey, ServiceScopedKey, ServiceV6Key, ServiceValue,
        TsCookieKey, TsCookieValue, TunnelPeerKey,
    },
    net::{
        tcp_flags, EthHdr, Ipv4Hdr, Ipv6Hdr, TcpHdr, UdpHdr, ETH_HDR_LEN, ETH_P_IP, ETH_P_IPV6,
        ICMPV6_INFO_MIN, ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED, IPPROTO_ICMP, IPPROTO_ICMPV6,
        IPPROTO_TCP, IPPROTO_UDP, IPV4_HDR_LEN, IPV6_HDR_LEN, TCP_HDR_LEN, UDP_HDR_LEN,
    },
    ts_cookie::NOP_NOP_TIMESTAMP,
    wire::{
        flags, GeneveHdr, TalariaEncap, TalariaOpt, ENCAP_OVERHEAD, GENEVE_HDR_LEN,
        GENEVE_PROTO_IPV4, GENEVE_PROTO_IPV6, GENEVE_UDP_PORT, OPT_HDR_LEN, OPT_TYPE_CRITICAL,
        TALARIA_OPT_CLASS, TALARIA_OPT_LEN, TALARIA_OPT_TYPE, TALARIA_OPT_WORDS, TALARIA_VERSION,
    },
};
use talaria_switch_ebpf::{size, NO_PORT, PORT_COUNT, PORT_DROP_ROWS, ROUTE_DROP_PORT, TUNNEL_TTL};

// ------------------------------------------------------------------ tables --

/// `BPF_F_NO_PREALLOC`: the service tables are sized for 10k Services
/// (a million buckets); preallocating them would pin ~100 MB of kernel
/// memory per switch whatever the load. Entries are allocated on insert,
/// which is control-plane time, and the kernel still enforces max_entries.
const NO_PREALLOC: u32 = 1;

/// `TalariaIngress.ipv4_route`: outer (or plain) destination, LPM → egress.
#[map]
static SWITCH_IPV4_ROUTE: LpmTrie<Be32, RouteValue> = LpmTrie::pinned(size::IPV4_ROUTE, 0);

/// `TalariaIngress.ipv6_route`: IPv6 destination, LPM → egress.
#[map]
static SWITCH_IPV6_ROUTE: LpmTrie<[u8; 16], RouteValue> = LpmTrie::pinned(size::IPV6_ROUTE, 0);

/// `TalariaIngress.switch_addr`: the switch's own tunnel addresses (value unused).
#[map]
static SWITCH_SWITCH_ADDR: HashMap<Be32, u32> = HashMap::pinned(size::SWITCH_ADDR, 0);

/// `TalariaIngress.service_v4`: (VIP, port, proto) → service id, bucket mask, hash mode.
#[map]
static SWITCH_SERVICE_V4: HashMap<ServiceKey, ServiceValue> =
    HashMap::pinned(size::SERVICE_V4, NO_PREALLOC);

/// `TalariaIngress.cookie_check`: (service id, backend id) pairs a cookie may name (value unused).
#[map]
static SWITCH_COOKIE_CHECK: HashMap<ServiceScopedKey, u32> =
    HashMap::pinned(size::COOKIE_CHECK, NO_PREALLOC);

/// `TalariaIngress.lb_bucket`: (service id, bucket) → backend id.
#[map]
static SWITCH_LB_BUCKET: HashMap<ServiceScopedKey, BucketValue> =
    HashMap::pinned(size::LB_BUCKET, NO_PREALLOC);

/// `TalariaIngress.backend`: backend id (host order) → backend IP, port and node.
#[map]
static SWITCH_BACKEND: HashMap<u32, BackendValue> = HashMap::pinned(size::BACKEND, NO_PREALLOC);

/// `TalariaIngress.pod_node`: client pod address, LPM → the client's node.
#[map]
static SWITCH_POD_NODE: LpmTrie<Be32, NodeValue> = LpmTrie::pinned(size::POD_NODE, 0);

/// `TalariaIngress.tunnel_peer`: (P4 port, node address) that may send tunnels (value unused).
#[map]
static SWITCH_TUNNEL_PEER: HashMap<TunnelPeerKey, u32> = HashMap::pinned(size::TUNNEL_PEER, 0);

/// `TalariaIngress.spoofed_source`: source addresses no port may use (value unused).
#[map]
static SWITCH_SPOOFED_SOURCE: HashMap<Be32, u32> = HashMap::pinned(size::SPOOFED_SOURCE, 0);

/// `TalariaIngress.endpoint_reply`: (P4 port, endpoint address, port, proto)
/// of endpoints that run no agent → the cookie their replies are tunnelled with.
#[map]
static SWITCH_ENDPOINT_REPLY: HashMap<EndpointReplyKey, EndpointReplyValue> =
    HashMap::pinned(size::ENDPOINT_REPLY, 0);

/// `TalariaIngress.tunnel_source`: node address → the switch address that
/// node accepts tunnels from (the outer source of a tunnel built around a
/// plain packet).
#[map]
static SWITCH_TUNNEL_SOURCE: HashMap<Be32, Be32> = HashMap::pinned(size::TUNNEL_SOURCE, 0);

/// `TalariaIngress.ts_cookie`: (service id, timestamp cookie) → the backend
/// whose node stamped it, for external clients.
#[map]
static SWITCH_TS_COOKIE: HashMap<TsCookieKey, TsCookieValue> =
    HashMap::pinned(size::TS_COOKIE, NO_PREALLOC);

/// `TalariaIngress.service_v6`: (IPv6 VIP, port, proto) → service id,
/// bucket mask, hash mode (`service_v4`'s action).
#[map]
static SWITCH_SERVICE_V6: HashMap<ServiceV6Key, ServiceValue> =
    HashMap::pinned(size::SERVICE_V6, NO_PREALLOC);

/// `TalariaIngress.backend_v6`: backend id (host order) → IPv6 backend
/// address, port and (IPv4) node. No direct counter.
#[map]
static SWITCH_BACKEND_V6: HashMap<u32, BackendV6Value> =
    HashMap::pinned(size::BACKEND_V6, NO_PREALLOC);

/// `TalariaIngress.pod_node_v6`: IPv6 client pod address, LPM → the
/// client's node.
#[map]
static SWITCH_POD_NODE_V6: LpmTrie<[u8; 16], NodeValue> = LpmTrie::pinned(size::POD_NODE_V6, 0);

// ---------------------------------------------------------------- counters --

/// Direct counter of `backend`, per CPU; userspace creates and deletes the cell with the entry.
#[map]
static SWITCH_BACKEND_COUNTER: PerCpuHashMap<u32, PacketBytes> =
    PerCpuHashMap::pinned(size::BACKEND, NO_PREALLOC);

/// `TalariaIngress.service_counter`, per CPU, indexed by service id.
#[map]
static SWITCH_SERVICE_COUNTER: PerCpuArray<PacketBytes> =
    PerCpuArray::pinned(size::SERVICE_COUNTER, 0);

/// `TalariaIngress.drop_counter`, per CPU, indexed by `DropReason` code.
#[map]
static SWITCH_DROP_COUNTER: PerCpuArray<PacketBytes> = PerCpuArray::pinned(DROP_REASON_COUNT, 0);

/// `TalariaIngress.lb_event_counter`, per CPU, indexed by `LbEvent` code.
#[map]
static SWITCH_LB_EVENT_COUNTER: PerCpuArray<PacketBytes> = PerCpuArray::pinned(LB_EVENT_COUNT, 0);

/// Packets received per P4 port, per CPU (metrics only).
#[map]
static SWITCH_PORT_RX: PerCpuArray<PacketBytes> = PerCpuArray::pinned(PORT_COUNT, 0);

/// Packets redirected out of each P4 port, per CPU (metrics only).
#[map]
static SWITCH_PORT_TX: PerCpuArray<PacketBytes> = PerCpuArray::pinned(PORT_COUNT, 0);

/// Drops per ingress P4 port and reason, per CPU (metrics only), indexed by
/// `port * DROP_REASON_COUNT + reason`; row `NO_PORT` counts packets from
/// an interface that is no switch port (test runs).
#[map]
static SWITCH_PORT_DROP: PerCpuArray<PacketBytes> =
    PerCpuArray::pinned(PORT_DROP_ROWS * DROP_REASON_COUNT, 0);

// ------------------------------------------------------------------- ports --

/// P4 port number → ifindex of its Linux interface (0: no such port).
#[map]
static SWITCH_PORT_IFINDEX: Array<u32> = Array::pinned(PORT_COUNT, 0);

/// Ifindex → P4 port number, for the ingress port's rx counter.
#[map]
static SWITCH_IFINDEX_PORT: HashMap<u32, u32> = HashMap::pinned(PORT_COUNT, 0);

// -------------------------------------------------------------- constants --

const IP_OFF: usize = ETH_HDR_LEN;
/// Offsets inside an IPv4 header.
const IP_TTL: usize = 8;
const IP_CHECK: usize = 10;
const IP_SRC: usize = 12;
const IP_DST: usize = 16;
/// Offsets of the source and destination inside an IPv6 header.
const IP6_SRC: usize = 8;
const IP6_DST: usize = 24;
/// Offsets of the checksum inside TCP and UDP headers.
const TCP_CHECK: usize = 16;
const UDP_CHECK: usize = 6;
/// Offset of the checksum inside an ICMP (or ICMPv6) header, and the
/// header's length (the quoted packet follows it).
const ICMP_CHECK: usize = 2;
const ICMP_HDR_LEN: usize = 8;
/// Offset of `flags` inside the Talaria option.
const OPT_FLAGS: usize = 5;
/// Geneve option area of a talaria packet: our option alone, in words.
const TALARIA_GENEVE_OPT_WORDS: usize = TALARIA_OPT_LEN / 4;
/// Bytes from the Geneve header to the inner IPv4 header.
const ENCAP_LEN: usize = GENEVE_HDR_LEN + TALARIA_OPT_LEN;
/// The drop verdict (the binding's integer type differs between targets).
#[allow(clippy::unnecessary_cast)]
const SHOT: i32 = TC_ACT_SHOT as i32;
/// IPv4 flags/fragment-offset bits.
const IP_MF: u16 = 0x2000;
const IP_FRAG_OFFSET: u16 = 0x1fff;

/// What every drop and counter needs to know about the packet at hand.
#[derive(Clone, Copy)]
struct Pkt {
    /// `skb->len`.
    len: u32,
    /// The ingress P4 port, `NO_PORT` if the interface is none.
    port: u32,
}

// -------------------------------------------------------------- the program --

/// Ingress of every switch port (TCX): packets arriving from the link.
#[classifier]
pub fn switch_ingress(ctx: TcContext) -> i32 {
    match try_switch_ingress(&ctx) {
        Ok(V6_HANDOFF) => terminate_v6(&ctx),
        Ok(action) | Err(action) => action,
    }
}

/// What `try_switch_ingress` returns for a tunnel to the switch whose
/// Geneve part parsed and whose inner packet is IPv6: `terminate_v6`
/// takes it from there, called from `switch_ingress` so that its frame
/// and `try_switch_ingress`'s are never on the stack together (each is
/// most of the 512 bytes a program and its calls may use). Also what
/// `relay_icmp6_error` returns for a reply's ICMPv6, which `terminate_v6`
/// goes on with. No TC action has this value.
const V6_HANDOFF: i32 = i32::MIN;

fn try_switch_ingress(ctx: &TcContext) -> Result<i32, i32> {
    let len = ctx.len();
    // SAFETY: the context pointer is the kernel's __sk_buff.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: plain value read of a map the loader fills.
    let port = match unsafe { SWITCH_IFINDEX_PORT.get(ifindex) } {
        Some(&port) => {
            count(&SWITCH_PORT_RX, port, len);
            port
        }
        None => NO_PORT,
    };
    let pkt = Pkt { len, port };

    let eth: EthHdr = ctx.load(0).map_err(|_| drop(DropReason::Malformed, pkt))?;
    // SAFETY: the context pointer is the kernel's __sk_buff.
    let vlan_tagged = unsafe { (*ctx.skb.skb).vlan_present } != 0;
    // The kernel moves a VLAN tag out of the frame into skb metadata before
    // TC sees it; for the P4 parser the frame's ethertype is the tag's.
    match eth.ether_type.get() {
        _ if vlan_tagged => return Err(drop(DropReason::NoRoute, pkt)),
        ETH_P_IP => {}
        ETH_P_IPV6 => return route_v6(ctx, pkt),
        _ => return Err(drop(DropReason::NoRoute, pkt)),
    }
    let ip: Ipv4Hdr = ctx
        .load(IP_OFF)
        .map_err(|_| drop(DropReason::Malformed, pkt))?;
    if ip.version_ihl >> 4 != 4 || ip.header_len() < IPV4_HDR_LEN || !ipv4_checksum_ok(ctx, &ip) {
        return Err(drop(DropReason::Malformed, pkt));
    }
    let udp_off = IP_OFF + ip.header_len();

    // The P4 parser reads UDP only in a first fragment.
    if ip.proto == IPPROTO_UDP && ip.frag.get() & IP_FRAG_OFFSET == 0 {
        if let Ok(udp) = ctx.load::<UdpHdr>(udp_off) {
            // SAFETY: plain value read.
            if udp.dst_port.get() == GENEVE_UDP_PORT
                && unsafe { SWITCH_SWITCH_ADDR.get(ip.dst) }.is_some()
            {
                return terminate(ctx, pkt, &ip, udp_off, &udp);
            }
        }
    }
    if spoofed(ip.src) {
        return Err(drop(DropReason::SpoofedSource, pkt));
    }
    if let Some(ports) = plain_ports(ctx, &ip, udp_off) {
        // One `service_v4` for both: a request's destination is a Service
        // address, else the packet may be an endpoint's reply.
        if let Some(svc) = find_service(ip.dst, ports[1], ip.proto) {
            return external_request(ctx, pkt, &ip, ports, &svc);
        }
        if let Some(tunnel) = endpoint_reply(pkt, &ip, ports) {
            return encap_plain(ctx, pkt, &ip, ports, &tunnel);
        }
    }
    if ip.ttl <= 1 {
        return Err(drop(DropReason::TtlExpired, pkt));
    }
    let route = lookup_route(ip.dst, pkt)?;
    forward(ctx, pkt, &route, ip.ttl, ip.ttl - 1, ip.proto)
}

/// An IPv6 packet: `ipv6_route` and `forward_v6` (no header checksum to
/// fix).
#[inline(always)]
fn route_v6(ctx: &TcContext, pkt: Pkt) -> Result<i32, i32> {
    let ip: Ipv6Hdr = ctx
        .load(IP_OFF)
        .map_err(|_| drop(DropReason::Malformed, pkt))?;
    if ip.version() != 6 {
        return Err(drop(DropReason::Malformed, pkt));
    }
    if ip.hop_limit <= 1 {
        return Err(drop(DropReason::TtlExpired, pkt));
    }
    let route = match SWITCH_IPV6_ROUTE.get(Key::new(128, ip.dst)) {
        Some(r) if r.port != ROUTE_DROP_PORT => *r,
        _ => return Err(drop(DropReason::NoRoute, pkt)),
    };
    let ifindex = port_ifindex(&route)?;
    let err = |_| drop(DropReason::Malformed, pkt);
    ctx.store(IP_OFF + Ipv6Hdr::HOP_LIMIT_OFFSET, &(ip.hop_limit - 1), 0)
        .map_err(err)?;
    redirect(ctx, pkt, &route, ifindex)
}

/// The ports of a plain packet that may be an external client's request
/// or an endpoint's reply: a TCP or UDP first fragment without IP options
/// (UDP to 6081 is Geneve in transit, never either), whose L4 header is
/// whole where the P4 parser extracts it.
#[inline(always)]
fn plain_ports(ctx: &TcContext, ip: &Ipv4Hdr, l4_off: usize) -> Option<[Be16; 2]> {
    if ip.header_len() != IPV4_HDR_LEN || ip.frag.get() & IP_FRAG_OFFSET != 0 {
        return None;
    }
    match ip.proto {
        IPPROTO_TCP => {
            let tcp: TcpHdr = ctx.load(l4_off).ok()?;
            Some([tcp.src_port, tcp.dst_port])
        }
        IPPROTO_UDP => {
            let udp: UdpHdr = ctx.load(l4_off).ok()?;
            if udp.dst_port.get() == GENEVE_UDP_PORT {
                return None;
            }
            Some([udp.src_port, udp.dst_port])
        }
        _ => None,
    }
}

/// A tunnel the switch builds around a plain packet: an endpoint's reply
/// to the client's node, or an external client's request to its backend's
/// node; from the switch address that node accepts (`tunnel_source`).
struct PlainTunnel {
    flags: u8,
    service_id: u16,
    backend_id: u32,
    node_ip: Be32,
    switch_ip: Be32,
}

/// `tunnel_source`: the switch address `node` accepts tunnels from.
#[inline(always)]
fn tunnel_source(node: Be32) -> Option<Be32> {
    // SAFETY: plain value read.
    unsafe { SWITCH_TUNNEL_SOURCE.get(node) }.copied()
}

/// An external client's request: a plain packet to a Service address (a
/// LoadBalancer ingress IP, an externalIP). It has no Talaria cookie: a
/// segment that echoes a timestamp goes where its timestamp cookie says
/// (`ts_cookie`, checked against `cookie_check`: `ts_cookie_hit`), else it
/// is hashed as a node's new flow (`ts_cookie_miss` with an echo,
/// `new_flow` without); the service counter either way. Then DNATed (the
/// timestamps untouched: the backend's node restores the echo). To a
/// backend without an agent it is routed plain; to one behind a node it
/// is tunnelled there from that node's `tunnel_source` (`no_tunnel_source`
/// without one), flagged `COOKIE_VALID | EXTERNAL`, and `NEW_FLOW` if
/// hashed, with the cookie. A first fragment is `fragment`: its later
/// ones carry no ports and could not follow it.
#[inline(always)]
fn external_request(
    ctx: &TcContext,
    pkt: Pkt,
    ip: &Ipv4Hdr,
    ports: [Be16; 2],
    svc: &ServiceValue,
) -> Result<i32, i32> {
    if ip.frag.get() & IP_MF != 0 {
        return Err(drop(DropReason::Fragment, pkt));
    }
    count(&SWITCH_SERVICE_COUNTER, svc.service_id as u32, pkt.len);
    let echo = if ip.proto == IPPROTO_TCP {
        ts_echo(ctx, IP_OFF + IPV4_HDR_LEN)
    } else {
        None
    };
    let by_cookie = match echo {
        None => {
            event(LbEvent::NewFlow, pkt);
            None
        }
        Some(cookie) => {
            let found = ts_cookie_backend(svc.service_id, cookie);
            event(
                if found.is_some() {
                    LbEvent::TsCookieHit
                } else {
                    LbEvent::TsCookieMiss
                },
                pkt,
            );
            found
        }
    };
    let (backend_id, fresh) = match by_cookie {
        Some(id) => (id, 0),
        None => (hashed_backend(svc, ip, ports, pkt)?, flags::NEW_FLOW),
    };
    let backend =
        lookup_backend(backend_id, pkt).ok_or_else(|| drop(DropReason::NoBackend, pkt))?;
    if backend.node_ip == Be32([0; 4]) {
        dnat(ctx, pkt, IP_OFF, ip, ports[1], &backend)?;
        if ip.ttl <= 1 {
            return Err(drop(DropReason::TtlExpired, pkt));
        }
        let route = lookup_route(backend.ip, pkt)?;
        return forward(ctx, pkt, &route, ip.ttl, ip.ttl - 1, ip.proto);
    }
    let switch_ip =
        tunnel_source(backend.node_ip).ok_or_else(|| drop(DropReason::NoTunnelSource, pkt))?;
    dnat(ctx, pkt, IP_OFF, ip, ports[1], &backend)?;
    let tunnel = PlainTunnel {
        flags: flags::COOKIE_VALID | flags::EXTERNAL | fresh,
        service_id: svc.service_id,
        backend_id,
        node_ip: backend.node_ip,
        switch_ip,
    };
    encap_plain(ctx, pkt, ip, ports, &tunnel)
}

/// The first 12 option bytes of a segment with timestamps first: NOP, NOP,
/// kind 8, length 10, TSval, TSecr (`tcp_timestamp_t` in p4/headers.p4).
#[repr(C)]
struct TcpTimestamp {
    lead: Be32,
    tsval: Be32,
    tsecr: Be32,
}

/// The timestamp cookie a plain TCP segment at `tcp_off` echoes: the low
/// half of its TSecr, if its options open with NOP, NOP, timestamp and the
/// 12 bytes are all there (the P4 parser's `parse_plain_tcp` and
/// `parse_tcp_timestamp`; a frame that ends inside them is a segment
/// without the option), and it is an ACK but no SYN (a SYN's TSecr means
/// nothing, RFC 7323).
#[inline(always)]
fn ts_echo(ctx: &TcContext, tcp_off: usize) -> Option<u16> {
    let tcp: TcpHdr = ctx.load(tcp_off).ok()?;
    if tcp.data_off >> 4 < 8 {
        return None;
    }
    let ts: TcpTimestamp = ctx.load(tcp_off + TCP_HDR_LEN).ok()?;
    if ts.lead != NOP_NOP_TIMESTAMP
        || tcp.flags & tcp_flags::ACK == 0
        || tcp.flags & tcp_flags::SYN != 0
    {
        return None;
    }
    Some(ts.tsecr.get() as u16)
}

/// `ts_cookie`, then `cookie_check`: the backend of service `service_id`
/// whose node stamped `cookie`, if the service still has it.
#[inline(always)]
fn ts_cookie_backend(service_id: u16, cookie: u16) -> Option<u32> {
    // SAFETY: plain value read.
    let hit = unsafe { SWITCH_TS_COOKIE.get(TsCookieKey { service_id, cookie }) }?;
    let key = ServiceScopedKey {
        service_id,
        _pad: 0,
        id: hit.backend_id,
    };
    // SAFETY: plain value read.
    unsafe { SWITCH_COOKIE_CHECK.get(key) }?;
    Some(hit.backend_id)
}

/// Whether a plain packet with `ports` is the reply of an endpoint that
/// runs no agent: its (port, source, source port, protocol) is in
/// `endpoint_reply`, to a client whose node `pod_node` knows, which has a
/// `tunnel_source`. Anything less is routed plain.
#[inline(always)]
fn endpoint_reply(pkt: Pkt, ip: &Ipv4Hdr, ports: [Be16; 2]) -> Option<PlainTunnel> {
    let key = EndpointReplyKey {
        port: pkt.port as u16,
        endpoint_port: ports[0],
        endpoint_addr: ip.src,
        proto: ip.proto,
        _pad: [0; 3],
    };
    // SAFETY: plain value read.
    let cookie = *unsafe { SWITCH_ENDPOINT_REPLY.get(key) }?;
    let node = SWITCH_POD_NODE.get(Key::new(32, ip.dst))?.node_ip;
    let switch_ip = tunnel_source(node)?;
    event(LbEvent::Reply, pkt);
    Some(PlainTunnel {
        flags: flags::REPLY | flags::COOKIE_VALID | flags::ENDPOINT,
        service_id: cookie.service_id,
        backend_id: cookie.backend_id,
        node_ip: node,
        switch_ip,
    })
}

/// The outer headers of a tunnel built around a plain packet, as a node
/// writes them.
#[repr(C)]
struct OuterHdrs {
    ip: Ipv4Hdr,
    udp: UdpHdr,
    encap: [u8; TalariaEncap::LEN],
}

/// Encapsulates a plain packet as a node does (outer TTL `TUNNEL_TTL`, DF,
/// id 0, the packet's TOS, UDP checksum 0, source port from the crc32 of
/// the flow as it arrived: `ip` and `ports`, its header before any DNAT)
/// and routes it to the tunnel's node.
#[inline(always)]
fn encap_plain(
    ctx: &TcContext,
    pkt: Pkt,
    ip: &Ipv4Hdr,
    ports: [Be16; 2],
    t: &PlainTunnel,
) -> Result<i32, i32> {
    let route = lookup_route(t.node_ip, pkt)?;
    let err = |_| drop(DropReason::Malformed, pkt);
    // FIXED_GSO: a GSO packet keeps its segment size, as on the nodes.
    let room_flags =
        BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP;
    ctx.adjust_room(ENCAP_OVERHEAD as i32, BPF_ADJ_ROOM_MAC, room_flags as u64)
        .map_err(err)?;
    let hash = FlowTuple {
        src: ip.src,
        dst: ip.dst,
        proto: ip.proto,
        src_port: ports[0],
        dst_port: ports[1],
    }
    .hash();
    // The lengths follow the inner header, as the P4 computes them (a
    // padded frame's padding is not counted).
    let inner_len = ip.total_len.get();
    let hdrs = OuterHdrs {
        ip: Ipv4Hdr::new(
            ip.tos,
            inner_len.wrapping_add(ENCAP_OVERHEAD as u16),
            true,
            IPPROTO_UDP,
            t.switch_ip,
            t.node_ip,
        ),
        udp: UdpHdr {
            src_port: Be16::new(0xc000 | (hash >> 18) as u16),
            dst_port: Be16::new(GENEVE_UDP_PORT),
            len: Be16::new(inner_len.wrapping_add((ENCAP_OVERHEAD - IPV4_HDR_LEN) as u16)),
            check: Be16::new(0),
        },
        encap: TalariaEncap::new(t.flags, t.service_id, t.backend_id).to_bytes(),
    };
    ctx.store(IP_OFF, &hdrs, 0).map_err(err)?;
    let out = Pkt {
        len: ctx.len(),
        ..pkt
    };
    forward(ctx, out, &route, TUNNEL_TTL, TUNNEL_TTL - 1, IPPROTO_UDP)
}

/// Whether the outer IPv4 header checksum (options included) is right:
/// `TalariaVerifyChecksum`.
#[inline(always)]
fn ipv4_checksum_ok(ctx: &TcContext, ip: &Ipv4Hdr) -> bool {
    let b = ip.to_bytes();
    let mut sum = 0u32;
    let mut i = 0;
    while i < IPV4_HDR_LEN {
        sum += u16::from_be_bytes([b[i], b[i + 1]]) as u32;
        i += 2;
    }
    let option_words = ip.header_len() / 4 - 5;
    for w in 0..10 {
        if w >= option_words {
            break;
        }
        match ctx.load::<[u8; 4]>(IP_OFF + IPV4_HDR_LEN + 4 * w) {
            Ok(o) => {
                sum += u16::from_be_bytes([o[0], o[1]]) as u32
                    + u16::from_be_bytes([o[2], o[3]]) as u32
            }
            Err(_) => return false,
        }
    }
    fold(sum) == 0xffff
}

/// The P4 parser's verdict on a tunnel addressed to the switch: the error
/// it stops at, in parse order, as a drop reason.
#[inline(always)]
fn parse_tunnel(
    ctx: &TcContext,
    geneve_off: usize,
) -> Result<(TalariaOpt, Option<(Ipv4Hdr, Option<Quote>)>), DropReason> {
    let malformed = |_| DropReason::Malformed;
    let geneve: GeneveHdr = ctx.load(geneve_off).map_err(malformed)?;
    if geneve.version() != 0 {
        return Err(DropReason::GeneveVersion);
    }
    let protocol = geneve.protocol.get();
    if protocol != GENEVE_PROTO_IPV4 && protocol != GENEVE_PROTO_IPV6 {
        return Err(DropReason::GeneveProtocol);
    }
    if geneve.options_len() == 0 {
        return Err(DropReason::MissingOption);
    }
    let opt_off = geneve_off + GENEVE_HDR_LEN;
    let class_type: [u8; 3] = ctx.load(opt_off).map_err(malformed)?;
    if u16::from_be_bytes([class_type[0], class_type[1]]) != TALARIA_OPT_CLASS
        || class_type[2] != TALARIA_OPT_TYPE
    {
        let _foreign: [u8; OPT_HDR_LEN] = ctx.load(opt_off).map_err(malformed)?;
        return Err(if class_type[2] & OPT_TYPE_CRITICAL != 0 {
            DropReason::UnknownCriticalOption
        } else {
            DropReason::MissingOption
        });
    }
    let opt: TalariaOpt = ctx.load(opt_off).map_err(malformed)?;
    if opt.len & 0x1f != TALARIA_OPT_WORDS || geneve.options_len() != TALARIA_GENEVE_OPT_WORDS * 4 {
        return Err(DropReason::OptionLength);
    }
    if opt.version != TALARIA_VERSION {
        return Err(DropReason::TalariaVersion);
    }
    let inner_off = geneve_off + ENCAP_LEN;
    if protocol == GENEVE_PROTO_IPV6 {
        // An IPv6 Service's packet: `terminate_v6` parses the rest.
        return Ok((opt, None));
    }
    let inner: Ipv4Hdr = ctx.load(inner_off).map_err(malformed)?;
    if inner.version_ihl >> 4 != 4 || inner.header_len() < IPV4_HDR_LEN {
        return Err(DropReason::Malformed);
    }
    // The L4 header is parsed (and must be whole) only where the ports sit
    // at a fixed offset.
    let frag = inner.frag.get();
    let mut quote = None;
    if inner.version_ihl == 0x45 && frag & IP_FRAG_OFFSET == 0 {
        let l4_off = inner_off + IPV4_HDR_LEN;
        match inner.proto {
            IPPROTO_TCP => ctx.load::<TcpHdr>(l4_off).map(|_| ()).map_err(malformed)?,
            IPPROTO_UDP => ctx.load::<UdpHdr>(l4_off).map(|_| ()).map_err(malformed)?,
            IPPROTO_ICMP if frag & IP_MF == 0 => {
                quote = parse_icmp_error(ctx, l4_off).map_err(malformed)?
            }
            _ => {}
        }
    }
    Ok((opt, Some((inner, quote))))
}

/// Whether `src` is in `spoofed_source`: an address no port may send from.
#[inline(always)]
fn spoofed(src: Be32) -> bool {
    // SAFETY: plain value read.
    unsafe { SWITCH_SPOOFED_SOURCE.get(src) }.is_some()
}

/// What an ICMP error quotes of the packet it is about, when that packet
/// has ports at a fixed offset (`hdr.quoted_ports` valid in the P4).
#[derive(Clone, Copy)]
struct Quote {
    ip: Ipv4Hdr,
    ports: [Be16; 2],
}

/// The P4 parser's `parse_inner_icmp` and what follows it: the ICMP header,
/// and for a destination-unreachable or time-exceeded error the quoted
/// IPv4 header and, when unfragmented-first and without options, the
/// quoted TCP/UDP ports. Each must be whole where the P4 extracts it.
#[inline(always)]
fn parse_icmp_error(ctx: &TcContext, icmp_off: usize) -> Result<Option<Quote>, i64> {
    let [icmp_type, ..]: [u8; ICMP_HDR_LEN] = ctx.load(icmp_off)?;
    if icmp_type != ICMP_DEST_UNREACH && icmp_type != ICMP_TIME_EXCEEDED {
        return Ok(None);
    }
    let quoted_off = icmp_off + ICMP_HDR_LEN;
    let ip: Ipv4Hdr = ctx.load(quoted_off)?;
    let with_ports = ip.version_ihl & 0x0f == 5
        && ip.frag.get() & IP_FRAG_OFFSET == 0
        && (ip.proto == IPPROTO_TCP || ip.proto == IPPROTO_UDP);
    if !with_ports {
        return Ok(None);
    }
    let ports: [Be16; 2] = ctx.load(quoted_off + IPV4_HDR_LEN)?;
    Ok(Some(Quote { ip, ports }))
}

/// A tunnel addressed to the switch: re-originate a reply, or load-balance
/// a request; then the outer header goes (switch address → node) and is
/// routed.
#[inline(always)]
fn terminate(
    ctx: &TcContext,
    pkt: Pkt,
    outer: &Ipv4Hdr,
    udp_off: usize,
    udp: &UdpHdr,
) -> Result<i32, i32> {
    let geneve_off = udp_off + UDP_HDR_LEN;
    // `spoofed_source` checks the inner source of a tunnel that parses (it
    // may leave plain, to a backend without an agent; `tunnel_peer` checks
    // the outer one), else the outer source, before the parser's verdict.
    let (opt, inner) = parse_tunnel(ctx, geneve_off).map_err(|reason| {
        let reason = if spoofed(outer.src) {
            DropReason::SpoofedSource
        } else {
            reason
        };
        drop(reason, pkt)
    })?;
    let Some((inner, quote)) = inner else {
        return Ok(V6_HANDOFF);
    };
    if spoofed(inner.src) {
        return Err(drop(DropReason::SpoofedSource, pkt));
    }
    check_peer(pkt, outer.src)?;
    let opt_off = geneve_off + GENEVE_HDR_LEN;
    let inner_off = geneve_off + ENCAP_LEN;

    let reply = opt.flags & flags::REPLY != 0;
    let node_ip = if reply {
        check_reply(ctx, pkt, outer.src, &inner, inner_off, &opt)?;
        match SWITCH_POD_NODE.get(Key::new(32, inner.dst)) {
            Some(node) => {
                event(LbEvent::Reply, pkt);
                node.node_ip
            }
            // A notification is for a client node's agent only.
            None if opt.flags & flags::NOTIFY != 0 => {
                return Err(drop(DropReason::NoClientNode, pkt));
            }
            // A client outside the cluster: the reply leaves plain.
            None => {
                event(LbEvent::Reply, pkt);
                return strip_tunnel(ctx, pkt, inner_off);
            }
        }
    } else {
        load_balance(ctx, pkt, &inner, inner_off, &opt, opt_off, quote)?
    };

    if !reply && node_ip == Be32([0; 4]) {
        return strip_tunnel(ctx, pkt, inner_off);
    }
    reoriginate(ctx, pkt, outer, udp_off, udp, node_ip)
}

/// `tunnel_peer`: the tunnel's sender `node_ip` is a node on the port the
/// packet came in on.
#[inline(always)]
fn check_peer(pkt: Pkt, node_ip: Be32) -> Result<(), i32> {
    let peer = TunnelPeerKey {
        port: pkt.port as u16,
        _pad: 0,
        node_ip,
    };
    // SAFETY: plain value read.
    if unsafe { SWITCH_TUNNEL_PEER.get(peer) }.is_none() {
        return Err(drop(DropReason::TunnelPeer, pkt));
    }
    Ok(())
}

/// The outer header of a terminated tunnel becomes (the address it came
/// to → `node_ip`, TTL `TUNNEL_TTL`, UDP checksum 0), routed.
#[inline(always)]
fn reoriginate(
    ctx: &TcContext,
    pkt: Pkt,
    outer: &Ipv4Hdr,
    udp_off: usize,
    udp: &UdpHdr,
    node_ip: Be32,
) -> Result<i32, i32> {
    let route = lookup_route(node_ip, pkt)?;
    // Re-originate: from the address the tunnel came to, to the node.
    let err = |_| drop(DropReason::Malformed, pkt);
    set_addr(ctx, IP_OFF + IP_SRC, outer.src, outer.dst).map_err(err)?;
    set_addr(ctx, IP_OFF + IP_DST, outer.dst, node_ip).map_err(err)?;
    if udp.check.get() != 0 {
        ctx.store(udp_off + UDP_CHECK, &0u16, BPF_F_RECOMPUTE_CSUM as u64)
            .map_err(err)?;
    }
    forward(ctx, pkt, &route, outer.ttl, TUNNEL_TTL - 1, outer.proto)
}

/// `terminate_v6`'s working memory, one per CPU: the inner IPv6 header and
/// the keys built from it live here rather than on the stack, where LLVM
/// would hold every byte of an address in a register of its own and spill
/// them all (a frame the verifier refuses).
#[repr(C)]
struct V6Scratch {
    inner: Ipv6Hdr,
    /// The inner TCP or UDP source and destination ports (left as they
    /// were for ICMPv6, which has none).
    ports: [Be16; 2],
    service: ServiceV6Key,
    client: Key<[u8; 16]>,
    /// A client's ICMPv6 error (a request): the IPv6 header it quotes and
    /// that header's TCP or UDP ports (`hdr.quoted_ipv6`,
    /// `hdr.quoted_ports`; stale otherwise).
    quoted: Ipv6Hdr,
    quoted_ports: [Be16; 2],
}

/// Where, in a tunnel to the switch with outer header `outer`, its UDP
/// header, the Talaria option and the inner packet start (what
/// `terminate_v6` and `relay_icmp6_error` read again).
#[inline(always)]
fn tunnel_offsets(outer: &Ipv4Hdr) -> (usize, usize, usize) {
    let udp_off = IP_OFF + outer.header_len();
    let geneve_off = udp_off + UDP_HDR_LEN;
    (udp_off, geneve_off + GENEVE_HDR_LEN, geneve_off + ENCAP_LEN)
}

/// Not a table: scratch memory of `terminate_v6`, never pinned.
#[map]
static SWITCH_V6_SCRATCH: PerCpuArray<V6Scratch> = PerCpuArray::with_max_entries(1, 0);

/// A tunnel to the switch whose inner packet is IPv6 (an IPv6 Service's):
/// as IPv4's, with `service_v6`, `backend_v6` and `pod_node_v6`, and
/// `spoofed_source` on the outer source (an IPv6 source cannot pass for
/// the switch's addresses). Only TCP or UDP right after the fixed header,
/// or ICMPv6 right after it: in a reply, an error a backend sent about its
/// flow (re-originated unchanged, its message unread); in a request, a
/// client's error about a reply it got, quoting TCP or UDP ports
/// (`relay_icmp6_error`). `unsupported_protocol` otherwise: extension
/// headers, fragments, ICMPv6 echo requests, quotes without ports. A reply
/// is checked as IPv4's and goes to the client's node (`no_client_node`
/// without one: nothing leaves plain); a request to a backend without a
/// node is `no_backend`.
///
/// A BPF subprogram (`inline(never)`) with a frame of its own, entered
/// after `try_switch_ingress` checked the packet up to the Talaria option
/// (`V6_HANDOFF`): the outer headers and the option are read again.
#[inline(never)]
fn terminate_v6(ctx: &TcContext) -> i32 {
    let len = ctx.len();
    // SAFETY: the context pointer is the kernel's __sk_buff.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: plain value read of a map the loader fills.
    let port = unsafe { SWITCH_IFINDEX_PORT.get(ifindex) }
        .copied()
        .unwrap_or(NO_PORT);
    let pkt = Pkt { len, port };
    let Some(scratch) = SWITCH_V6_SCRATCH.get_ptr_mut(0) else {
        return SHOT;
    };
    // SAFETY: this CPU's cell, used by this one program run only.
    let scratch = unsafe { &mut *scratch };
    match try_terminate_v6(ctx, pkt, scratch) {
        Ok(action) | Err(action) => action,
    }
}

#[inline(always)]
fn try_terminate_v6(ctx: &TcContext, pkt: Pkt, sc: &mut V6Scratch) -> Result<i32, i32> {
    let malformed = |_| drop(DropReason::Malformed, pkt);
    let outer: Ipv4Hdr = ctx.load(IP_OFF).map_err(malformed)?;
    let (udp_off, opt_off, inner_off) = tunnel_offsets(&outer);
    // `spoofed_source` checks the outer source (an IPv6 one cannot pass
    // for the switch), before the parser's verdict on the inner packet.
    if spoofed(outer.src) {
        return Err(drop(DropReason::SpoofedSource, pkt));
    }
    // The P4 parser's `parse_inner_ipv6`: the header, then TCP or UDP if
    // it follows directly (whole, where the P4 extracts it); a request's
    // ICMPv6 (a client's error about a reply) goes its own way, a reply's
    // comes back (`V6_HANDOFF`) unread, as anything else.
    load_ipv6(ctx, inner_off, &mut sc.inner).map_err(malformed)?;
    if sc.inner.version() != 6 {
        return Err(drop(DropReason::Malformed, pkt));
    }
    let next_hdr = sc.inner.next_hdr;
    let l4_off = inner_off + IPV6_HDR_LEN;
    match next_hdr {
        IPPROTO_TCP => ctx.load::<TcpHdr>(l4_off).map(|_| ()).map_err(malformed)?,
        IPPROTO_UDP => ctx.load::<UdpHdr>(l4_off).map(|_| ()).map_err(malformed)?,
        IPPROTO_ICMPV6 => {
            // A subprogram call, off the TCP and UDP paths.
            let action = relay_icmp6_error(ctx, pkt, sc);
            if action != V6_HANDOFF {
                return Ok(action);
            }
        }
        _ => {}
    }
    check_peer(pkt, outer.src)?;
    let udp: UdpHdr = ctx.load(udp_off).map_err(malformed)?;
    let opt: TalariaOpt = ctx.load(opt_off).map_err(malformed)?;
    let reply = opt.flags & flags::REPLY != 0;
    match next_hdr {
        IPPROTO_TCP | IPPROTO_UDP => sc.ports = ctx.load(l4_off).map_err(malformed)?,
        // A reply without ports: an ICMPv6 error its backend's node
        // vouches for (`check_reply_v6`), whatever its type.
        IPPROTO_ICMPV6 if reply => {}
        _ => return Err(drop(DropReason::UnsupportedProtocol, pkt)),
    }
    let node_ip = if reply {
        check_reply_v6(pkt, outer.src, sc, &opt)?;
        sc.client = Key::new(128, sc.inner.dst);
        let node = SWITCH_POD_NODE_V6
            .get(&sc.client)
            .ok_or_else(|| drop(DropReason::NoClientNode, pkt))?;
        event(LbEvent::Reply, pkt);
        node.node_ip
    } else {
        load_balance_v6(ctx, pkt, sc, inner_off, &opt, opt_off)?
    };
    reoriginate(ctx, pkt, &outer, udp_off, &udp, node_ip)
}

/// Copies the IPv6 header at `off` into `hdr` (scratch memory): an error
/// if the packet ends inside it.
#[inline(always)]
fn load_ipv6(ctx: &TcContext, off: usize, hdr: &mut Ipv6Hdr) -> Result<(), i64> {
    // SAFETY: the helper writes the 40 bytes of a plain-bytes header into
    // memory `hdr` owns.
    let loaded = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            off as u32,
            (hdr as *mut Ipv6Hdr).cast(),
            IPV6_HDR_LEN as u32,
        )
    };
    if loaded != 0 {
        return Err(loaded);
    }
    Ok(())
}

/// The P4 parser's `parse_inner_icmp6` and what follows it, for an IPv6
/// request: the ICMPv6 header, and for an error (type < 128) the quoted
/// IPv6 header (into `sc.quoted`) and, when TCP or UDP follows it
/// directly, its ports (`sc.quoted_ports`). Each must be whole where the
/// P4 extracts it, as IPv4's [`parse_icmp_error`]. Whether the quote has
/// ports (`hdr.quoted_ports` valid in the P4).
#[inline(always)]
fn parse_icmp6_error(ctx: &TcContext, icmp_off: usize, sc: &mut V6Scratch) -> Result<bool, i64> {
    let [icmp_type, ..]: [u8; ICMP_HDR_LEN] = ctx.load(icmp_off)?;
    if icmp_type >= ICMPV6_INFO_MIN {
        return Ok(false);
    }
    let quoted_off = icmp_off + ICMP_HDR_LEN;
    load_ipv6(ctx, quoted_off, &mut sc.quoted)?;
    let next_hdr = sc.quoted.next_hdr;
    if next_hdr != IPPROTO_TCP && next_hdr != IPPROTO_UDP {
        return Ok(false);
    }
    sc.quoted_ports = ctx.load(quoted_off + IPV6_HDR_LEN)?;
    Ok(true)
}

/// `terminate_v6` from here for an inner IPv6 packet whose next header is
/// ICMPv6 (its header in `sc`): a reply's goes back (`V6_HANDOFF`: checked
/// as a reply without ports, its message unread); a request's is
/// [`relay_icmp_error`] for a client's ICMPv6 error about a reply it got.
/// Parsed down to the quoted ports (`parse_icmp6_error`: `malformed` if
/// cut short), then `tunnel_peer`; an echo request or a quote without
/// ports is `unsupported_protocol`. The cookie must be valid and the
/// client the quoted packet's destination, else `icmp_spoof`; the quoted
/// source (VIP, port, next header) must be in `service_v6` (`no_service`)
/// as the cookie's service (`icmp_spoof`); `cookie_check` must vouch for
/// the cookie's backend and `backend_v6` give it a node (`no_backend`: a
/// gone backend has no one to tell, an error cannot be hashed, and IPv6
/// has no agentless endpoints to strip to). The inner destination and the
/// quoted source address and port become the backend's, as the backend
/// sent the reply; the ICMPv6 checksum is updated incrementally over all
/// three (the inner destination is in its pseudo header; the quoted L4
/// checksum stays). The cookie goes on as a request's (`NEW_FLOW` never
/// set), and the tunnel is re-originated to the backend's node.
///
/// A BPF subprogram (`inline(never)`), so that none of this grows
/// `terminate_v6`'s frame or the TCP and UDP paths; it reads the outer
/// headers and the option again.
#[inline(never)]
fn relay_icmp6_error(ctx: &TcContext, pkt: Pkt, sc: &mut V6Scratch) -> i32 {
    match try_relay_icmp6_error(ctx, pkt, sc) {
        Ok(action) | Err(action) => action,
    }
}

#[inline(always)]
fn try_relay_icmp6_error(ctx: &TcContext, pkt: Pkt, sc: &mut V6Scratch) -> Result<i32, i32> {
    let malformed = |_| drop(DropReason::Malformed, pkt);
    let outer: Ipv4Hdr = ctx.load(IP_OFF).map_err(malformed)?;
    let (udp_off, opt_off, inner_off) = tunnel_offsets(&outer);
    let icmp_off = inner_off + IPV6_HDR_LEN;
    let opt: TalariaOpt = ctx.load(opt_off).map_err(malformed)?;
    if opt.flags & flags::REPLY != 0 {
        // The P4 parser reads no further.
        return Ok(V6_HANDOFF);
    }
    let quoted = parse_icmp6_error(ctx, icmp_off, sc).map_err(malformed)?;
    check_peer(pkt, outer.src)?;
    if !quoted {
        return Err(drop(DropReason::UnsupportedProtocol, pkt));
    }
    let udp: UdpHdr = ctx.load(udp_off).map_err(malformed)?;

    let spoof = || drop(DropReason::IcmpSpoof, pkt);
    if opt.flags & flags::COOKIE_VALID == 0 || sc.quoted.dst != sc.inner.src {
        return Err(spoof());
    }
    sc.service = ServiceV6Key {
        vip: sc.quoted.src,
        port: sc.quoted_ports[0],
        proto: sc.quoted.next_hdr,
        _pad: 0,
    };
    // SAFETY: plain value read.
    let svc = *unsafe { SWITCH_SERVICE_V6.get(&sc.service) }
        .ok_or_else(|| drop(DropReason::NoService, pkt))?;
    if svc.service_id != opt.service_id.get() {
        return Err(spoof());
    }
    count(&SWITCH_SERVICE_COUNTER, svc.service_id as u32, pkt.len);
    if !check_cookie(svc.service_id, &opt, pkt) {
        return Err(drop(DropReason::NoBackend, pkt));
    }
    let backend_id = opt.backend_id.get();
    // SAFETY: plain value read.
    let backend = match unsafe { SWITCH_BACKEND_V6.get(backend_id) } {
        Some(b) if b.node_ip != Be32([0; 4]) => b,
        _ => return Err(drop(DropReason::NoBackend, pkt)),
    };

    let quoted_off = icmp_off + ICMP_HDR_LEN;
    let check_off = icmp_off + ICMP_CHECK;
    for w in 0..4 {
        let new = word(&backend.ip, w);
        ctx.l4_csum_replace(
            check_off,
            word(&sc.inner.dst, w),
            new,
            BPF_F_PSEUDO_HDR as u64 | 4,
        )
        .map_err(malformed)?;
        ctx.l4_csum_replace(check_off, word(&sc.quoted.src, w), new, 4)
            .map_err(malformed)?;
    }
    ctx.l4_csum_replace(check_off, raw16(sc.quoted_ports[0]), raw16(backend.port), 2)
        .map_err(malformed)?;
    ctx.store(quoted_off + IP6_SRC, &backend.ip, 0)
        .map_err(malformed)?;
    ctx.store(quoted_off + IPV6_HDR_LEN, &backend.port, 0)
        .map_err(malformed)?;
    ctx.store(inner_off + IP6_DST, &backend.ip, 0)
        .map_err(malformed)?;
    write_cookie(ctx, pkt, opt_off, &opt, (svc.service_id, backend_id), false)?;
    reoriginate(ctx, pkt, &outer, udp_off, &udp, backend.node_ip)
}

/// [`check_reply`] for an IPv6 reply: its source VIP, port and protocol
/// are the cookie's service in `service_v6` (when it has ports: not an
/// ICMPv6 error), the cookie names a backend of that service, `sender` is
/// its node (`backend_v6`).
#[inline(always)]
fn check_reply_v6(pkt: Pkt, sender: Be32, sc: &mut V6Scratch, opt: &TalariaOpt) -> Result<(), i32> {
    let forged = || drop(DropReason::ForgedReply, pkt);
    let service_id = opt.service_id.get();
    let next_hdr = sc.inner.next_hdr;
    if next_hdr == IPPROTO_TCP || next_hdr == IPPROTO_UDP {
        sc.service = ServiceV6Key {
            vip: sc.inner.src,
            port: sc.ports[0],
            proto: next_hdr,
            _pad: 0,
        };
        // SAFETY: plain value reads.
        match unsafe { SWITCH_SERVICE_V6.get(&sc.service) } {
            Some(svc) if svc.service_id == service_id => {}
            _ => return Err(forged()),
        }
    }
    let backend_id = opt.backend_id.get();
    let ckey = ServiceScopedKey {
        service_id,
        _pad: 0,
        id: backend_id,
    };
    // SAFETY: plain value reads.
    if unsafe { SWITCH_COOKIE_CHECK.get(ckey) }.is_none() {
        return Err(forged());
    }
    match unsafe { SWITCH_BACKEND_V6.get(backend_id) } {
        Some(b) if b.node_ip == sender => Ok(()),
        _ => Err(forged()),
    }
}

/// [`load_balance`] for an IPv6 request: `service_v6`, cookie or bucket
/// (the 37-byte `FlowTuple6` hash), `backend_v6`; DNAT and cookie write.
/// Returns the backend's node.
#[inline(always)]
fn load_balance_v6(
    ctx: &TcContext,
    pkt: Pkt,
    sc: &mut V6Scratch,
    inner_off: usize,
    opt: &TalariaOpt,
    opt_off: usize,
) -> Result<Be32, i32> {
    sc.service = ServiceV6Key {
        vip: sc.inner.dst,
        port: sc.ports[1],
        proto: sc.inner.next_hdr,
        _pad: 0,
    };
    // SAFETY: plain value read.
    let svc = *unsafe { SWITCH_SERVICE_V6.get(&sc.service) }
        .ok_or_else(|| drop(DropReason::NoService, pkt))?;
    count(&SWITCH_SERVICE_COUNTER, svc.service_id as u32, pkt.len);
    let cookie_ok = check_cookie(svc.service_id, opt, pkt);
    let backend_id = if cookie_ok {
        opt.backend_id.get()
    } else {
        bucket_backend(&svc, flow_hash_v6(sc, svc.hash_mode), pkt)?
    };
    // SAFETY: plain value read.
    let backend = match unsafe { SWITCH_BACKEND_V6.get(backend_id) } {
        // No IPv6 endpoints without an agent: nowhere to strip to.
        Some(b) if b.node_ip != Be32([0; 4]) => b,
        _ => return Err(drop(DropReason::NoBackend, pkt)),
    };
    dnat_v6(ctx, pkt, inner_off, sc, backend)?;
    write_cookie(
        ctx,
        pkt,
        opt_off,
        opt,
        (svc.service_id, backend_id),
        !cookie_ok,
    )?;
    Ok(backend.node_ip)
}

/// [`dnat`] for the TCP or UDP packet whose IPv6 header is at `ip_off`:
/// the destination address and port, the L4 checksum (whose pseudo
/// header holds the whole address) updated incrementally; no header
/// checksum. A zero UDP checksum stays 0, as IPv4's.
#[inline(always)]
fn dnat_v6(
    ctx: &TcContext,
    pkt: Pkt,
    ip_off: usize,
    sc: &V6Scratch,
    backend: &BackendV6Value,
) -> Result<(), i32> {
    let malformed = |_| drop(DropReason::Malformed, pkt);
    let l4_off = ip_off + IPV6_HDR_LEN;
    let udp = sc.inner.next_hdr == IPPROTO_UDP;
    let (check_off, l4_flags) = if udp {
        (l4_off + UDP_CHECK, BPF_F_MARK_MANGLED_0 as u64)
    } else {
        (l4_off + TCP_CHECK, 0)
    };
    let l4_check: Be16 = ctx.load(check_off).map_err(malformed)?;
    let fix_l4 = !udp || l4_check.get() != 0;
    ctx.store(ip_off + IP6_DST, &backend.ip, 0)
        .map_err(malformed)?;
    if fix_l4 {
        let flags = l4_flags | BPF_F_PSEUDO_HDR as u64 | 4;
        for w in 0..4 {
            let (old, new) = (word(&sc.inner.dst, w), word(&backend.ip, w));
            ctx.l4_csum_replace(check_off, old, new, flags)
                .map_err(malformed)?;
        }
    }
    ctx.store(l4_off + 2, &backend.port, 0).map_err(malformed)?;
    if fix_l4 {
        ctx.l4_csum_replace(
            check_off,
            raw16(sc.ports[1]),
            raw16(backend.port),
            l4_flags | 2,
        )
        .map_err(malformed)?;
    }
    Ok(())
}

/// The bucket hash of an IPv6 flow: crc32 over `FlowTuple6`'s 37 bytes
/// (source, destination, next header, ports), or under `CLIENT_IP` over
/// the source alone (`FlowTuple6::client_ip_hash`), read from the scratch.
#[inline(always)]
fn flow_hash_v6(sc: &V6Scratch, mode: u8) -> u32 {
    let mut state = crc32_bytes(!0, &sc.inner.src);
    if mode == hash_mode::CLIENT_IP {
        return !state;
    }
    state = crc32_bytes(state, &sc.inner.dst);
    state = crc32_step(state, sc.inner.next_hdr);
    state = crc32_bytes(state, &sc.ports[0].0);
    state = crc32_bytes(state, &sc.ports[1].0);
    !state
}

/// crc32 steps over `bytes`.
#[inline(always)]
fn crc32_bytes(mut state: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        state = crc32_step(state, b);
    }
    state
}

/// Word `w` (0..4) of an IPv6 address as the checksum helpers take it
/// (memory order).
#[inline(always)]
fn word(addr: &[u8; 16], w: usize) -> u64 {
    let i = 4 * w;
    u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]) as u64
}

/// A request to a backend without an agent (node 0.0.0.0), already
/// DNATed, or a checked reply to a client outside the cluster (no
/// `pod_node`): the outer headers (from the MAC header to the inner IPv4
/// header) go, and the inner packet is routed plain, TTL checked and
/// decremented as any router's.
///
/// Decapsulation leaves `skb->encapsulation` and a UDP_TUNNEL gso type on
/// a GSO packet: harmless for TCP; UDP GSO never reaches the switch,
/// because the nodes segment it before their uplink (host-ebpf/README.md).
#[inline(always)]
fn strip_tunnel(ctx: &TcContext, pkt: Pkt, inner_off: usize) -> Result<i32, i32> {
    let malformed = |_| drop(DropReason::Malformed, pkt);
    let inner: Ipv4Hdr = ctx.load(inner_off).map_err(malformed)?;
    if inner.ttl <= 1 {
        return Err(drop(DropReason::TtlExpired, pkt));
    }
    let route = lookup_route(inner.dst, pkt)?;
    let room_flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_DECAP_L3_IPV4;
    let shrink = (inner_off - IP_OFF) as i32;
    ctx.adjust_room(-shrink, BPF_ADJ_ROOM_MAC, room_flags as u64)
        .map_err(malformed)?;
    let out = Pkt {
        len: ctx.len(),
        ..pkt
    };
    forward(ctx, out, &route, inner.ttl, inner.ttl - 1, inner.proto)
}

/// A reply's claims, checked against the tables a request uses: it comes
/// from the VIP and port of the service its cookie names (when it has
/// ports: not an ICMP error or a later fragment), the cookie names a
/// backend of that service, and `sender` is that backend's node.
#[inline(always)]
fn check_reply(
    ctx: &TcContext,
    pkt: Pkt,
    sender: Be32,
    inner: &Ipv4Hdr,
    inner_off: usize,
    opt: &TalariaOpt,
) -> Result<(), i32> {
    let forged = || drop(DropReason::ForgedReply, pkt);
    let service_id = opt.service_id.get();
    let has_ports = inner.version_ihl == 0x45
        && inner.frag.get() & IP_FRAG_OFFSET == 0
        && (inner.proto == IPPROTO_TCP || inner.proto == IPPROTO_UDP);
    if has_ports {
        let [src_port, _]: [Be16; 2] = ctx
            .load(inner_off + IPV4_HDR_LEN)
            .map_err(|_| drop(DropReason::Malformed, pkt))?;
        let skey = ServiceKey {
            vip: inner.src,
            port: src_port,
            proto: inner.proto,
            _pad: 0,
        };
        // SAFETY: plain value read.
        match unsafe { SWITCH_SERVICE_V4.get(skey) } {
            Some(svc) if svc.service_id == service_id => {}
            _ => return Err(forged()),
        }
    }
    let backend_id = opt.backend_id.get();
    let ckey = ServiceScopedKey {
        service_id,
        _pad: 0,
        id: backend_id,
    };
    // SAFETY: plain value reads.
    if unsafe { SWITCH_COOKIE_CHECK.get(ckey) }.is_none() {
        return Err(forged());
    }
    let backend = lookup_backend(backend_id, pkt).ok_or_else(forged)?;
    if backend.node_ip != sender {
        return Err(forged());
    }
    Ok(())
}

/// `backend`, with its direct counter: the backend of `backend_id`.
#[inline(always)]
fn lookup_backend(backend_id: u32, pkt: Pkt) -> Option<BackendValue> {
    // SAFETY: plain value read.
    let backend = *unsafe { SWITCH_BACKEND.get(backend_id) }?;
    if let Some(cell) = SWITCH_BACKEND_COUNTER.get_ptr_mut(backend_id) {
        // SAFETY: this CPU's cell of a per-CPU map.
        unsafe {
            (*cell).packets += 1;
            (*cell).bytes += pkt.len as u64;
        }
    }
    Some(backend)
}

/// Client to service: service, cookie or bucket, backend; DNAT and cookie
/// write. Returns the backend's node.
#[inline(always)]
fn load_balance(
    ctx: &TcContext,
    pkt: Pkt,
    inner: &Ipv4Hdr,
    inner_off: usize,
    opt: &TalariaOpt,
    opt_off: usize,
    quote: Option<Quote>,
) -> Result<Be32, i32> {
    if inner.header_len() != IPV4_HDR_LEN {
        return Err(drop(DropReason::IpOptions, pkt));
    }
    let frag = inner.frag.get();
    if frag & IP_FRAG_OFFSET != 0 {
        return balance_later_fragment(ctx, pkt, inner, inner_off, opt, opt_off);
    }
    if frag & IP_MF != 0 && inner.proto != IPPROTO_TCP && inner.proto != IPPROTO_UDP {
        return Err(drop(DropReason::Fragment, pkt));
    }
    let l4_off = inner_off + IPV4_HDR_LEN;
    if let Some(quote) = quote {
        return relay_icmp_error(ctx, pkt, inner, inner_off, opt, opt_off, &quote);
    }
    if inner.proto != IPPROTO_TCP && inner.proto != IPPROTO_UDP {
        return Err(drop(DropReason::UnsupportedProtocol, pkt));
    }
    let [src_port, dst_port]: [Be16; 2] = ctx
        .load(l4_off)
        .map_err(|_| drop(DropReason::Malformed, pkt))?;

    let svc = lookup_service(inner.dst, dst_port, inner.proto, pkt)?;
    count(&SWITCH_SERVICE_COUNTER, svc.service_id as u32, pkt.len);

    let cookie_ok = check_cookie(svc.service_id, opt, pkt);
    let backend_id = if cookie_ok {
        opt.backend_id.get()
    } else {
        hashed_backend(&svc, inner, [src_port, dst_port], pkt)?
    };
    let backend =
        lookup_backend(backend_id, pkt).ok_or_else(|| drop(DropReason::NoBackend, pkt))?;
    dnat(ctx, pkt, inner_off, inner, dst_port, &backend)?;

    write_cookie(
        ctx,
        pkt,
        opt_off,
        opt,
        (svc.service_id, backend_id),
        !cookie_ok,
    )?;
    Ok(backend.node_ip)
}

/// DNAT of the TCP or UDP packet whose IPv4 header `ip` (no options) is
/// at `ip_off`, destination port `dst_port`, to `backend`: destination
/// address (IPv4 checksum, L4 pseudo-header) and port (L4 checksum), the
/// checksums updated incrementally. A zero UDP checksum means "none" and
/// stays 0; one that comes out zero is sent as 0xFFFF.
#[inline(always)]
fn dnat(
    ctx: &TcContext,
    pkt: Pkt,
    ip_off: usize,
    ip: &Ipv4Hdr,
    dst_port: Be16,
    backend: &BackendValue,
) -> Result<(), i32> {
    let malformed = |_| drop(DropReason::Malformed, pkt);
    let l4_off = ip_off + IPV4_HDR_LEN;
    let (check_off, l4_flags) = if ip.proto == IPPROTO_UDP {
        (l4_off + UDP_CHECK, BPF_F_MARK_MANGLED_0 as u64)
    } else {
        (l4_off + TCP_CHECK, 0)
    };
    let l4_check: Be16 = ctx.load(check_off).map_err(malformed)?;
    let fix_l4 = ip.proto == IPPROTO_TCP || l4_check.get() != 0;
    ctx.store(ip_off + IP_DST, &backend.ip, 0)
        .map_err(malformed)?;
    ctx.l3_csum_replace(ip_off + IP_CHECK, raw32(ip.dst), raw32(backend.ip), 4)
        .map_err(malformed)?;
    if fix_l4 {
        let flags = l4_flags | BPF_F_PSEUDO_HDR as u64 | 4;
        ctx.l4_csum_replace(check_off, raw32(ip.dst), raw32(backend.ip), flags)
            .map_err(malformed)?;
    }
    ctx.store(l4_off + 2, &backend.port, 0).map_err(malformed)?;
    if fix_l4 {
        ctx.l4_csum_replace(
            check_off,
            raw16(dst_port),
            raw16(backend.port),
            l4_flags | 2,
        )
        .map_err(malformed)?;
    }
    Ok(())
}

/// `service_v4` without a verdict: the service of (`vip`, `port`, `proto`).
#[inline(always)]
fn find_service(vip: Be32, port: Be16, proto: u8) -> Option<ServiceValue> {
    let key = ServiceKey {
        vip,
        port,
        proto,
        _pad: 0,
    };
    // SAFETY: plain value read.
    unsafe { SWITCH_SERVICE_V4.get(key) }.copied()
}

/// The bucket hash: `lb_bucket` at the bucket of the flow (`inner`'s
/// addresses and protocol, `ports`) names the backend.
#[inline(always)]
fn hashed_backend(
    svc: &ServiceValue,
    inner: &Ipv4Hdr,
    [src_port, dst_port]: [Be16; 2],
    pkt: Pkt,
) -> Result<u32, i32> {
    let tuple = FlowTuple {
        src: inner.src,
        dst: inner.dst,
        proto: inner.proto,
        src_port,
        dst_port,
    };
    let hash = if svc.hash_mode == hash_mode::CLIENT_IP {
        tuple.client_ip_hash()
    } else {
        tuple.hash()
    };
    bucket_backend(svc, hash, pkt)
}

/// `lb_bucket` at the bucket of `hash`: the backend id (`no_bucket`
/// without one).
#[inline(always)]
fn bucket_backend(svc: &ServiceValue, hash: u32, pkt: Pkt) -> Result<u32, i32> {
    let bkey = ServiceScopedKey {
        service_id: svc.service_id,
        _pad: 0,
        id: bucket_of(hash, svc.bucket_mask) as u32,
    };
    // SAFETY: plain value read.
    Ok(unsafe { SWITCH_LB_BUCKET.get(bkey) }
        .ok_or_else(|| drop(DropReason::NoBucket, pkt))?
        .backend_id)
}

/// The cookie travels on to the backend's node, which hands it back to the
/// client in the reply; a later fragment's ports give way to it. `NEW_FLOW`
/// when `hashed`: the client holds no valid cookie (its backend's node may
/// tell it one). `EXTERNAL` goes: only the switch says a request is an
/// outside client's.
#[inline(always)]
fn write_cookie(
    ctx: &TcContext,
    pkt: Pkt,
    opt_off: usize,
    opt: &TalariaOpt,
    (service_id, backend_id): (u16, u32),
    hashed: bool,
) -> Result<(), i32> {
    let fresh = if hashed { flags::NEW_FLOW } else { 0 };
    let cookie = Cookie {
        flags: (opt.flags & !(flags::FRAG_PORTS | flags::EXTERNAL)) | flags::COOKIE_VALID | fresh,
        service_id: Be16::new(service_id),
        backend_id: Be32::new(backend_id),
    };
    ctx.store(opt_off + OPT_FLAGS, &cookie, BPF_F_RECOMPUTE_CSUM as u64)
        .map_err(|_| drop(DropReason::Malformed, pkt))
}

/// A later fragment of a request: no ports. With `FRAG_PORTS` its option
/// carries its datagram's ports, looked up and hashed as its first
/// fragment was; with a cookie it goes where the cookie says, or nowhere
/// if the cookie is stale (`no_backend`: it cannot be hashed). Only the
/// inner destination address is rewritten (the datagram's L4 checksum is
/// in its first fragment). Returns the backend's node.
#[inline(always)]
fn balance_later_fragment(
    ctx: &TcContext,
    pkt: Pkt,
    inner: &Ipv4Hdr,
    inner_off: usize,
    opt: &TalariaOpt,
    opt_off: usize,
) -> Result<Be32, i32> {
    let (service_id, backend_id, hashed) = match opt.flags
        & (flags::FRAG_PORTS | flags::COOKIE_VALID)
    {
        flags::FRAG_PORTS => {
            let ports = opt.backend_id.get();
            let (src_port, dst_port) = (Be16::new((ports >> 16) as u16), Be16::new(ports as u16));
            let svc = lookup_service(inner.dst, dst_port, inner.proto, pkt)?;
            count(&SWITCH_SERVICE_COUNTER, svc.service_id as u32, pkt.len);
            event(LbEvent::NewFlow, pkt);
            let backend_id = hashed_backend(&svc, inner, [src_port, dst_port], pkt)?;
            (svc.service_id, backend_id, true)
        }
        flags::COOKIE_VALID => {
            let service_id = opt.service_id.get();
            if !check_cookie(service_id, opt, pkt) {
                return Err(drop(DropReason::NoBackend, pkt));
            }
            (service_id, opt.backend_id.get(), false)
        }
        _ => return Err(drop(DropReason::Fragment, pkt)),
    };
    let backend =
        lookup_backend(backend_id, pkt).ok_or_else(|| drop(DropReason::NoBackend, pkt))?;
    let malformed = |_| drop(DropReason::Malformed, pkt);
    ctx.store(inner_off + IP_DST, &backend.ip, 0)
        .map_err(malformed)?;
    ctx.l3_csum_replace(inner_off + IP_CHECK, raw32(inner.dst), raw32(backend.ip), 4)
        .map_err(malformed)?;
    write_cookie(ctx, pkt, opt_off, opt, (service_id, backend_id), hashed)?;
    Ok(backend.node_ip)
}

/// `service_v4`: a miss is `no_service`.
#[inline(always)]
fn lookup_service(vip: Be32, port: Be16, proto: u8, pkt: Pkt) -> Result<ServiceValue, i32> {
    find_service(vip, port, proto).ok_or_else(|| drop(DropReason::NoService, pkt))
}

/// A request's cookie against `cookie_check`, counted as a load-balancer
/// event: whether it names a backend of the service.
#[inline(always)]
fn check_cookie(service_id: u16, opt: &TalariaOpt, pkt: Pkt) -> bool {
    if opt.flags & flags::COOKIE_VALID == 0 {
        event(LbEvent::NewFlow, pkt);
        return false;
    }
    let key = ServiceScopedKey {
        service_id,
        _pad: 0,
        id: opt.backend_id.get(),
    };
    // SAFETY: plain value read.
    let ok = unsafe { SWITCH_COOKIE_CHECK.get(key) }.is_some();
    event(
        if ok {
            LbEvent::CookieHit
        } else {
            LbEvent::CookieStale
        },
        pkt,
    );
    ok
}

/// A client's ICMP error about a reply it got: to the backend its cookie
/// names, which must be a live backend of the service the quoted reply
/// came from; the client must be the quoted packet's destination. The
/// inner destination and the quoted source become the backend's own
/// address and port, as the backend sent the reply (IPv4 header, quoted
/// header and ICMP checksums updated; the quoted L4 checksum stays).
/// Returns the backend's node.
#[inline(always)]
fn relay_icmp_error(
    ctx: &TcContext,
    pkt: Pkt,
    inner: &Ipv4Hdr,
    inner_off: usize,
    opt: &TalariaOpt,
    opt_off: usize,
    quote: &Quote,
) -> Result<Be32, i32> {
    let spoof = || drop(DropReason::IcmpSpoof, pkt);
    if opt.flags & flags::COOKIE_VALID == 0 || quote.ip.dst != inner.src {
        return Err(spoof());
    }
    let svc = lookup_service(quote.ip.src, quote.ports[0], quote.ip.proto, pkt)?;
    if svc.service_id != opt.service_id.get() {
        return Err(spoof());
    }
    count(&SWITCH_SERVICE_COUNTER, svc.service_id as u32, pkt.len);
    // A gone backend has no one to tell, and an error cannot be hashed.
    if !check_cookie(svc.service_id, opt, pkt) {
        return Err(drop(DropReason::NoBackend, pkt));
    }
    let backend = lookup_backend(opt.backend_id.get(), pkt)
        .ok_or_else(|| drop(DropReason::NoBackend, pkt))?;

    let malformed = |_| drop(DropReason::Malformed, pkt);
    let icmp_off = inner_off + IPV4_HDR_LEN;
    let quoted_off = icmp_off + ICMP_HDR_LEN;
    let icmp_check_off = icmp_off + ICMP_CHECK;
    ctx.l3_csum_replace(
        quoted_off + IP_CHECK,
        raw32(quote.ip.src),
        raw32(backend.ip),
        4,
    )
    .map_err(malformed)?;
    let quoted_check: Be16 = ctx.load(quoted_off + IP_CHECK).map_err(malformed)?;
    for (old, new, size) in [
        (raw32(quote.ip.src), raw32(backend.ip), 4),
        (raw16(quote.ports[0]), raw16(backend.port), 2),
        (raw16(quote.ip.check), raw16(quoted_check), 2),
    ] {
        ctx.l4_csum_replace(icmp_check_off, old, new, size)
            .map_err(malformed)?;
    }
    ctx.store(quoted_off + IP_SRC, &backend.ip, 0)
        .map_err(malformed)?;
    ctx.store(quoted_off + IPV4_HDR_LEN, &backend.port, 0)
        .map_err(malformed)?;
    ctx.store(inner_off + IP_DST, &backend.ip, 0)
        .map_err(malformed)?;
    ctx.l3_csum_replace(inner_off + IP_CHECK, raw32(inner.dst), raw32(backend.ip), 4)
        .map_err(malformed)?;
    let cookie = (svc.service_id, opt.backend_id.get());
    write_cookie(ctx, pkt, opt_off, opt, cookie, false)?;
    Ok(backend.node_ip)
}

/// The bytes of the Talaria option from `flags` on.
#[repr(C)]
struct Cookie {
    flags: u8,
    service_id: Be16,
    backend_id: Be32,
}

/// `ipv4_route`: a miss or the `drop` action is `no_route`.
#[inline(always)]
fn lookup_route(dst: Be32, pkt: Pkt) -> Result<RouteValue, i32> {
    match SWITCH_IPV4_ROUTE.get(Key::new(32, dst)) {
        Some(r) if r.port != ROUTE_DROP_PORT => Ok(*r),
        _ => Err(drop(DropReason::NoRoute, pkt)),
    }
}

/// The `forward` action: the TTL goes from `old_ttl` to `new_ttl` (header
/// checksum fixed), MACs rewritten, out of the route's port.
#[inline(always)]
fn forward(
    ctx: &TcContext,
    pkt: Pkt,
    route: &RouteValue,
    old_ttl: u8,
    new_ttl: u8,
    proto: u8,
) -> Result<i32, i32> {
    let ifindex = port_ifindex(route)?;
    let err = |_| drop(DropReason::Malformed, pkt);
    let old = u16::from_be_bytes([old_ttl, proto]);
    let new = u16::from_be_bytes([new_ttl, proto]);
    ctx.store(IP_OFF + IP_TTL, &new_ttl, 0).map_err(err)?;
    ctx.l3_csum_replace(IP_OFF + IP_CHECK, old.to_be() as u64, new.to_be() as u64, 2)
        .map_err(err)?;
    redirect(ctx, pkt, route, ifindex)
}

/// The interface behind a route's port. A port with no interface behind
/// it loses the packet uncounted, as bmv2 does.
#[inline(always)]
fn port_ifindex(route: &RouteValue) -> Result<u32, i32> {
    match SWITCH_PORT_IFINDEX.get(route.port) {
        Some(&i) if i != 0 => Ok(i),
        _ => Err(SHOT),
    }
}

/// MACs rewritten, out of the route's port (to `ifindex`).
#[inline(always)]
fn redirect(ctx: &TcContext, pkt: Pkt, route: &RouteValue, ifindex: u32) -> Result<i32, i32> {
    let macs = Macs {
        dst: route.dst_mac,
        src: route.src_mac,
    };
    ctx.store(0, &macs, 0)
        .map_err(|_| drop(DropReason::Malformed, pkt))?;
    count(&SWITCH_PORT_TX, route.port, pkt.len);
    // SAFETY: helper call with a plain ifindex.
    Ok(unsafe { bpf_redirect(ifindex, 0) } as i32)
}

#[repr(C)]
struct Macs {
    dst: [u8; 6],
    src: [u8; 6],
}

/// Writes `new` over the outer IPv4 address at `off` (was `old`) and fixes
/// the outer header checksum.
#[inline(always)]
fn set_addr(ctx: &TcContext, off: usize, old: Be32, new: Be32) -> Result<(), i64> {
    if old == new {
        return Ok(());
    }
    ctx.store(off, &new, 0)?;
    ctx.l3_csum_replace(IP_OFF + IP_CHECK, raw32(old), raw32(new), 4)
}

#[inline(always)]
fn fold(mut sum: u32) -> u32 {
    sum = (sum & 0xffff) + (sum >> 16);
    (sum & 0xffff) + (sum >> 16)
}

/// A network-order value as the checksum helpers take it (memory order).
#[inline(always)]
fn raw32(v: Be32) -> u64 {
    u32::from_ne_bytes(v.0) as u64
}

#[inline(always)]
fn raw16(v: Be16) -> u64 {
    u16::from_ne_bytes(v.0) as u64
}

#[inline(always)]
fn count(map: &PerCpuArray<PacketBytes>, index: u32, len: u32) {
    if let Some(cell) = map.get_ptr_mut(index) {
        // SAFETY: this CPU's cell of a per-CPU array.
        unsafe {
            (*cell).packets += 1;
            (*cell).bytes += len as u64;
        }
    }
}

#[inline(always)]
fn event(e: LbEvent, pkt: Pkt) {
    count(&SWITCH_LB_EVENT_COUNTER, e as u32, pkt.len);
}

/// Counts a drop (per reason, and per ingress port and reason) and returns
/// the verdict.
#[inline(always)]
fn drop(reason: DropReason, pkt: Pkt) -> i32 {
    count(&SWITCH_DROP_COUNTER, reason.code() as u32, pkt.len);
    count(
        &SWITCH_PORT_DROP,
        pkt.port * DROP_REASON_COUNT + reason.code() as u32,
        pkt.len,
    );
    SHOT
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The kernel checks only GPL compatibility; no GPL-only helper is used.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
