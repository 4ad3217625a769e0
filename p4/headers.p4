/*
 * talaria: packet headers and per-packet metadata.
 *
 * Header fields are in network byte order, as P4 extracts them; table keys
 * and action parameters built from them are big-endian byte strings in
 * P4Runtime (the controller sends an IPv4 address as its 4 bytes in
 * network order, a port as 2 bytes, and so on).
 */

#ifndef _TALARIA_HEADERS_P4_
#define _TALARIA_HEADERS_P4_

typedef bit<48> mac_addr_t;
typedef bit<32> ipv4_addr_t;
typedef bit<128> ipv6_addr_t;
/* v1model egress_spec width. */
typedef bit<9>  port_t;
typedef bit<16> l4_port_t;
typedef bit<16> service_id_t;
typedef bit<32> backend_id_t;
/* A bucket index: the flow hash masked with the service's bucket_mask. */
typedef bit<16> bucket_t;
typedef bit<8>  hash_mode_t;

header ethernet_t {
    mac_addr_t dst_addr;
    mac_addr_t src_addr;
    bit<16>    ether_type;
}

/* IPv4 without options: the outer header talaria emits and the inner
 * header it load-balances never have any. */
header ipv4_t {
    bit<4>      version;
    bit<4>      ihl;
    bit<8>      diffserv;
    bit<16>     total_len;
    bit<16>     identification;
    bit<3>      flags;
    bit<13>     frag_offset;
    bit<8>      ttl;
    bit<8>      protocol;
    bit<16>     hdr_checksum;
    ipv4_addr_t src_addr;
    ipv4_addr_t dst_addr;
}

/* IPv6: a plain packet's (routed only), or a tunnel's inner one (an IPv6
 * Service's request or reply; the tunnel itself is IPv4). */
header ipv6_t {
    bit<4>      version;
    bit<8>      traffic_class;
    bit<20>     flow_label;
    bit<16>     payload_len;
    bit<8>      next_hdr;
    bit<8>      hop_limit;
    ipv6_addr_t src_addr;
    ipv6_addr_t dst_addr;
}

/* Options of an outer (routed) IPv4 header, (ihl - 5) words. Parsed only so
 * that the header checksum stays right when the TTL changes. */
header ipv4_options_t {
    varbit<320> options;
}

header udp_t {
    l4_port_t src_port;
    l4_port_t dst_port;
    bit<16>   length;
    bit<16>   checksum;
}

/* TCP without options; options, if any, are payload to the parser (the
 * checksum is updated incrementally, so it needs nothing past the header). */
header tcp_t {
    l4_port_t src_port;
    l4_port_t dst_port;
    bit<32>   seq_no;
    bit<32>   ack_no;
    bit<4>    data_offset;
    bit<4>    res;
    bit<8>    flags;
    bit<16>   window;
    bit<16>   checksum;
    bit<16>   urgent_ptr;
}

/* The first 12 option bytes of a TCP segment whose options are timestamps
 * only, or timestamps first (RFC 7323, appendix A): NOP, NOP, kind 8,
 * length 10, then TSval and TSecr. Extracted from a plain packet only, for
 * TSecr: an external client echoes in it the timestamp cookie its
 * backend's node stamped into the low half of TSval (common/src/ts_cookie.rs).
 * Read, never written. */
header tcp_timestamp_t {
    /* TCP_OPT_NOP_NOP_TIMESTAMP. */
    bit<32> lead;
    bit<32> tsval;
    bit<32> tsecr;
}

/* An ICMP or ICMPv6 error: type, code, checksum and the 4 bytes before the
 * packet it quotes (the two share this layout: RFC 792, RFC 4443). */
header icmp_t {
    bit<8>  icmp_type;
    bit<8>  code;
    bit<16> checksum;
    bit<32> rest;
}

/* The ports of the TCP or UDP header an ICMP or ICMPv6 error quotes (RFC
 * 792 quotes at least the first 8 bytes of it; RFC 4443 as much as fits in
 * 1280 bytes). */
header l4_ports_t {
    l4_port_t src_port;
    l4_port_t dst_port;
}

/* Geneve base header (RFC 8926). Must match `GeneveHdr` in
 * common/src/wire.rs. */
header geneve_t {
    bit<2>  version;
    /* Length of the option area in 4-byte words. */
    bit<6>  opt_len;
    bit<1>  oam;
    bit<1>  critical;
    bit<6>  reserved;
    bit<16> protocol_type;
    bit<24> vni;
    bit<8>  reserved2;
}

/* The header of a Geneve option that is not ours. Extracted only to read
 * its critical bit (the top bit of opt_type). */
header geneve_opt_t {
    bit<16> opt_class;
    bit<8>  opt_type;
    bit<3>  reserved;
    /* Data length in 4-byte words. */
    bit<5>  length;
}

/* The Talaria option, its 4-byte option header included. Must match
 * `TalariaOpt` in common/src/wire.rs. */
header talaria_opt_t {
    bit<16>      opt_class;
    /* TALARIA_OPT_TYPE: the critical bit and type 0x21. */
    bit<8>       opt_type;
    bit<3>       reserved;
    /* Data length in 4-byte words: TALARIA_OPT_WORDS. */
    bit<5>       length;
    bit<8>       version;
    bit<8>       flags;
    service_id_t service_id;
    /* The cookie; meaningful with TALARIA_FLAG_COOKIE_VALID. */
    backend_id_t backend_id;
}

