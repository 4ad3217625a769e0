/*
 * talaria: Kubernetes Service load balancing in the top-of-rack switch.
 *
 * P4_16 for v1model (bmv2 simple_switch). docs/design.md walks a packet
 * through this program; common/src/p4.rs carries the names, ids and sizes
 * of every table, action and counter below, p4/talaria.p4info.txtpb is the
 * P4Info p4c emits for it, and tests/tests/p4_consistency.rs checks the
 * three against each other.
 *
 * Ids: every table, action and counter carries an explicit @id with its
 * P4Runtime type prefix already in place (0x01 action, 0x02 table,
 * 0x12 counter, 0x13 direct counter). p4c keeps a prefixed @id as written
 * (it ORs the prefix into an unprefixed one and rejects a wrong one), so
 * the ids are stable whatever the names, and readable in the P4Info.
 *
 * Build:
 *   p4c-bm2-ss --arch v1model --p4runtime-files talaria.p4info.txtpb \
 *       -o talaria.json talaria.p4
 */

#include <core.p4>
#include <v1model.p4>

#include "constants.p4"
#include "headers.p4"
#include "parser.p4"

/* Incremental update of a ones'-complement checksum that covers a 32-bit
 * address and a 16-bit port which changed (RFC 1624, eqn. 3:
 * HC' = ~(~HC + ~m + m')); equal old and new ports change nothing. The
 * inner checksums are updated this way after DNAT, as a hardware target
 * does and as switch-agent does: a checksum that was wrong on arrival stays
 * wrong by the same amount, so the receiver still sees the damage, where a
 * full recomputation would vouch for a corrupted packet. A control rather
 * than a function: tests/src/p4src.rs reads controls, not functions. */
control Csum16Update(inout bit<16> csum,
                     in bit<32> old_addr, in bit<32> new_addr,
                     in bit<16> old_port, in bit<16> new_port) {
    apply {
        bit<32> sum = (bit<32>)(~csum)
                    + (bit<32>)(~(old_addr[31:16])) + (bit<32>)(~(old_addr[15:0]))
                    + (bit<32>)(new_addr[31:16]) + (bit<32>)(new_addr[15:0])
                    + (bit<32>)(~old_port) + (bit<32>)new_port;
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        csum = ~(sum[15:0]);
    }
}

/* Csum16Update for a 128-bit address: an inner IPv6 packet's TCP or UDP
 * checksum after DNAT (IPv6 has no header checksum; the L4 pseudo header
 * holds both addresses whole). */
control Csum16Update128(inout bit<16> csum,
                        in bit<128> old_addr, in bit<128> new_addr,
                        in bit<16> old_port, in bit<16> new_port) {
    apply {
        bit<32> sum = (bit<32>)(~csum)
                    + (bit<32>)(~(old_addr[127:112]))
                    + (bit<32>)(~(old_addr[111:96]))
                    + (bit<32>)(~(old_addr[95:80]))
                    + (bit<32>)(~(old_addr[79:64]))
                    + (bit<32>)(~(old_addr[63:48]))
                    + (bit<32>)(~(old_addr[47:32]))
                    + (bit<32>)(~(old_addr[31:16]))
                    + (bit<32>)(~(old_addr[15:0]))
                    + (bit<32>)(new_addr[127:112])
                    + (bit<32>)(new_addr[111:96])
                    + (bit<32>)(new_addr[95:80])
                    + (bit<32>)(new_addr[79:64])
                    + (bit<32>)(new_addr[63:48])
                    + (bit<32>)(new_addr[47:32])
                    + (bit<32>)(new_addr[31:16])
                    + (bit<32>)(new_addr[15:0])
                    + (bit<32>)(~old_port) + (bit<32>)new_port;
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        csum = ~(sum[15:0]);
    }
}

