/*
 * talaria: constants shared by the parser and the controls.
 *
 * Every value here that another component also knows is checked by
 * tests/tests/p4_consistency.rs against its Rust twin: the drop reasons and
 * load-balancer events against common/src/drop.rs, the wire constants
 * against common/src/wire.rs, the hash modes against common/src/hash.rs and
 * the table and counter sizes against common/src/p4.rs.
 */

#ifndef _TALARIA_CONSTANTS_P4_
#define _TALARIA_CONSTANTS_P4_

/* ------------------------------------------------------------ protocols -- */

const bit<16> ETHERTYPE_IPV4 = 0x0800;
const bit<16> ETHERTYPE_IPV6 = 0x86DD;
const bit<8>  IP_PROTO_ICMP  = 1;
const bit<8>  IP_PROTO_TCP   = 6;
const bit<8>  IP_PROTO_UDP   = 17;
/* An inner IPv6 packet may be ICMPv6: a backend's error about its flow (a
 * reply), or a client's error about a reply it got (a request, relayed to
 * the backend). */
const bit<8>  IP_PROTO_ICMPV6 = 58;
/* ICMPv6 types with this bit clear (below 128) are errors, which quote the
 * packet they are about; the rest are informational (RFC 4443, 2.1): the
 * boundary `ICMPV6_INFO_MIN` in common/src/net.rs. */
const bit<8>  ICMPV6_INFO_BIT = 0x80;
/* The ICMP errors that quote a packet of a flow. */
const bit<8>  ICMP_DEST_UNREACH  = 3;
const bit<8>  ICMP_TIME_EXCEEDED = 11;
/* TCP `flags` bits the switch reads (RFC 9293). */
const bit<8>  TCP_FLAG_SYN   = 0x02;
const bit<8>  TCP_FLAG_ACK   = 0x10;
/* The first four option bytes of a segment whose options are timestamps
 * only, or timestamps first: NOP, NOP, kind 8, length 10 (RFC 7323,
 * appendix A). Must match `NOP_NOP_TIMESTAMP` in common/src/ts_cookie.rs. */
const bit<32> TCP_OPT_NOP_NOP_TIMESTAMP = 0x0101080a;
/* TCP data offset (words) from which the options can hold NOP, NOP and a
 * timestamp option: 20 + 12 bytes. Also the top bit of the 4-bit field, so
 * the parser tests `>= 8` as a mask. */
const bit<4>  TCP_DATA_OFFSET_TIMESTAMP = 8;
/* IPv4 `flags` field (3 bits: reserved, DF, MF): more fragments follow. */
const bit<3>  IPV4_FLAG_MF   = 0x1;
/* TTL of the outer header when the switch re-originates a tunnel. */
const bit<8>  TUNNEL_TTL     = 64;

/* ----------------------------------------------------------------- wire -- */
/* Must match common/src/wire.rs. */

const bit<16> GENEVE_UDP_PORT   = 6081;
const bit<16> GENEVE_PROTO_IPV4 = 0x0800;
/* An IPv6 inner packet (an IPv6 Service's) over the same IPv4 underlay. */
const bit<16> GENEVE_PROTO_IPV6 = 0x86DD;
/* Geneve option type bit: "drop the packet if you do not know me". */
const bit<8>  OPT_TYPE_CRITICAL = 0x80;
const bit<16> TALARIA_OPT_CLASS = 0xFF7A;
/* 0x21 with the critical bit set. */
const bit<8>  TALARIA_OPT_TYPE  = 0xA1;
/* Option class and type as the parser peeks them. */
const bit<24> TALARIA_OPT_CLASS_TYPE = TALARIA_OPT_CLASS ++ TALARIA_OPT_TYPE;
/* Talaria option data length in 4-byte words (the option's length field). */
const bit<5>  TALARIA_OPT_WORDS = 2;
/* Geneve option area of a talaria packet in words: our option alone (4-byte
 * option header + 2 data words). The parser reads exactly one option. */
const bit<6>  TALARIA_GENEVE_OPT_LEN = 3;
const bit<8>  TALARIA_VERSION   = 1;

/* Talaria option flags. NEW_FLOW: no valid cookie chose the backend (the
 * switch sets it when its hash did). */
const bit<8>  TALARIA_FLAG_NEW_FLOW     = 0x01;
const bit<8>  TALARIA_FLAG_REPLY        = 0x02;
const bit<8>  TALARIA_FLAG_COOKIE_VALID = 0x04;
/* A later request fragment without a cookie: backend_id holds the
 * datagram's ports (src << 16 | dst). */
