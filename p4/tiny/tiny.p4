/*
 * tiny.p4: the smallest v1model program that exercises talaria's P4Info
 * loader (talaria-p4rt). One table with an exact and an LPM key, two actions
 * (one with parameters), one indirect counter, all with @id annotations.
 *
 * tiny.p4info.txtpb beside it is its P4Info, kept by hand in the shape
 * `p4test --p4runtime-files tiny.p4info.txtpb tiny.p4` writes.
 *
 * p4c ORs the object kind's 8-bit prefix into an @id that has none, so
 * @id(1) on a table becomes 0x02000001, on an action 0x01000001, on a
 * counter 0x12000001. Match field and parameter @ids are used as written.
 */
#include <core.p4>
#include <v1model.p4>

const bit<32> ROUTE_TABLE_SIZE = 1024; // entries; a test program, no target limit
const bit<32> PORT_COUNT = 512;        // every value of v1model's bit<9> port

const bit<16> ETHERTYPE_IPV4 = 0x0800;

header ethernet_t {
    bit<48> dst_addr;
    bit<48> src_addr;
    bit<16> ether_type;
}

header ipv4_t {
    bit<4>  version;
    bit<4>  ihl;
    bit<8>  diffserv;
    bit<16> total_len;
    bit<16> identification;
    bit<3>  flags;
    bit<13> frag_offset;
    bit<8>  ttl;
    bit<8>  protocol;
    bit<16> hdr_checksum;
    bit<32> src_addr;
    bit<32> dst_addr;
}

struct headers_t {
    ethernet_t ethernet;
    ipv4_t     ipv4;
}

struct metadata_t {}

parser TinyParser(packet_in packet,
                  out headers_t hdr,
                  inout metadata_t meta,
                  inout standard_metadata_t standard_metadata) {
    state start {
        packet.extract(hdr.ethernet);
        transition select(hdr.ethernet.ether_type) {
            ETHERTYPE_IPV4: parse_ipv4;
            default: accept;
        }
    }

    state parse_ipv4 {
        packet.extract(hdr.ipv4);
        transition accept;
    }
}

control TinyVerifyChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply {}
}

control TinyIngress(inout headers_t hdr,
                    inout metadata_t meta,
                    inout standard_metadata_t standard_metadata) {
    // Packets and bytes sent out of each egress port by `forward`.
    @id(1) counter(PORT_COUNT, CounterType.packets_and_bytes) route_hits;

    @id(1) action forward(bit<9> port, bit<48> dst_mac) {
        standard_metadata.egress_spec = port;
        hdr.ethernet.dst_addr = dst_mac;
        hdr.ipv4.ttl = hdr.ipv4.ttl - 1;
        route_hits.count((bit<32>) port);
    }

    // For blackhole routes.
    @id(2) action drop() {
        mark_to_drop(standard_metadata);
    }

    @id(1) table route {
        key = {
            standard_metadata.ingress_port: exact;
            hdr.ipv4.dst_addr: lpm;
        }
        actions = {
            forward;
            drop;
            @defaultonly NoAction;
        }
        // A miss leaves the packet dropped: see apply.
        const default_action = NoAction();
        size = ROUTE_TABLE_SIZE;
    }

    apply {
        // Drop unless a route forwards: only `forward` sets an egress port.
        mark_to_drop(standard_metadata);
        if (hdr.ipv4.isValid()) {
            route.apply();
        }
    }
}

control TinyEgress(inout headers_t hdr,
                   inout metadata_t meta,
                   inout standard_metadata_t standard_metadata) {
    apply {}
}

control TinyComputeChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply {
        update_checksum(
            hdr.ipv4.isValid(),
            { hdr.ipv4.version,
              hdr.ipv4.ihl,
              hdr.ipv4.diffserv,
              hdr.ipv4.total_len,
              hdr.ipv4.identification,
              hdr.ipv4.flags,
              hdr.ipv4.frag_offset,
              hdr.ipv4.ttl,
              hdr.ipv4.protocol,
              hdr.ipv4.src_addr,
              hdr.ipv4.dst_addr },
            hdr.ipv4.hdr_checksum,
            HashAlgorithm.csum16);
    }
}

control TinyDeparser(packet_out packet, in headers_t hdr) {
    apply {
        packet.emit(hdr.ethernet);
        packet.emit(hdr.ipv4);
    }
}

V1Switch(TinyParser(),
         TinyVerifyChecksum(),
         TinyIngress(),
         TinyEgress(),
         TinyComputeChecksum(),
         TinyDeparser()) main;
