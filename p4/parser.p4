/*
 * talaria: parser, checksum controls and deparser.
 *
 * The parser never drops. Whatever it rejects it records in
 * standard_metadata.parser_error (v1model hands the packet to the ingress
 * anyway), and TalariaIngress turns the error into a drop reason, because
 * only the ingress knows whether the packet is addressed to this switch: a
 * Geneve packet in transit is routed like any other IPv4 packet, however
 * odd its Geneve part.
 *
 * Limitation: P4 parses exactly one Geneve option. A talaria packet carries
 * exactly one, ours, so the parser accepts a packet only if its option area
 * is our option and nothing else (opt_len == 3 words). A first option that
 * is not ours ends parsing: critical -> unknown_critical_option, otherwise
 * missing_option (the non-critical option could be skipped, but talaria
 * never sends one, so nothing valid is lost).
 */

#ifndef _TALARIA_PARSER_P4_
#define _TALARIA_PARSER_P4_

/* Parser errors beyond core.p4's, one per drop reason the parser can tell. */
error {
    /* Outer IPv4 with version != 4 or ihl < 5: malformed. */
    BadIpv4Header,
    /* IPv6 with version != 6: malformed. */
    BadIpv6Header,
    /* Inner IPv4 with version != 4 or ihl < 5: malformed if terminated. */
    BadInnerIpv4Header,
    /* Inner IPv6 (Geneve protocol 0x86DD) with version != 6: malformed if
     * terminated. */
    BadInnerIpv6Header,
    GeneveVersion,
    GeneveProtocol,
    OptionLength,
    UnknownCriticalOption,
    TalariaVersion,
    MissingOption
}