const bit<8>  TALARIA_FLAG_FRAG_PORTS   = 0x08;
/* A reply the switch tunnelled for an endpoint that runs no agent. */
const bit<8>  TALARIA_FLAG_ENDPOINT     = 0x10;
/* A one-way UDP flow's cookie from its backend's node to its client's
 * (with REPLY | COOKIE_VALID): forwarded as any reply, but never stripped
 * to a client outside the cluster (no_client_node). */
const bit<8>  TALARIA_FLAG_NOTIFY       = 0x20;
/* A request of a client outside the cluster, which the switch tunnelled:
 * the backend's node stamps the timestamp cookie into its replies
 * (common/src/ts_cookie.rs). Only the switch may set it: it clears it on
 * every request a node tunnels to it. */
const bit<8>  TALARIA_FLAG_EXTERNAL     = 0x40;
/* Geneve base header byte 1 of a talaria packet: the C bit (our option is
 * critical). */
const bit<1>  GENEVE_CRITICAL   = 1;
/* IPv4 `flags` of an outer header the switch builds: DF, as nodes send. */
const bit<3>  IPV4_FLAG_DF      = 0x2;
/* Bytes a tunnel adds in front of the inner IPv4 header, outer IPv4
 * excluded (UDP 8 + Geneve 8 + option 12), and with it. */
const bit<16> TUNNEL_UDP_OVERHEAD  = 28;
const bit<16> TUNNEL_OVERHEAD      = 48;
/* The outer UDP source port of a tunnel the switch builds: the flow hash
 * folded into 49152-65535, for ECMP entropy. */
const bit<16> TUNNEL_SPORT_BASE = 0xc000;

/* ----------------------------------------------------------- hash modes -- */
/* The `hash_mode` parameter of `set_service`; must match common/src/hash.rs. */

/* CRC32 over the inner 5-tuple: every mode but CLIENT_IP, so the program
 * never compares against it. */
@noWarn("unused")
const bit<8> HASH_MODE_FIVE_TUPLE = 0;
/* CRC32 over the inner source address alone: sessionAffinity ClientIP. */
const bit<8> HASH_MODE_CLIENT_IP  = 1;

/* --------------------------------------------------------- drop reasons -- */
/* Index of TalariaIngress.drop_counter. Must match `DropReason` in
 * common/src/drop.rs: one code space for the switch and the hosts, so the
 * host-only reasons (pod_encap .. unknown_pod) are listed too. */

const bit<8> DROP_MALFORMED               = 1;
const bit<8> DROP_GENEVE_VERSION          = 2;
const bit<8> DROP_GENEVE_PROTOCOL         = 3;
const bit<8> DROP_OPTION_LENGTH           = 4;
const bit<8> DROP_UNKNOWN_CRITICAL_OPTION = 5;
const bit<8> DROP_TALARIA_VERSION         = 6;
const bit<8> DROP_MISSING_OPTION          = 7;
const bit<8> DROP_NO_SERVICE              = 8;
const bit<8> DROP_NO_BUCKET               = 9;
const bit<8> DROP_NO_BACKEND              = 10;
const bit<8> DROP_NO_ROUTE                = 11;
const bit<8> DROP_TTL_EXPIRED             = 12;
const bit<8> DROP_IP_OPTIONS              = 13;
const bit<8> DROP_FRAGMENT                = 14;
const bit<8> DROP_UNSUPPORTED_PROTOCOL    = 15;
const bit<8> DROP_NO_CLIENT_NODE          = 16;
/* Host-only reasons: listed so that the code space has one definition, never
 * counted by the switch. */
@noWarn("unused")
const bit<8> DROP_POD_ENCAP               = 17;
@noWarn("unused")
const bit<8> DROP_POD_SPOOF               = 18;
@noWarn("unused")
const bit<8> DROP_TUNNEL_SOURCE           = 19;
@noWarn("unused")
const bit<8> DROP_UNKNOWN_POD             = 20;
/* An ICMP error whose quoted packet is not a reply of the flow its sender
 * and cookie name (the switch checks what it relays to a backend). */
const bit<8> DROP_ICMP_SPOOF              = 21;
@noWarn("unused")
const bit<8> DROP_PORT_EXHAUSTED          = 22;
@noWarn("unused")
const bit<8> DROP_FLOW_LIMIT              = 23;
/* The switch's trust boundary. */
/* A tunnel to the switch from an address that is not a node on the port it
 * came in on (tunnel_peer). */
const bit<8> DROP_TUNNEL_PEER             = 24;
/* A packet from a port whose source is an address of this switch
 * (spoofed_source). */
const bit<8> DROP_SPOOFED_SOURCE          = 25;
/* A REPLY that its sender's node, service or cookie does not vouch for. */
const bit<8> DROP_FORGED_REPLY            = 26;
/* Host-only: a plain packet from the uplink with a Service address as its
 * source. */