struct headers_t {
    ethernet_t     ethernet;
    ipv4_t         ipv4;
    ipv4_options_t ipv4_options;
    ipv6_t         ipv6;
    udp_t          udp;
    geneve_t       geneve;
    /* Valid only when the first Geneve option is not ours. */
    geneve_opt_t   foreign_opt;
    talaria_opt_t  talaria;
    ipv4_t         inner_ipv4;
    /* A tunnel's inner IPv6 packet (Geneve protocol 0x86DD), instead of
     * inner_ipv4: an IPv6 Service's, balanced and checked as IPv4's. */
    ipv6_t         inner_ipv6;
    tcp_t          inner_tcp;
    /* A plain TCP segment's leading timestamp option. */
    tcp_timestamp_t tcp_timestamp;
    udp_t          inner_udp;
    /* An inner ICMP error and the packet it is about; for an inner IPv6
     * request, a client's ICMPv6 error and the IPv6 reply it quotes
     * (quoted_ipv6 instead of quoted_ipv4). */
    icmp_t         inner_icmp;
    ipv4_t         quoted_ipv4;
    ipv6_t         quoted_ipv6;
    l4_ports_t     quoted_ports;
}

struct metadata_t {
    /* A DROP_* code, or 0 while the packet lives. */
    bit<8>       drop_reason;
    /* 1: the outer destination is one of this switch's tunnel addresses. */
    bit<1>       terminate;
    /* spoofed_source's key: the source of what the switch passes on, the
     * inner one of a tunnel it terminates and parsed, else the outer. */
    ipv4_addr_t  checked_src;
    /* 1: the packet's cookie passed cookie_check. */
    bit<1>       cookie_ok;
    /* cookie_check's backend: a tunnel's cookie (hdr.talaria.backend_id),
     * or the backend ts_cookie named for an external request. */
    backend_id_t cookie_backend_id;
    /* The outer source on the way out: the tunnel address the packet came
     * to, or for a tunnel built around a plain packet, tunnel_source's. */
    ipv4_addr_t  switch_ip;
    /* Inner L4 ports (TCP or UDP), set by the parser. */
    l4_port_t    l4_src_port;
    l4_port_t    l4_dst_port;
    /* 1: a REPLY (backend to client), which is checked, not balanced. */
    bit<1>       reply;
    /* 1: a client's ICMP or ICMPv6 error about a reply, relayed to the
     * backend. */
    bit<1>       icmp_relay;
    /* 1: a later request fragment that goes where its cookie says. */
    bit<1>       cookie_fragment;
    /* service_v4's key: the VIP, port and protocol a request goes to, or
     * that a reply (or the reply an ICMP error quotes) comes from. */
    ipv4_addr_t  service_addr;
    /* service_v6's VIP, for an inner IPv6 packet (port and protocol as
     * for service_v4). */
    ipv6_addr_t  service_addr_v6;
    l4_port_t    service_port;
    bit<8>       service_proto;
    /* From service_v4 (a reply's: the cookie's until checked). */
    service_id_t service_id;
    bucket_t     bucket_mask;
    hash_mode_t  hash_mode;
    /* crc32 of the flow, then its bucket. */
    bit<32>      flow_hash;
    bucket_t     bucket;
    /* From cookie_check or lb_bucket. */
    backend_id_t backend_id;
    /* From backend. */
    ipv4_addr_t  backend_ip;
    /* From backend_v6, for an inner IPv6 packet. */
    ipv6_addr_t  backend_ip_v6;
    l4_port_t    backend_port;
    /* The node the packet is tunnelled to: the backend's, or for a reply the
     * client's (pod_node); for a reply first the backend's, which must be
     * the sender. */
    ipv4_addr_t  node_ip;
    /* 1: the packet leaves without its tunnel, its (DNATed) inner packet
     * routed plain: a request to a backend without an agent (node_ip
     * 0.0.0.0), tunnelled or external, or a reply to a client outside the
     * cluster (pod_node miss). */
    bit<1>       strip;
    /* 1: a plain packet that endpoint_reply, pod_node and tunnel_source
     * all matched: it leaves tunnelled to the client's node. */
    bit<1>       endpoint;
    /* 1: a plain TCP/UDP packet to a Service address (service_v4 hit): an
     * external client's request, balanced like a node's new flow unless
     * its timestamp cookie names its backend. */
    bit<1>       external;
    /* 1: an external request that echoes a timestamp (the option first,
     * ACK, no SYN): ts_cookie is looked up with the low half of its TSecr,
     * ts_cookie_value. */
    bit<1>       ts_echo;
    bit<16>      ts_cookie_value;
    /* 1: ts_cookie named a backend (meta.cookie_backend_id), which
     * cookie_check must still vouch for. */
    bit<1>       ts_cookie_hit;
    /* 1: inner_ipv4 is a copy of a plain packet's header (and inner_udp
     * holds its UDP header), to be dropped again if the packet stays
     * plain. */
    bit<1>       inner_from_plain;
    /* endpoint_reply's key: the plain packet's source port. */
    l4_port_t    endpoint_port;
    /* The option of a tunnel the switch builds around a plain packet
     * (endpoint reply, external request). */
    bit<8>       tunnel_flags;
    service_id_t tunnel_service_id;
    backend_id_t tunnel_backend_id;
}

#endif  /* _TALARIA_HEADERS_P4_ */