control TalariaIngress(inout headers_t hdr,
                       inout metadata_t meta,
                       inout standard_metadata_t standard_metadata) {

    /* Packets and bytes that reached a service (client to backend), indexed
     * by service id. */
    @id(0x12000001)
    counter(SERVICE_COUNTER_SIZE, CounterType.packets_and_bytes) service_counter;

    /* Dropped packets, indexed by DROP_* reason. */
    @id(0x12000002)
    counter(DROP_REASON_COUNT, CounterType.packets) drop_counter;

    /* Load-balancer events, indexed by LB_EVENT_*. */
    @id(0x12000003)
    counter(LB_EVENT_COUNT, CounterType.packets) lb_event_counter;

    /* Packets and bytes per backend entry. */
    @id(0x13000001)
    direct_counter(CounterType.packets_and_bytes) backend_counter;

    /* The inner checksums after DNAT. */
    Csum16Update() inner_ipv4_csum;
    Csum16Update() inner_tcp_csum;
    Csum16Update() inner_udp_csum;
    /* A relayed ICMP error's: the quoted IPv4 header, and the ICMP
     * checksum over the quoted source and port, then over the quoted
     * header checksum. */
    Csum16Update() quoted_ipv4_csum;
    Csum16Update() icmp_csum;
    Csum16Update() icmp_quoted_csum;
    /* A stripped tunnel's IPv4 header after the TTL decrement. */
    Csum16Update() strip_ttl_csum;
    /* An inner IPv6 packet's L4 checksum after DNAT. */
    Csum16Update128() inner_tcp6_csum;
    Csum16Update128() inner_udp6_csum;
    /* A relayed ICMPv6 error's checksum: over the inner destination (in
     * its pseudo header) and the quoted source port, then over the quoted
     * source address. */
    Csum16Update128() icmp6_csum;
    Csum16Update128() icmp6_quoted_csum;

    /* ---------------------------------------------------- ipv4_route -- */

    /* Send out of `port` to the next hop `dst_mac`. */
    @id(0x01000001)
    action forward(port_t port, mac_addr_t src_mac, mac_addr_t dst_mac) {
        standard_metadata.egress_spec = port;
        hdr.ethernet.src_addr = src_mac;
        hdr.ethernet.dst_addr = dst_mac;
        hdr.ipv4.ttl = hdr.ipv4.ttl - 1;
    }

    /* No route (the default), or a blackhole route. */
    @id(0x01000002)
    action drop() {
        meta.drop_reason = DROP_NO_ROUTE;
    }

    /* Routes every IPv4 packet the switch sends on: plain traffic, and
     * talaria packets after the outer header was re-originated. */
    @id(0x02000001)
    table ipv4_route {
        key = {
            hdr.ipv4.dst_addr : lpm @name("dst_addr");
        }
        actions = {
            forward;
            drop;
        }
        default_action = drop();
        size = IPV4_ROUTE_SIZE; // node /32s, pod CIDRs, uplinks, default
    }

    /* --------------------------------------------------- switch_addr -- */

    /* The packet is for this switch: it terminates the tunnel and
     * re-originates it from the address it came to. */
    @id(0x01000003)
    action terminate_tunnel() {
        meta.terminate = 1;
        meta.switch_ip = hdr.ipv4.dst_addr;
    }

    /* Geneve for someone else: route it unchanged. */
    @id(0x01000004)
    action transit() {
        meta.terminate = 0;
    }

    @id(0x02000002)
    table switch_addr {
        key = {
            hdr.ipv4.dst_addr : exact @name("dst_addr");
        }
        actions = {
            terminate_tunnel;
            @defaultonly transit;
        }
        default_action = transit();
        size = SWITCH_ADDR_SIZE; // this switch's tunnel addresses
    }

    /* ---------------------------------------------------- service_v4 -- */

    /* `bucket_mask` is the service's bucket count minus one (a power of
     * two); `hash_mode` is HASH_MODE_*. */
    @id(0x01000005)
    action set_service(service_id_t service_id, bucket_t bucket_mask,
                       hash_mode_t hash_mode) {
        meta.service_id = service_id;
        meta.bucket_mask = bucket_mask;
        meta.hash_mode = hash_mode;
    }

    @id(0x01000006)
    action service_miss() {
        meta.drop_reason = DROP_NO_SERVICE;
    }

    /* (ClusterIP or external address, port, protocol) -> service: the
     * destination of a request (tunnelled by a node, or an external
     * client's plain one), the source of a reply (meta.service_addr,
     * meta.service_port). */
    @id(0x02000003)
    table service_v4 {
        key = {
            meta.service_addr       : exact @name("vip");
            meta.service_port       : exact @name("port");
            meta.service_proto      : exact @name("proto");
        }
        actions = {
            set_service;
            @defaultonly service_miss;
        }
        default_action = service_miss();
        size = SERVICE_V4_SIZE; // one entry per Service port
    }

    /* -------------------------------------------------- cookie_check -- */

    /* The cookie names a backend of this service: use it. */
    @id(0x01000007)
    action cookie_valid() {
        meta.cookie_ok = 1;
        meta.backend_id = meta.cookie_backend_id;
    }

    /* The backend is gone or belongs to another service: the packet is
     * counted (LB_EVENT_COOKIE_STALE) and treated as a new flow. */
    @id(0x01000008)
    action cookie_stale() {
        meta.cookie_ok = 0;
    }

    /* The (service, backend) pairs a cookie may name. A host can forge a
     * cookie, but only to reach a backend of the service it asked for. The
     * backend is a tunnel's cookie, or the one ts_cookie found for an
     * external client's timestamp cookie (meta.cookie_backend_id: one key
     * for both, as bmv2 applies a table in one place only). */
    @id(0x02000004)
    table cookie_check {
        key = {
            meta.service_id        : exact @name("service_id");
            meta.cookie_backend_id : exact @name("backend_id");
        }
        actions = {
            cookie_valid;
            @defaultonly cookie_stale;
        }
        default_action = cookie_stale();
        size = COOKIE_CHECK_SIZE; // live and quarantined (service, backend) pairs
    }

    /* ----------------------------------------------------- lb_bucket -- */

    @id(0x01000009)
    action select_backend(backend_id_t backend_id) {
        meta.backend_id = backend_id;
    }

    @id(0x0100000A)
    action bucket_miss() {
        meta.drop_reason = DROP_NO_BUCKET;
    }

    /* The resilient bucket table: (service, bucket) -> backend. The
     * controller moves only the buckets of a backend that comes or goes. */
    @id(0x02000005)
    table lb_bucket {
        key = {
            meta.service_id : exact @name("service_id");
            meta.bucket     : exact @name("bucket");
        }
        actions = {
            select_backend;
            @defaultonly bucket_miss;
        }
        default_action = bucket_miss();
        size = LB_BUCKET_SIZE; // buckets of all services together
    }

    /* ------------------------------------------------------- backend -- */

    /* The backend pod's address and port, and the node that hosts it. */
    @id(0x0100000B)
    action set_backend(ipv4_addr_t backend_ip, l4_port_t backend_port,
                       ipv4_addr_t node_ip) {
        meta.backend_ip = backend_ip;
        meta.backend_port = backend_port;
        meta.node_ip = node_ip;
    }

    @id(0x0100000C)
    action backend_miss() {
        meta.drop_reason = DROP_NO_BACKEND;
    }

    @id(0x02000006)
    table backend {
        key = {
            meta.backend_id : exact @name("backend_id");
        }
        actions = {
            set_backend;
            @defaultonly backend_miss;
        }
        default_action = backend_miss();
        counters = backend_counter;
        size = BACKEND_SIZE; // backend ids in use, quarantined ones included
    }

    /* ------------------------------------------------------ pod_node -- */

    @id(0x0100000D)
    action set_client_node(ipv4_addr_t node_ip) {
        meta.node_ip = node_ip;
    }

    @id(0x0100000E)
    action pod_node_miss() {
        meta.drop_reason = DROP_NO_CLIENT_NODE;
    }

    /* Replies: the client pod's address -> its node, from the Nodes' pod
     * CIDRs. */
    @id(0x02000007)
    table pod_node {
        key = {
            hdr.inner_ipv4.dst_addr : lpm @name("pod_addr");
        }
        actions = {
            set_client_node;
            @defaultonly pod_node_miss;
        }
        default_action = pod_node_miss();
        size = POD_NODE_SIZE; // one pod CIDR per node
    }

    /* --------------------------------------------------- tunnel_peer -- */

    /* A node's tunnel, on the port the node is attached to. */
    @id(0x0100000F)
    action accept_tunnel() {
    }

    @id(0x01000010)
    action reject_tunnel() {
        meta.drop_reason = DROP_TUNNEL_PEER;
    }

    /* Who may send tunnels to the switch: (ingress port, outer source) of
     * every node, from the Nodes and the routes to them. Anyone else (an
     * outside host, a node's address on the wrong port) is dropped before
     * its packet is looked at. */
    @id(0x02000008)
    table tunnel_peer {
        key = {
            standard_metadata.ingress_port : exact @name("port");
            hdr.ipv4.src_addr              : exact @name("node_ip");
        }
        actions = {
            accept_tunnel;
            @defaultonly reject_tunnel;
        }
        default_action = reject_tunnel();
        size = TUNNEL_PEER_SIZE;
    }

    /* ------------------------------------------------ spoofed_source -- */

    @id(0x01000011)
    action drop_spoofed() {
        meta.drop_reason = DROP_SPOOFED_SOURCE;
    }

    @id(0x01000012)
    action source_ok() {
    }

    /* Source addresses no port may send from: the switch's own tunnel
     * addresses (a node trusts tunnels from them), and what else the
     * operator lists. A tunnel's inner source counts too: the switch may
     * pass the inner packet on plain (a backend without an agent), and
     * tunnel_peer vouches for the outer one. */
    @id(0x02000009)
    table spoofed_source {
        key = {
            meta.checked_src : exact @name("src_addr");
        }
        actions = {
            drop_spoofed;
            @defaultonly source_ok;
        }
        default_action = source_ok();
        size = SPOOFED_SOURCE_SIZE;
    }

    /* ------------------------------------------------ endpoint_reply -- */

    @id(0x01000013)
    action set_endpoint_reply(service_id_t service_id, backend_id_t backend_id) {
        meta.endpoint = 1;
        meta.tunnel_service_id = service_id;
        meta.tunnel_backend_id = backend_id;
    }

    /* Routed as any plain packet. */
    @id(0x01000014)
    action endpoint_reply_miss() {
        meta.endpoint = 0;
    }

    /* Replies of endpoints that run no agent (off-cluster addresses, node
     * addresses): (ingress port, source address, port, protocol) -> the
     * cookie the reply is tunnelled to the client's node with. The port
     * is part of the key so that only the link the endpoint sits behind
     * can speak for it. */
    @id(0x0200000A)
    table endpoint_reply {
        key = {
            standard_metadata.ingress_port : exact @name("port");
            hdr.ipv4.src_addr              : exact @name("endpoint_addr");
            meta.endpoint_port             : exact @name("endpoint_port");
            hdr.ipv4.protocol              : exact @name("proto");
        }
        actions = {
            set_endpoint_reply;
            @defaultonly endpoint_reply_miss;
        }
        default_action = endpoint_reply_miss();
        size = ENDPOINT_REPLY_SIZE; // Service ports of agentless endpoints
    }

    /* ------------------------------------------------- tunnel_source -- */

    /* The switch address `node_ip` accepts tunnels from. */
    @id(0x01000015)
    action set_tunnel_source(ipv4_addr_t switch_ip) {
        meta.switch_ip = switch_ip;
    }

    @id(0x01000016)
    action tunnel_source_miss() {
        meta.drop_reason = DROP_NO_TUNNEL_SOURCE;
    }

    /* A tunnel the switch builds around a plain packet (an endpoint's
     * reply, an external client's request) came to none of its addresses,
     * so its outer source comes from here: node -> the switch address that
     * node accepts tunnels from. */
    @id(0x0200000B)
    table tunnel_source {
        key = {
            meta.node_ip : exact @name("node_ip");
        }
        actions = {
            set_tunnel_source;
            @defaultonly tunnel_source_miss;
        }
        default_action = tunnel_source_miss();
        size = TUNNEL_SOURCE_SIZE; // one per node
    }

    /* ---------------------------------------------------- ipv6_route -- */

    /* Send an IPv6 packet out of `port` to the next hop `dst_mac`. */
    @id(0x01000017)
    action forward_v6(port_t port, mac_addr_t src_mac, mac_addr_t dst_mac) {
        standard_metadata.egress_spec = port;
        hdr.ethernet.src_addr = src_mac;
        hdr.ethernet.dst_addr = dst_mac;
        hdr.ipv6.hop_limit = hdr.ipv6.hop_limit - 1;
    }

    /* Routes every plain IPv6 packet: pod to pod, node to node. IPv6
     * Services come tunnelled over IPv4 (service_v6); a plain IPv6 packet
     * to a Service address is not balanced but routed as any other (no
     * route, or a blackhole one, drops it as no_route). */
    @id(0x0200000C)
    table ipv6_route {
        key = {
            hdr.ipv6.dst_addr : lpm @name("dst_addr");
        }
        actions = {
            forward_v6;
            drop;
        }
        default_action = drop();
        size = IPV6_ROUTE_SIZE; // node and pod prefixes, uplinks, default
    }

    /* ----------------------------------------------------- ts_cookie -- */

    /* The cookie is this backend's: cookie_check must still vouch for it. */
    @id(0x01000018)
    action ts_cookie_hit(backend_id_t backend_id) {
        meta.ts_cookie_hit = 1;
        meta.cookie_backend_id = backend_id;
    }

    /* A forged or outdated cookie, or a value that was never one: the
     * request is hashed (LB_EVENT_TS_COOKIE_MISS). */
    @id(0x01000019)
    action ts_cookie_miss() {
        meta.ts_cookie_hit = 0;
    }

    /* An external client's timestamp cookie (the low half of the TSecr it
     * echoes; common/src/ts_cookie.rs) -> the backend whose node stamped
     * it, per Service: (service, cookie) -> backend. A client that runs no
     * agent cannot carry the Talaria option, but echoes what the backend's
     * node wrote into its TSvals, so its connection stays on its backend
     * when the Service's pool changes, with no per-connection state here.
     * The cookie is a keyed hash, so a client can only guess one, and a
     * guess passes only for a backend of the Service it asked for
     * (cookie_check). */
    @id(0x0200000D)
    table ts_cookie {
        key = {
            meta.service_id      : exact @name("service_id");
            meta.ts_cookie_value : exact @name("cookie");
        }
        actions = {
            ts_cookie_hit;
            @defaultonly ts_cookie_miss;
        }
        default_action = ts_cookie_miss();
        size = TS_COOKIE_SIZE; // (service, backend) pairs, per cookie key
    }

    /* ---------------------------------------------------- service_v6 -- */

    /* service_v4 for an inner IPv6 packet: (IPv6 ClusterIP, port,
     * protocol) -> service, a request's destination or a reply's source.
     * Its actions are service_v4's; a dual-stack Service has an entry in
     * each, with service ids of their own (one id space). */
    @id(0x0200000E)
    table service_v6 {
        key = {
            meta.service_addr_v6    : exact @name("vip");
            meta.service_port       : exact @name("port");
            meta.service_proto      : exact @name("proto");
        }
        actions = {
            set_service;
            @defaultonly service_miss;
        }
        default_action = service_miss();
        size = SERVICE_V6_SIZE; // one entry per IPv6 Service port
    }

    /* ---------------------------------------------------- backend_v6 -- */

    /* An IPv6 backend pod's address and port, and its node (the underlay
     * is IPv4). */
    @id(0x0100001A)
    action set_backend_v6(ipv6_addr_t backend_ip, l4_port_t backend_port,
                          ipv4_addr_t node_ip) {
        meta.backend_ip_v6 = backend_ip;
        meta.backend_port = backend_port;
        meta.node_ip = node_ip;
    }

    /* backend for an inner IPv6 packet; backend ids are one space over
     * both tables. No direct counter. */
    @id(0x0200000F)
    table backend_v6 {
        key = {
            meta.backend_id : exact @name("backend_id");
        }
        actions = {
            set_backend_v6;
            @defaultonly backend_miss;
        }
        default_action = backend_miss();
        size = BACKEND_V6_SIZE; // IPv6 backend ids, quarantined ones included
    }

    /* --------------------------------------------------- pod_node_v6 -- */

    /* pod_node for an inner IPv6 reply: the client pod's IPv6 address ->
     * its node, from the Nodes' IPv6 pod CIDRs. */
    @id(0x02000010)
    table pod_node_v6 {
        key = {
            hdr.inner_ipv6.dst_addr : lpm @name("pod_addr");
        }
        actions = {
            set_client_node;
            @defaultonly pod_node_miss;
        }
        default_action = pod_node_miss();
        size = POD_NODE_V6_SIZE; // one IPv6 pod CIDR per node
    }

    apply {
        /* bmv2 zeroes metadata anyway; say so for other targets. */
        meta.drop_reason = 0;
        meta.terminate = 0;
        meta.cookie_ok = 0;
        meta.ts_echo = 0;
        meta.ts_cookie_hit = 0;
        meta.reply = 0;
        meta.icmp_relay = 0;
        meta.cookie_fragment = 0;
        meta.strip = 0;
        meta.endpoint = 0;
        meta.external = 0;
        meta.inner_from_plain = 0;

        if (hdr.ipv6.isValid()) {
            /* Routed as a router would, hop limit and all. The switch
             * sends no ICMPv6 errors, as it sends no ICMP ones. */
            if (standard_metadata.parser_error != error.NoError) {
                meta.drop_reason = DROP_MALFORMED;
            } else if (hdr.ipv6.hop_limit <= 1) {
                meta.drop_reason = DROP_TTL_EXPIRED;
            } else {
                ipv6_route.apply();
            }
        } else if (!hdr.ipv4.isValid()) {
            /* Neither IPv4 nor IPv6 (ARP included) has no route. A parser
             * error here means the frame ended inside a header. */
            if (standard_metadata.parser_error == error.NoError) {
                meta.drop_reason = DROP_NO_ROUTE;
            } else {
                meta.drop_reason = DROP_MALFORMED;
            }
        } else if (standard_metadata.parser_error == error.BadIpv4Header
                   || standard_metadata.checksum_error == 1) {
            meta.drop_reason = DROP_MALFORMED;
        } else {
            if (hdr.udp.isValid() && hdr.udp.dst_port == GENEVE_UDP_PORT) {
                switch_addr.apply();
            }
            /* An inner IPv6 source cannot pass for the switch's IPv4
             * addresses, and never leaves plain: its outer source is
             * checked. */
            if (meta.terminate == 1
                && standard_metadata.parser_error == error.NoError
                && hdr.inner_ipv4.isValid()) {
                meta.checked_src = hdr.inner_ipv4.src_addr;
            } else {
                meta.checked_src = hdr.ipv4.src_addr;
            }
            spoofed_source.apply();

            /* Whether service_v4 is looked up, and for a plain packet
             * whether it has ports endpoint_reply could match. */
            bool lookup_service = false;
            bool plain_ports = false;
            if (meta.drop_reason != 0) {
                /* A spoofed source. */
            } else if (meta.terminate == 1) {
                /* A tunnel to this switch. The parser's verdict counts now. */
                if (standard_metadata.parser_error == error.GeneveVersion) {
                    meta.drop_reason = DROP_GENEVE_VERSION;
                } else if (standard_metadata.parser_error == error.GeneveProtocol) {
                    meta.drop_reason = DROP_GENEVE_PROTOCOL;
                } else if (standard_metadata.parser_error == error.OptionLength) {
                    meta.drop_reason = DROP_OPTION_LENGTH;
                } else if (standard_metadata.parser_error == error.UnknownCriticalOption) {
                    meta.drop_reason = DROP_UNKNOWN_CRITICAL_OPTION;
                } else if (standard_metadata.parser_error == error.TalariaVersion) {
                    meta.drop_reason = DROP_TALARIA_VERSION;
                } else if (standard_metadata.parser_error == error.MissingOption) {
                    meta.drop_reason = DROP_MISSING_OPTION;
                } else if (standard_metadata.parser_error != error.NoError) {
                    /* Cut short, or a bad inner IPv4 header. */
                    meta.drop_reason = DROP_MALFORMED;
                } else {
                    tunnel_peer.apply();
                }

                if (meta.drop_reason == 0) {
                    if (hdr.inner_ipv6.isValid()
                        && !hdr.inner_tcp.isValid() && !hdr.inner_udp.isValid()
                        && !hdr.quoted_ports.isValid()
                        && ((hdr.talaria.flags & TALARIA_FLAG_REPLY) == 0
                            || hdr.inner_ipv6.next_hdr != IP_PROTO_ICMPV6)) {
                        /* An inner IPv6 packet is TCP or UDP right after
                         * its fixed header, or a reply that is ICMPv6
                         * right after it (an error a backend sent about
                         * its flow: checked as any reply without ports,
                         * its type unread, as IPv4's), or a request that
                         * is a client's ICMPv6 error quoting TCP or UDP
                         * ports (relayed below). No extension headers (so
                         * no fragments), request, reply or quote; no other
                         * ICMPv6 request (an echo request, an error whose
                         * quote has no ports the parser could read). */
                        meta.drop_reason = DROP_UNSUPPORTED_PROTOCOL;
                    } else if ((hdr.talaria.flags & TALARIA_FLAG_REPLY) != 0) {
                        /* Backend to client: its claims are checked below
                         * against the same tables a request uses. */
                        meta.reply = 1;
                    } else if (hdr.inner_ipv6.isValid()) {
                        /* An IPv6 request with ports, or a client's ICMPv6
                         * error about a reply it got: relayed as IPv4's
                         * (below), with the same checks. */
                        if (hdr.quoted_ports.isValid()) {
                            meta.icmp_relay = 1;
                            if ((hdr.talaria.flags & TALARIA_FLAG_COOKIE_VALID) == 0
                                || hdr.quoted_ipv6.dst_addr != hdr.inner_ipv6.src_addr) {
                                meta.drop_reason = DROP_ICMP_SPOOF;
                            }
                        }
                    } else if (hdr.inner_ipv4.ihl != 5) {
                        meta.drop_reason = DROP_IP_OPTIONS;
                    } else if (hdr.inner_ipv4.frag_offset != 0) {
                        /* A later fragment of a request has no ports: it
                         * carries its first fragment's cookie, or without
                         * one its datagram's ports in the option, so that
                         * it goes where the first went. */
                        bit<8> how = hdr.talaria.flags
                            & (TALARIA_FLAG_FRAG_PORTS | TALARIA_FLAG_COOKIE_VALID);
                        if (how == TALARIA_FLAG_FRAG_PORTS) {
                            meta.l4_src_port = hdr.talaria.backend_id[31:16];
                            meta.l4_dst_port = hdr.talaria.backend_id[15:0];
                        } else if (how == TALARIA_FLAG_COOKIE_VALID) {
                            meta.cookie_fragment = 1;
                        } else {
                            meta.drop_reason = DROP_FRAGMENT;
                        }
                    } else if ((hdr.inner_ipv4.flags & IPV4_FLAG_MF) != 0
                               && !hdr.inner_tcp.isValid() && !hdr.inner_udp.isValid()) {
                        meta.drop_reason = DROP_FRAGMENT;
                    } else if (hdr.quoted_ports.isValid()) {
                        /* A client's ICMP error about a reply it got (port
                         * unreachable, frag needed): it goes to the backend
                         * that sent the reply, which the cookie names. The
                         * client must be the quoted packet's destination. */
                        meta.icmp_relay = 1;
                        if ((hdr.talaria.flags & TALARIA_FLAG_COOKIE_VALID) == 0
                            || hdr.quoted_ipv4.dst_addr != hdr.inner_ipv4.src_addr) {
                            meta.drop_reason = DROP_ICMP_SPOOF;
                        }
                    } else if (!hdr.inner_tcp.isValid() && !hdr.inner_udp.isValid()) {
                        meta.drop_reason = DROP_UNSUPPORTED_PROTOCOL;
                    }
                }

                /* The Service: a request's destination, a reply's source.
                 * A reply without ports (an ICMP or ICMPv6 error, a later
                 * IPv4 fragment) keeps the service its cookie names, for
                 * cookie_check. */
                lookup_service = meta.drop_reason == 0;
                if (meta.reply == 1) {
                    meta.service_id = hdr.talaria.service_id;
                    if (hdr.inner_ipv6.isValid()) {
                        meta.service_addr_v6 = hdr.inner_ipv6.src_addr;
                        meta.service_proto = hdr.inner_ipv6.next_hdr;
                    } else {
                        meta.service_addr = hdr.inner_ipv4.src_addr;
                        meta.service_proto = hdr.inner_ipv4.protocol;
                    }
                    meta.service_port = meta.l4_src_port;
                    if (!hdr.inner_tcp.isValid() && !hdr.inner_udp.isValid()) {
                        lookup_service = false;
                    }
                } else if (meta.icmp_relay == 1) {
                    /* The reply the error quotes came from the service. */
                    if (hdr.inner_ipv6.isValid()) {
                        meta.service_addr_v6 = hdr.quoted_ipv6.src_addr;
                        meta.service_proto = hdr.quoted_ipv6.next_hdr;
                    } else {
                        meta.service_addr = hdr.quoted_ipv4.src_addr;
                        meta.service_proto = hdr.quoted_ipv4.protocol;
                    }
                    meta.service_port = hdr.quoted_ports.src_port;
                } else if (meta.cookie_fragment == 1) {
                    /* No ports to look the service up by: the cookie's. */
                    meta.service_id = hdr.talaria.service_id;
                    lookup_service = false;
                } else if (hdr.inner_ipv6.isValid()) {
                    meta.service_addr_v6 = hdr.inner_ipv6.dst_addr;
                    meta.service_port = meta.l4_dst_port;
                    meta.service_proto = hdr.inner_ipv6.next_hdr;
                } else {
                    meta.service_addr = hdr.inner_ipv4.dst_addr;
                    meta.service_port = meta.l4_dst_port;
                    meta.service_proto = hdr.inner_ipv4.protocol;
                }
            } else {
                /* Plain IPv4. A TCP or UDP first fragment without options
                 * (UDP to 6081 never is one: that is Geneve in transit)
                 * may be an external client's request to a Service address
                 * (a LoadBalancer ingress IP, an externalIP), or else the
                 * reply of an endpoint without an agent. (inner_tcp is
                 * a plain packet's own only without a UDP header: behind
                 * one it is a Geneve packet's in transit.) */
                if (hdr.inner_tcp.isValid() && !hdr.udp.isValid()) {
                    meta.endpoint_port = hdr.inner_tcp.src_port;
                    plain_ports = true;
                } else if (hdr.udp.isValid() && hdr.udp.dst_port != GENEVE_UDP_PORT) {
                    meta.endpoint_port = hdr.udp.src_port;
                    meta.l4_src_port = hdr.udp.src_port;
                    meta.l4_dst_port = hdr.udp.dst_port;
                    plain_ports = true;
                }
                if (hdr.ipv4_options.isValid()) {
                    plain_ports = false;
                }
                lookup_service = plain_ports;
                meta.service_addr = hdr.ipv4.dst_addr;
                meta.service_port = meta.l4_dst_port;
                meta.service_proto = hdr.ipv4.protocol;
            }

            /* bmv2 takes a table applied in two places only if both go on
             * to the same next table, so every table has one place here,
             * shared by tunnels, external requests and endpoint replies. */

            if (lookup_service) {
                /* An inner IPv6 packet's Service is service_v6's; the
                 * rest of its way shares the tables that know no address
                 * family (cookie_check, lb_bucket). */
                if (hdr.inner_ipv6.isValid()) {
                    service_v6.apply();
                } else {
                    service_v4.apply();
                }
                if (meta.terminate == 0) {
                    /* A miss is any plain packet. */
                    if (meta.drop_reason == 0) {
                        meta.external = 1;
                    } else {
                        meta.drop_reason = 0;
                    }
                } else if (meta.reply == 1) {
                    if (meta.drop_reason != 0
                        || meta.service_id != hdr.talaria.service_id) {
                        meta.drop_reason = DROP_FORGED_REPLY;
                    }
                } else if (meta.drop_reason == 0) {
                    if (meta.icmp_relay == 1
                        && meta.service_id != hdr.talaria.service_id) {
                        meta.drop_reason = DROP_ICMP_SPOOF;
                    } else {
                        service_counter.count((bit<32>)meta.service_id);
                    }
                }
            }

            if (meta.external == 1) {
                /* An external request: it has no Talaria cookie, but a TCP
                 * segment that echoes a timestamp (the option first, ACK
                 * set; a SYN's TSecr means nothing, RFC 7323) may carry a
                 * timestamp cookie in its TSecr, which ts_cookie maps to a
                 * backend; else it is hashed as a node's new flow. Its
                 * later fragments carry no ports and could not follow a
                 * first one, so that is dropped too. */
                if ((hdr.ipv4.flags & IPV4_FLAG_MF) != 0) {
                    meta.drop_reason = DROP_FRAGMENT;
                } else {
                    service_counter.count((bit<32>)meta.service_id);
                    if (hdr.tcp_timestamp.isValid()
                        && (hdr.inner_tcp.flags & TCP_FLAG_ACK) != 0
                        && (hdr.inner_tcp.flags & TCP_FLAG_SYN) == 0) {
                        meta.ts_echo = 1;
                        meta.ts_cookie_value = hdr.tcp_timestamp.tsecr[15:0];
                        ts_cookie.apply();
                    } else {
                        lb_event_counter.count((bit<32>)LB_EVENT_NEW_FLOW);
                    }
                }
            } else if (plain_ports) {
                endpoint_reply.apply();
                if (meta.endpoint == 1) {
                    meta.tunnel_flags = TALARIA_FLAG_REPLY | TALARIA_FLAG_COOKIE_VALID
                                        | TALARIA_FLAG_ENDPOINT;
                }
            }
            if (meta.drop_reason == 0 && (meta.external == 1 || meta.endpoint == 1)) {
                /* The unchanged packet becomes the inner one (the hash's,
                 * DNAT's and pod_node's input); undone if it stays plain.
                 * A UDP header moves too: the deparser emits inner_udp
                 * right after the IPv4 header when no tunnel is built. */
                hdr.inner_ipv4 = hdr.ipv4;
                if (hdr.udp.isValid()) {
                    hdr.inner_udp = hdr.udp;
                    hdr.udp.setInvalid();
                }
                meta.inner_from_plain = 1;
            }

            /* The cookie: a request's may pick the backend; a reply's
             * must name a backend of its service. A tunnel's is in its
             * option; an external request's is the backend ts_cookie
             * found, which must pass the same check. */
            bool check_cookie = false;
            if (meta.drop_reason == 0 && meta.terminate == 1) {
                if (meta.reply == 1
                    || (hdr.talaria.flags & TALARIA_FLAG_COOKIE_VALID) != 0) {
                    meta.cookie_backend_id = hdr.talaria.backend_id;
                    check_cookie = true;
                } else {
                    lb_event_counter.count((bit<32>)LB_EVENT_NEW_FLOW);
                }
            } else if (meta.drop_reason == 0 && meta.ts_cookie_hit == 1) {
                check_cookie = true;
            }
            if (check_cookie) {
                cookie_check.apply();
            }
            if (meta.drop_reason == 0 && meta.terminate == 1) {
                if (check_cookie) {
                    if (meta.reply == 1) {
                        if (meta.cookie_ok == 0) {
                            meta.drop_reason = DROP_FORGED_REPLY;
                        }
                    } else if (meta.cookie_ok == 1) {
                        lb_event_counter.count((bit<32>)LB_EVENT_COOKIE_HIT);
                    } else {
                        lb_event_counter.count((bit<32>)LB_EVENT_COOKIE_STALE);
                    }
                }
                /* An error about a flow whose backend is gone has no
                 * one to tell, and a later fragment without ports
                 * cannot be hashed: neither goes elsewhere. */
                if ((meta.icmp_relay == 1 || meta.cookie_fragment == 1)
                    && meta.cookie_ok == 0) {
                    meta.drop_reason = DROP_NO_BACKEND;
                }
            } else if (meta.ts_echo == 1) {
                /* An external request's echo: a hit if ts_cookie named a
                 * backend cookie_check vouches for; a cookie ts_cookie
                 * does not know, or whose backend is gone or another
                 * Service's, is hashed below. */
                if (meta.cookie_ok == 1) {
                    lb_event_counter.count((bit<32>)LB_EVENT_TS_COOKIE_HIT);
                } else {
                    lb_event_counter.count((bit<32>)LB_EVENT_TS_COOKIE_MISS);
                }
            }

            if (meta.drop_reason == 0 && meta.reply == 0 && meta.cookie_ok == 0
                && (meta.terminate == 1 || meta.external == 1)) {
                /* The bucket hash: crc32 over exactly these fields in
                 * this order (13 bytes; 37 for IPv6), or the client
                 * address alone. Must match common/src/hash.rs (FlowTuple,
                 * FlowTuple6). */
                if (hdr.inner_ipv6.isValid()) {
                    if (meta.hash_mode == HASH_MODE_CLIENT_IP) {
                        hash(meta.flow_hash, HashAlgorithm.crc32, (bit<32>)0,
                             { hdr.inner_ipv6.src_addr },
                             (bit<64>)4294967296);
                    } else {
                        hash(meta.flow_hash, HashAlgorithm.crc32, (bit<32>)0,
                             { hdr.inner_ipv6.src_addr,
                               hdr.inner_ipv6.dst_addr,
                               hdr.inner_ipv6.next_hdr,
                               meta.l4_src_port,
                               meta.l4_dst_port },
                             (bit<64>)4294967296);
                    }
                } else if (meta.hash_mode == HASH_MODE_CLIENT_IP) {
                    hash(meta.flow_hash, HashAlgorithm.crc32, (bit<32>)0,
                         { hdr.inner_ipv4.src_addr },
                         (bit<64>)4294967296);
                } else {
                    hash(meta.flow_hash, HashAlgorithm.crc32, (bit<32>)0,
                         { hdr.inner_ipv4.src_addr,
                           hdr.inner_ipv4.dst_addr,
                           hdr.inner_ipv4.protocol,
                           meta.l4_src_port,
                           meta.l4_dst_port },
                         (bit<64>)4294967296);
                }
                /* Tofino has no modulo, so bucket counts are powers of
                 * two and we mask. */
                meta.bucket = (bucket_t)meta.flow_hash & meta.bucket_mask;
                lb_bucket.apply();
            }

            /* The backend: where a request goes; for a reply, the node
             * that must have sent it. A request to a backend without an
             * agent leaves without a tunnel. */
            if (meta.drop_reason == 0 && (meta.terminate == 1 || meta.external == 1)) {
                if (hdr.inner_ipv6.isValid()) {
                    backend_v6.apply();
                } else {
                    backend.apply();
                }
                if (meta.reply == 1
                    && (meta.drop_reason != 0 || meta.node_ip != hdr.ipv4.src_addr)) {
                    meta.drop_reason = DROP_FORGED_REPLY;
                }
                if (meta.drop_reason == 0 && meta.reply == 0 && meta.node_ip == 0) {
                    if (hdr.inner_ipv6.isValid()) {
                        /* An IPv6 request is not stripped (no
                         * endpoints without an agent for IPv6 yet). */
                        meta.drop_reason = DROP_NO_BACKEND;
                    } else {
                        meta.strip = 1;
                    }
                }
            }

            /* Back to the client's node. An endpoint reply without one is
             * routed plain; so is a reply to a client outside the cluster,
             * stripped of its tunnel, unless it is a notification, which
             * is for a client node's agent only. */
            if (meta.drop_reason == 0 && (meta.reply == 1 || meta.endpoint == 1)) {
                if (hdr.inner_ipv6.isValid()) {
                    pod_node_v6.apply();
                } else {
                    pod_node.apply();
                }
                if (meta.endpoint == 1) {
                    if (meta.drop_reason != 0) {
                        meta.drop_reason = 0;
                        meta.endpoint = 0;
                    }
                } else if (meta.drop_reason == 0) {
                    lb_event_counter.count((bit<32>)LB_EVENT_REPLY);
                } else if ((hdr.talaria.flags & TALARIA_FLAG_NOTIFY) == 0
                           && !hdr.inner_ipv6.isValid()) {
                    /* (An IPv6 reply has no plain way out: no_client_node.) */
                    meta.drop_reason = 0;
                    meta.strip = 1;
                    lb_event_counter.count((bit<32>)LB_EVENT_REPLY);
                }
            }

            /* The outer source of a tunnel built around a plain packet:
             * what the node it goes to accepts. An endpoint reply without
             * one is routed plain; an external request is dropped. */
            if (meta.drop_reason == 0
                && (meta.endpoint == 1 || (meta.external == 1 && meta.strip == 0))) {
                tunnel_source.apply();
                if (meta.endpoint == 1) {
                    if (meta.drop_reason != 0) {
                        meta.drop_reason = 0;
                        meta.endpoint = 0;
                    } else {
                        lb_event_counter.count((bit<32>)LB_EVENT_REPLY);
                    }
                }
            }

            if (meta.drop_reason == 0 && meta.reply == 0
                && (meta.terminate == 1 || meta.external == 1)) {
                /* DNAT to the backend pod, inner checksums updated
                 * incrementally (the L4 ones cover the address through
                 * the pseudo header; a later fragment has none, its
                 * datagram's checksum is in the first fragment). IPv6 has
                 * no header checksum; its TCP or UDP one covers both
                 * addresses whole. */
                if (hdr.inner_ipv6.isValid()) {
                    if (meta.icmp_relay == 1) {
                        /* As IPv4's relay: the quoted reply left the
                         * backend from its own address and port. The
                         * ICMPv6 checksum covers the inner destination
                         * (pseudo header) and the quote; the quoted L4
                         * checksum stays. */
                        icmp6_csum.apply(hdr.inner_icmp.checksum,
                                         hdr.inner_ipv6.dst_addr, meta.backend_ip_v6,
                                         hdr.quoted_ports.src_port, meta.backend_port);
                        icmp6_quoted_csum.apply(hdr.inner_icmp.checksum,
                                                hdr.quoted_ipv6.src_addr,
                                                meta.backend_ip_v6, 0, 0);
                        hdr.quoted_ipv6.src_addr = meta.backend_ip_v6;
                        hdr.quoted_ports.src_port = meta.backend_port;
                    } else if (hdr.inner_tcp.isValid()) {
                        inner_tcp6_csum.apply(hdr.inner_tcp.checksum,
                                              hdr.inner_ipv6.dst_addr,
                                              meta.backend_ip_v6,
                                              hdr.inner_tcp.dst_port,
                                              meta.backend_port);
                        hdr.inner_tcp.dst_port = meta.backend_port;
                    } else if (hdr.inner_udp.isValid()) {
                        /* As IPv4's: zero stays zero (IPv6 forbids it,
                         * but the switch repairs nothing), a computed
                         * zero goes out as 0xFFFF. */
                        if (hdr.inner_udp.checksum != 0) {
                            inner_udp6_csum.apply(hdr.inner_udp.checksum,
                                                  hdr.inner_ipv6.dst_addr,
                                                  meta.backend_ip_v6,
                                                  hdr.inner_udp.dst_port,
                                                  meta.backend_port);
                            if (hdr.inner_udp.checksum == 0) {
                                hdr.inner_udp.checksum = 0xffff;
                            }
                        }
                        hdr.inner_udp.dst_port = meta.backend_port;
                    }
                    hdr.inner_ipv6.dst_addr = meta.backend_ip_v6;
                } else {
                    inner_ipv4_csum.apply(hdr.inner_ipv4.hdr_checksum,
                                          hdr.inner_ipv4.dst_addr,
                                          meta.backend_ip, 0, 0);
                    if (meta.icmp_relay == 1) {
                        /* The quoted reply left the backend from its own
                         * address and port, as the backend must see it;
                         * the quoted L4 checksum stays (receivers do not
                         * check it). */
                        bit<16> quoted_check = hdr.quoted_ipv4.hdr_checksum;
                        quoted_ipv4_csum.apply(hdr.quoted_ipv4.hdr_checksum,
                                               hdr.quoted_ipv4.src_addr,
                                               meta.backend_ip, 0, 0);
                        icmp_csum.apply(hdr.inner_icmp.checksum,
                                        hdr.quoted_ipv4.src_addr, meta.backend_ip,
                                        hdr.quoted_ports.src_port, meta.backend_port);
                        icmp_quoted_csum.apply(hdr.inner_icmp.checksum, 0, 0,
                                               quoted_check,
                                               hdr.quoted_ipv4.hdr_checksum);
                        hdr.quoted_ipv4.src_addr = meta.backend_ip;
                        hdr.quoted_ports.src_port = meta.backend_port;
                    } else if (hdr.inner_tcp.isValid()) {
                        inner_tcp_csum.apply(hdr.inner_tcp.checksum,
                                             hdr.inner_ipv4.dst_addr,
                                             meta.backend_ip,
                                             hdr.inner_tcp.dst_port,
                                             meta.backend_port);
                        hdr.inner_tcp.dst_port = meta.backend_port;
                    } else if (hdr.inner_udp.isValid()) {
                        /* A zero UDP checksum means "none" and stays zero;
                         * a computed zero goes out as 0xFFFF (RFC 768). */
                        if (hdr.inner_udp.checksum != 0) {
                            inner_udp_csum.apply(hdr.inner_udp.checksum,
                                                 hdr.inner_ipv4.dst_addr,
                                                 meta.backend_ip,
                                                 hdr.inner_udp.dst_port,
                                                 meta.backend_port);
                            if (hdr.inner_udp.checksum == 0) {
                                hdr.inner_udp.checksum = 0xffff;
                            }
                        }
                        hdr.inner_udp.dst_port = meta.backend_port;
                    }
                    hdr.inner_ipv4.dst_addr = meta.backend_ip;
                }
                /* The cookie travels on to the backend's node, which
                 * hands it back to the client in the reply. NEW_FLOW
                 * says the hash chose it: the client holds no valid
                 * cookie (its backend's node may tell it one). An
                 * external request's is written into the tunnel built
                 * for it below, flagged EXTERNAL: its node stamps the
                 * timestamp cookie into the replies. A node may not claim
                 * EXTERNAL for a request it tunnels (nor send
                 * FRAG_PORTS on). */
                if (meta.terminate == 1) {
                    hdr.talaria.service_id = meta.service_id;
                    hdr.talaria.backend_id = meta.backend_id;
                    hdr.talaria.flags = (hdr.talaria.flags
                                         & ~(TALARIA_FLAG_FRAG_PORTS | TALARIA_FLAG_EXTERNAL))
                                        | TALARIA_FLAG_COOKIE_VALID;
                    if (meta.cookie_ok == 0) {
                        hdr.talaria.flags = hdr.talaria.flags | TALARIA_FLAG_NEW_FLOW;
                    }
                } else {
                    meta.tunnel_flags = TALARIA_FLAG_COOKIE_VALID | TALARIA_FLAG_EXTERNAL;
                    if (meta.cookie_ok == 0) {
                        meta.tunnel_flags = meta.tunnel_flags | TALARIA_FLAG_NEW_FLOW;
                    }
                    meta.tunnel_service_id = meta.service_id;
                    meta.tunnel_backend_id = meta.backend_id;
                }
            }

            if (meta.drop_reason == 0 && meta.strip == 1) {
                /* No tunnel out: route the (DNATed) inner packet plain,
                 * as any router would (its TTL checked here, decremented
                 * below). */
                hdr.ipv4 = hdr.inner_ipv4;
                hdr.ipv4_options.setInvalid();
                hdr.udp.setInvalid();
                hdr.geneve.setInvalid();
                hdr.talaria.setInvalid();
                hdr.inner_ipv4.setInvalid();
                if (hdr.ipv4.ttl <= 1) {
                    meta.drop_reason = DROP_TTL_EXPIRED;
                }
            } else if (meta.drop_reason == 0 && meta.terminate == 1) {
                /* Re-originate the tunnel: from the address it came to,
                 * to the chosen node; routed below. */
                hdr.ipv4.src_addr = meta.switch_ip;
                hdr.ipv4.dst_addr = meta.node_ip;
                hdr.ipv4.ttl = TUNNEL_TTL;
                /* A non-zero outer UDP checksum would not be recomputed
                 * per segment of a GSO packet (docs/design.md). (A
                 * terminated tunnel always has its UDP header; p4c cannot
                 * tell.) */
                if (hdr.udp.isValid()) {
                    hdr.udp.checksum = 0;
                }
            } else if (meta.drop_reason == 0
                       && (meta.endpoint == 1 || meta.external == 1)) {
                /* Tunnel a plain packet (an endpoint's reply, unchanged;
                 * an external request, DNATed) as a node tunnels, to
                 * meta.node_ip from tunnel_source's address, with the
                 * option in meta.tunnel_*. The outer source port: crc32
                 * of the flow as it arrived, as the bucket hash
                 * (common/src/hash.rs), top 14 bits. hdr.ipv4 is still
                 * the packet's own header here. */
                hash(meta.flow_hash, HashAlgorithm.crc32, (bit<32>)0,
                     { hdr.ipv4.src_addr,
                       hdr.ipv4.dst_addr,
                       hdr.ipv4.protocol,
                       meta.l4_src_port,
                       meta.l4_dst_port },
                     (bit<64>)4294967296);
                hdr.udp.setValid();
                hdr.udp.src_port = TUNNEL_SPORT_BASE | (bit<16>)meta.flow_hash[31:18];
                hdr.udp.dst_port = GENEVE_UDP_PORT;
                hdr.udp.length = hdr.ipv4.total_len + TUNNEL_UDP_OVERHEAD;
                hdr.udp.checksum = 0;
                hdr.geneve.setValid();
                hdr.geneve.version = 0;
                hdr.geneve.opt_len = TALARIA_GENEVE_OPT_LEN;
                hdr.geneve.oam = 0;
                hdr.geneve.critical = GENEVE_CRITICAL;
                hdr.geneve.reserved = 0;
                hdr.geneve.protocol_type = GENEVE_PROTO_IPV4;
                hdr.geneve.vni = 0;
                hdr.geneve.reserved2 = 0;
                hdr.talaria.setValid();
                hdr.talaria.opt_class = TALARIA_OPT_CLASS;
                hdr.talaria.opt_type = TALARIA_OPT_TYPE;
                hdr.talaria.reserved = 0;
                hdr.talaria.length = TALARIA_OPT_WORDS;
                hdr.talaria.version = TALARIA_VERSION;
                hdr.talaria.flags = meta.tunnel_flags;
                hdr.talaria.service_id = meta.tunnel_service_id;
                hdr.talaria.backend_id = meta.tunnel_backend_id;
                hdr.ipv4.total_len = hdr.ipv4.total_len + TUNNEL_OVERHEAD;
                hdr.ipv4.identification = 0;
                hdr.ipv4.flags = IPV4_FLAG_DF;
                hdr.ipv4.frag_offset = 0;
                hdr.ipv4.ttl = TUNNEL_TTL;
                hdr.ipv4.protocol = IP_PROTO_UDP;
                hdr.ipv4.src_addr = meta.switch_ip;
                hdr.ipv4.dst_addr = meta.node_ip;
            } else {
                if (meta.inner_from_plain == 1) {
                    hdr.inner_ipv4.setInvalid();
                }
                if (meta.drop_reason == 0 && hdr.ipv4.ttl <= 1) {
                    meta.drop_reason = DROP_TTL_EXPIRED;
                }
            }

            if (meta.drop_reason == 0) {
                /* The TTL and protocol word, for a stripped header. */
                bit<16> ttl_word = hdr.ipv4.ttl ++ hdr.ipv4.protocol;
                ipv4_route.apply();
                if (meta.strip == 1 && meta.drop_reason == 0) {
                    strip_ttl_csum.apply(hdr.ipv4.hdr_checksum, 0, 0, ttl_word,
                                         hdr.ipv4.ttl ++ hdr.ipv4.protocol);
                }
            }
        }

        if (meta.drop_reason != 0) {
            drop_counter.count((bit<32>)meta.drop_reason);
            mark_to_drop(standard_metadata);
        }
    }
}

control TalariaEgress(inout headers_t hdr,
                      inout metadata_t meta,
                      inout standard_metadata_t standard_metadata) {
    apply { }
}

V1Switch(TalariaParser(),
         TalariaVerifyChecksum(),
         TalariaIngress(),
         TalariaEgress(),
         TalariaComputeChecksum(),
         TalariaDeparser()) main;