@noWarn("unused")
const bit<8> DROP_SERVICE_SOURCE          = 27;
/* Host-only: a new flow to an internalTrafficPolicy Local port from a node
 * with no local endpoint. */
@noWarn("unused")
const bit<8> DROP_NO_LOCAL_ENDPOINT       = 28;
/* An external client's request whose backend's node has no tunnel_source
 * entry: no address that node accepts tunnels from. */
const bit<8> DROP_NO_TUNNEL_SOURCE        = 29;

/* Size of drop_counter; every code is below it. */
const bit<32> DROP_REASON_COUNT = 32;

/* ------------------------------------------------------------ lb events -- */
/* Index of TalariaIngress.lb_event_counter. Must match `LbEvent` in
 * common/src/drop.rs. */

const bit<8> LB_EVENT_NEW_FLOW     = 0;
const bit<8> LB_EVENT_COOKIE_HIT   = 1;
const bit<8> LB_EVENT_COOKIE_STALE = 2;
const bit<8> LB_EVENT_REPLY        = 3;
/* An external client's echoed timestamp cookie named a backend of its
 * Service (ts_cookie and cookie_check): the request goes there. */
const bit<8> LB_EVENT_TS_COOKIE_HIT  = 4;
/* An external client's segment echoed a timestamp, but no ts_cookie entry
 * of its Service named a backend cookie_check vouches for: hashed. */
const bit<8> LB_EVENT_TS_COOKIE_MISS = 5;

const bit<32> LB_EVENT_COUNT = 6;

/* ---------------------------------------------------------------- sizes -- */
/* Table and counter sizes. Must match common/src/p4.rs, which the
 * switch-agent uses to size its BPF maps. */

/* Routes of one rack: node /32s, pod CIDRs, uplinks and a default. */
const bit<32> IPV4_ROUTE_SIZE   = 1024;
/* IPv6 routes of one rack: node and pod prefixes, uplinks, a default. */
const bit<32> IPV6_ROUTE_SIZE   = 1024;
/* Tunnel addresses of this switch; one is enough, a few allow renumbering. */
const bit<32> SWITCH_ADDR_SIZE  = 16;
/* (ClusterIP, port, protocol) triples: one per Service port, up to the
 * 16-bit service id space. */
const bit<32> SERVICE_V4_SIZE   = 65536;
/* Live (service, backend) pairs, including backends in quarantine whose
 * cookies must keep working until the quarantine ends. */
const bit<32> COOKIE_CHECK_SIZE = 262144;
/* (service, timestamp cookie) -> backend: one entry per (service, backend)
 * pair and cookie key, as cookie_check, whose size it shares. */
const bit<32> TS_COOKIE_SIZE    = 262144;
/* Buckets of all services together: 10k Services of two ports (TCP and
 * UDP) and 10 backends at 64 buckets each (1.28M), with headroom. */
const bit<32> LB_BUCKET_SIZE    = 2097152;
/* Backend ids in use, including quarantined ones. */
const bit<32> BACKEND_SIZE      = 262144;
/* Pod CIDRs: one per node. */
const bit<32> POD_NODE_SIZE     = 1024;
/* (port, node address) pairs: the nodes of a rack, a few addresses each. */
const bit<32> TUNNEL_PEER_SIZE  = 1024;
/* Source addresses no port may use: this switch's own, and any the
 * operator adds. */
const bit<32> SPOOFED_SOURCE_SIZE = 64;
/* (port, endpoint address, port, protocol) of endpoints that run no agent:
 * a few thousand Service ports' worth. */
const bit<32> ENDPOINT_REPLY_SIZE = 16384;
/* The switch address each node accepts tunnels from: one per node. */
const bit<32> TUNNEL_SOURCE_SIZE = 1024;
/* service_v6: (IPv6 ClusterIP, port, protocol) triples, one per IPv6
 * Service port, as many as service_v4 holds: an IPv6-only cluster has as
 * many Service ports as an IPv4 one (their service ids share the 16-bit
 * space with IPv4's). */
const bit<32> SERVICE_V6_SIZE   = 65536;
/* IPv6 backend ids in use (one id space with backend), quarantined ones
 * included. */
const bit<32> BACKEND_V6_SIZE   = 65536;
/* IPv6 pod CIDRs: one per node. */
const bit<32> POD_NODE_V6_SIZE  = 1024;
/* Service ids are 16 bits, so the per-service counter covers the whole id
 * space and needs no bounds check. */
const bit<32> SERVICE_COUNTER_SIZE = 65536;

#endif  /* _TALARIA_CONSTANTS_P4_ */