parser TalariaParser(packet_in packet,
                     out headers_t hdr,
                     inout metadata_t meta,
                     inout standard_metadata_t standard_metadata) {

    state start {
        transition parse_ethernet;
    }

    state parse_ethernet {
        packet.extract(hdr.ethernet);
        transition select(hdr.ethernet.ether_type) {
            ETHERTYPE_IPV4: parse_ipv4;
            ETHERTYPE_IPV6: parse_ipv6;
            default: accept;
        }
    }

    /* IPv6 is routed on its destination alone: nothing past the fixed
     * header is read. */
    state parse_ipv6 {
        packet.extract(hdr.ipv6);
        verify(hdr.ipv6.version == 6, error.BadIpv6Header);
        transition accept;
    }

    state parse_ipv4 {
        packet.extract(hdr.ipv4);
        verify(hdr.ipv4.version == 4 && hdr.ipv4.ihl >= 5, error.BadIpv4Header);
        transition select(hdr.ipv4.ihl) {
            5: parse_ipv4_payload;
            default: parse_ipv4_options;
        }
    }

    state parse_ipv4_options {
        packet.extract(hdr.ipv4_options, (bit<32>)(hdr.ipv4.ihl - 5) * 32);
        transition parse_ipv4_payload;
    }

    /* Only first fragments carry an L4 header. A plain TCP header goes
     * where an inner one would: with no tunnel headers valid the deparser
     * emits it right after the IPv4 header, and an endpoint reply that is
     * tunnelled keeps it there. */
    state parse_ipv4_payload {
        transition select(hdr.ipv4.frag_offset, hdr.ipv4.protocol) {
            (13w0, IP_PROTO_UDP): parse_udp;
            (13w0, IP_PROTO_TCP): parse_plain_tcp;
            default: accept;
        }
    }

    /* A plain TCP segment, then its timestamp option if the options start
     * with NOP, NOP, timestamp (the layout every common stack uses past the
     * handshake; anything else is payload, as today): an external client's
     * TSecr carries its timestamp cookie. A header too short for the 12
     * bytes (the frame ends inside the options it claims) leaves
     * tcp_timestamp invalid and parser_error PacketTooShort, which the
     * ingress ignores for a plain packet: it goes on as one without the
     * option. A tunnel's inner TCP is not read past its fixed header. */
    state parse_plain_tcp {
        packet.extract(hdr.inner_tcp);
        meta.l4_src_port = hdr.inner_tcp.src_port;
        meta.l4_dst_port = hdr.inner_tcp.dst_port;
        /* data_offset >= 8 words: its top bit (a mask, which every
         * target's parser has, where a range may not be). */
        transition select(hdr.inner_tcp.data_offset) {
            TCP_DATA_OFFSET_TIMESTAMP &&& TCP_DATA_OFFSET_TIMESTAMP: parse_tcp_options;
            default: accept;
        }
    }

    state parse_tcp_options {
        transition select(packet.lookahead<bit<32>>()) {
            TCP_OPT_NOP_NOP_TIMESTAMP: parse_tcp_timestamp;
            default: accept;
        }
    }

    state parse_tcp_timestamp {
        packet.extract(hdr.tcp_timestamp);
        transition accept;
    }

    state parse_udp {
        packet.extract(hdr.udp);
        transition select(hdr.udp.dst_port) {
            GENEVE_UDP_PORT: parse_geneve;
            default: accept;
        }
    }

    state parse_geneve {
        packet.extract(hdr.geneve);
        verify(hdr.geneve.version == 0, error.GeneveVersion);
        verify(hdr.geneve.protocol_type == GENEVE_PROTO_IPV4
                   || hdr.geneve.protocol_type == GENEVE_PROTO_IPV6,
               error.GeneveProtocol);
        transition select(hdr.geneve.opt_len) {
            0: no_talaria_option;
            default: parse_option;
        }
    }

    /* Peek at the first option's class and type. */
    state parse_option {
        transition select(packet.lookahead<bit<24>>()) {
            TALARIA_OPT_CLASS_TYPE: parse_talaria;
            default: parse_foreign_option;
        }
    }

    state parse_foreign_option {
        packet.extract(hdr.foreign_opt);
        transition select(hdr.foreign_opt.opt_type) {
            OPT_TYPE_CRITICAL &&& OPT_TYPE_CRITICAL: unknown_critical_option;
            default: no_talaria_option;
        }
    }

    state unknown_critical_option {
        verify(false, error.UnknownCriticalOption);
        transition accept;
    }

    state no_talaria_option {
        verify(false, error.MissingOption);
        transition accept;
    }

    state parse_talaria {
        packet.extract(hdr.talaria);
        verify(hdr.talaria.length == TALARIA_OPT_WORDS
                   && hdr.geneve.opt_len == TALARIA_GENEVE_OPT_LEN,
               error.OptionLength);
        verify(hdr.talaria.version == TALARIA_VERSION, error.TalariaVersion);
        transition select(hdr.geneve.protocol_type) {
            GENEVE_PROTO_IPV6: parse_inner_ipv6;
            default: parse_inner_ipv4;
        }
    }

    /* An IPv6 Service's packet. Its ports are read only when TCP or UDP
     * follows the fixed header directly: an extension header (a Fragment
     * header included) or any other next header stays unparsed, and the
     * ingress drops it (unsupported_protocol), but for ICMPv6. In a request
     * ICMPv6 is parsed (a client's error about a reply, relayed to the
     * backend); in a reply (a backend's error about its flow) it goes on
     * unread: the reply path reads nothing of it, and a reply whose ICMPv6
     * message is cut short stays a reply rather than a parser error. */
    state parse_inner_ipv6 {
        packet.extract(hdr.inner_ipv6);
        verify(hdr.inner_ipv6.version == 6, error.BadInnerIpv6Header);
        transition select(hdr.inner_ipv6.next_hdr, hdr.talaria.flags) {
            (IP_PROTO_TCP, _): parse_inner_tcp;
            (IP_PROTO_UDP, _): parse_inner_udp;
            (IP_PROTO_ICMPV6, 0 &&& TALARIA_FLAG_REPLY): parse_inner_icmp6;
            default: accept;
        }
    }

    /* A client's ICMPv6 error quotes the reply it is about: the ICMPv6
     * header (icmp_t's layout), then for an error (type below 128) the
     * quoted IPv6 header and, when TCP or UDP follows it directly, its
     * ports. An informational message (an echo request) or a quote with
     * extension headers stays unparsed past what was read, and the ingress
     * drops it (unsupported_protocol). As for IPv4's quote, each header
     * must be whole: a frame that ends inside one is a parser error
     * (malformed). */
    state parse_inner_icmp6 {
        packet.extract(hdr.inner_icmp);
        transition select(hdr.inner_icmp.icmp_type) {
            0 &&& ICMPV6_INFO_BIT: parse_quoted_ipv6;
            default: accept;
        }
    }

    state parse_quoted_ipv6 {
        packet.extract(hdr.quoted_ipv6);
        transition select(hdr.quoted_ipv6.next_hdr) {
            IP_PROTO_TCP: parse_quoted_ports;
            IP_PROTO_UDP: parse_quoted_ports;
            default: accept;
        }
    }

    state parse_inner_ipv4 {
        packet.extract(hdr.inner_ipv4);
        verify(hdr.inner_ipv4.version == 4 && hdr.inner_ipv4.ihl >= 5,
               error.BadInnerIpv4Header);
        /* The ports sit at a fixed offset only in a first (or only)
         * fragment without options; an ICMP error's quote only in an
         * unfragmented one. Anything else stays unparsed: the ingress
         * takes a later request fragment's ports from its option, drops
         * the rest on the load-balanced path (ip_options, fragment,
         * unsupported_protocol) and passes it on the reply path. */
        transition select(hdr.inner_ipv4.ihl, hdr.inner_ipv4.flags,
                          hdr.inner_ipv4.frag_offset, hdr.inner_ipv4.protocol) {
            (4w5, _, 13w0, IP_PROTO_TCP): parse_inner_tcp;
            (4w5, _, 13w0, IP_PROTO_UDP): parse_inner_udp;
            (4w5, 3w0 &&& IPV4_FLAG_MF, 13w0, IP_PROTO_ICMP): parse_inner_icmp;
            default: accept;
        }
    }

    /* An ICMP error quotes the packet it is about: its IPv4 header and,
     * when that has ports at a fixed offset, its ports. */
    state parse_inner_icmp {
        packet.extract(hdr.inner_icmp);
        transition select(hdr.inner_icmp.icmp_type) {
            ICMP_DEST_UNREACH: parse_quoted_ipv4;
            ICMP_TIME_EXCEEDED: parse_quoted_ipv4;
            default: accept;
        }
    }

    state parse_quoted_ipv4 {
        packet.extract(hdr.quoted_ipv4);
        transition select(hdr.quoted_ipv4.ihl, hdr.quoted_ipv4.frag_offset,
                          hdr.quoted_ipv4.protocol) {
            (4w5, 13w0, IP_PROTO_TCP): parse_quoted_ports;
            (4w5, 13w0, IP_PROTO_UDP): parse_quoted_ports;
            default: accept;
        }
    }

    state parse_quoted_ports {
        packet.extract(hdr.quoted_ports);
        transition accept;
    }

    state parse_inner_tcp {
        packet.extract(hdr.inner_tcp);
        meta.l4_src_port = hdr.inner_tcp.src_port;
        meta.l4_dst_port = hdr.inner_tcp.dst_port;
        transition accept;
    }

    state parse_inner_udp {
        packet.extract(hdr.inner_udp);
        meta.l4_src_port = hdr.inner_udp.src_port;
        meta.l4_dst_port = hdr.inner_udp.dst_port;
        transition accept;
    }
}

/* Outer IPv4 header checksum; a failure is a malformed drop. bmv2 allows
 * only calls here, no if statements, hence one call with and one without
 * options. */
control TalariaVerifyChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply {
        verify_checksum(hdr.ipv4.isValid() && !hdr.ipv4_options.isValid(),
            { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv,
              hdr.ipv4.total_len, hdr.ipv4.identification, hdr.ipv4.flags,
              hdr.ipv4.frag_offset, hdr.ipv4.ttl, hdr.ipv4.protocol,
              hdr.ipv4.src_addr, hdr.ipv4.dst_addr },
            hdr.ipv4.hdr_checksum, HashAlgorithm.csum16);
        verify_checksum(hdr.ipv4.isValid() && hdr.ipv4_options.isValid(),
            { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv,
              hdr.ipv4.total_len, hdr.ipv4.identification, hdr.ipv4.flags,
              hdr.ipv4.frag_offset, hdr.ipv4.ttl, hdr.ipv4.protocol,
              hdr.ipv4.src_addr, hdr.ipv4.dst_addr, hdr.ipv4_options.options },
            hdr.ipv4.hdr_checksum, HashAlgorithm.csum16);
    }
}

/* Recomputes the outer IPv4 checksum (TTL, and addresses on re-originated
 * or built tunnels). The outer header was verified on the way in, so
 * recomputing is the same as updating. The inner checksums are updated
 * incrementally in the ingress (Csum16Update in talaria.p4): recomputing
 * them here would repair a packet that arrived damaged. That includes a
 * stripped tunnel's (meta.strip), whose IPv4 header is the inner one. */
control TalariaComputeChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply {
        update_checksum(hdr.ipv4.isValid() && !hdr.ipv4_options.isValid()
                            && meta.strip == 0,
            { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv,
              hdr.ipv4.total_len, hdr.ipv4.identification, hdr.ipv4.flags,
              hdr.ipv4.frag_offset, hdr.ipv4.ttl, hdr.ipv4.protocol,
              hdr.ipv4.src_addr, hdr.ipv4.dst_addr },
            hdr.ipv4.hdr_checksum, HashAlgorithm.csum16);
        update_checksum(hdr.ipv4.isValid() && hdr.ipv4_options.isValid(),
            { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv,
              hdr.ipv4.total_len, hdr.ipv4.identification, hdr.ipv4.flags,
              hdr.ipv4.frag_offset, hdr.ipv4.ttl, hdr.ipv4.protocol,
              hdr.ipv4.src_addr, hdr.ipv4.dst_addr, hdr.ipv4_options.options },
            hdr.ipv4.hdr_checksum, HashAlgorithm.csum16);
    }
}

control TalariaDeparser(packet_out packet, in headers_t hdr) {
    apply {
        packet.emit(hdr.ethernet);
        packet.emit(hdr.ipv4);
        packet.emit(hdr.ipv4_options);
        packet.emit(hdr.ipv6);
        packet.emit(hdr.udp);
        packet.emit(hdr.geneve);
        packet.emit(hdr.foreign_opt);
        packet.emit(hdr.talaria);
        packet.emit(hdr.inner_ipv4);
        packet.emit(hdr.inner_ipv6);
        packet.emit(hdr.inner_tcp);
        packet.emit(hdr.tcp_timestamp);
        packet.emit(hdr.inner_udp);
        /* An ICMP error's quote: IPv4's or IPv6's header (never both),
         * then its ports. */
        packet.emit(hdr.inner_icmp);
        packet.emit(hdr.quoted_ipv4);
        packet.emit(hdr.quoted_ipv6);
        packet.emit(hdr.quoted_ports);
    }
}

#endif  /* _TALARIA_PARSER_P4_ */
