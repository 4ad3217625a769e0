//! BPF map keys and values shared by the eBPF programs and the userspace
//! that fills and reads their maps.
//!
//! Every type is `#[repr(C)]` with explicit padding (so the kernel and
//! userspace hash the same bytes), network-order fields where they hold
//! packet values, and a compile-time size check.

use crate::be::{Be16, Be32};

macro_rules! pod {
    ($($ty:ty = $size:expr),* $(,)?) => {$(
        crate::assert_size!($ty, $size);
        // SAFETY: repr(C), explicit padding, only integer and byte-array fields.
        #[cfg(feature = "user")]
        unsafe impl aya::Pod for $ty {}
    )*};
}

/// Key of a BPF LPM trie over IPv4: the kernel's `struct bpf_lpm_trie_key`
/// layout, a host-order prefix length followed by the address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ipv4LpmKey {
    pub prefix_len: u32,
    pub addr: Be32,
}

/// Key of a BPF LPM trie over IPv6: prefix length, then the address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ipv6LpmKey {
    pub prefix_len: u32,
    pub addr: [u8; 16],
}

// ---------------------------------------------------------------- switch --
// One map per P4 table of p4/talaria.p4; each mirrors that table's key and
// action parameters.

/// `ipv4_route` action `forward`, and `ipv6_route` action `forward_v6`
/// (the same parameters). Must match both in p4/talaria.p4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteValue {
    /// P4 egress port number (the switch-agent maps it to an ifindex).
    pub port: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

/// `service_v4` key. Must match `table service_v4` in p4/talaria.p4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub vip: Be32,
    pub port: Be16,
    pub proto: u8,
    pub _pad: u8,
}

/// `service_v4` action `set_service`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    pub service_id: u16,
    pub bucket_mask: u16,
    /// One of [`crate::hash::hash_mode`].
    pub hash_mode: u8,
    pub _pad: [u8; 3],
}

/// `cookie_check` and `lb_bucket` share this key shape: a service id and a
/// second id (backend id, or bucket index widened to 32 bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceScopedKey {
    pub service_id: u16,
    pub _pad: u16,
    pub id: u32,
}

/// `lb_bucket` action `select_backend`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketValue {
    pub backend_id: u32,
}

/// `backend` action `set_backend`. Key: the backend id (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendValue {
    pub ip: Be32,
    pub port: Be16,
    pub _pad: u16,
    pub node_ip: Be32,
}

/// `pod_node` action `set_client_node`. Key: [`Ipv4LpmKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeValue {
    pub node_ip: Be32,
}

/// `tunnel_peer` key: a node's address and the P4 port it is attached to
/// (value unused).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TunnelPeerKey {
    pub port: u16,
    pub _pad: u16,
    pub node_ip: Be32,
}

/// `endpoint_reply` key: a reply of an endpoint that runs no agent, by the
/// P4 port it arrives on and its source address, port and protocol. Must
/// match `table endpoint_reply` in p4/talaria.p4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointReplyKey {
    pub port: u16,
    pub endpoint_port: Be16,
    pub endpoint_addr: Be32,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// `endpoint_reply` action `set_endpoint_reply`: the cookie the reply is
/// tunnelled with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointReplyValue {
    pub service_id: u16,
    pub _pad: u16,
    pub backend_id: u32,
}

/// `ts_cookie` key: an external client's timestamp cookie (the low half of
/// the TSecr it echoes, host order) for a service. Must match
/// `table ts_cookie` in p4/talaria.p4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TsCookieKey {
    pub service_id: u16,
    pub cookie: u16,
}

/// `ts_cookie` action `ts_cookie_hit`: the backend whose node stamped the
/// cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TsCookieValue {
    pub backend_id: u32,
}

/// `service_v6` key: [`ServiceKey`] for an IPv6 VIP (the value is
/// [`ServiceValue`]). Must match `table service_v6` in p4/talaria.p4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceV6Key {
    pub vip: [u8; 16],
    pub port: Be16,
    pub proto: u8,
    pub _pad: u8,
}

/// `backend_v6` action `set_backend_v6`: an IPv6 pod's address and port,
/// and its node (the underlay is IPv4). Key: the backend id (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendV6Value {
    pub ip: [u8; 16],
    pub port: Be16,
    pub _pad: u16,
    pub node_ip: Be32,
}

// `pod_node_v6`: key `Ipv6LpmKey`, value `NodeValue`.
pod! {
    ServiceV6Key = 20,
    BackendV6Value = 24,
}

/// A packets-and-bytes counter cell (per CPU in the kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketBytes {
    pub packets: u64,
    pub bytes: u64,
}

// ------------------------------------------------------------------ node --

/// A flow as a pod sees it, both directions keyed from the pod's side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: Be32,
    pub dst: Be32,
    pub src_port: Be16,
    pub dst_port: Be16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    /// The Service port a client-side key (dst = the VIP) goes to.
    #[inline(always)]
    pub fn service_key(&self) -> ServiceKey {
        ServiceKey {
            vip: self.dst,
            port: self.dst_port,
            proto: self.proto,
            _pad: 0,
        }
    }

    /// The client of a backend-side key (src = backend pod): `dst`, or the
    /// backend pod itself for a hairpin flow.
    #[inline(always)]
    pub fn client(&self) -> Be32 {
        if self.dst == HAIRPIN_SOURCE {
            self.src
        } else {
            self.dst
        }
    }

    /// The same flow keyed from its other end.
    #[inline(always)]
    pub fn reversed(self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            ..self
        }
    }
}

/// Client side: the cookie learned from a reply. Key: the client's
/// [`FlowKey`] towards the VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CookieEntry {
    pub service_id: u16,
    /// TCP: FIN seen in one direction (bit 0 from the client, bit 1 towards
    /// it); the entry goes once both directions finished.
    pub fin_seen: u8,
    pub _pad: u8,
    /// [`PENDING_BACKEND`] until the first reply names the backend.
    pub backend_id: u32,
    /// `bpf_ktime_get_ns()` of the last packet, for UDP idle expiry.
    pub last_seen_ns: u64,
}

/// The `backend_id` of a [`CookieEntry`] recorded when a new flow to a
/// port with endpoints without an agent left (`port_policy::AGENTLESS`),
/// before any reply: the flow is sent as new, and the entry tells the
/// node that a reply from such an endpoint belongs to it. Backend ids
/// start at 1.
pub const PENDING_BACKEND: u32 = 0;

/// Backend side: how to send a backend pod's reply. Key: the backend's
/// [`FlowKey`] towards the client (src = backend pod, dst = client pod).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReverseEntry {
    pub vip: Be32,
    pub vip_port: Be16,
    pub service_id: u16,
    pub backend_id: u32,
    pub fin_seen: u8,
    /// UDP: [`reverse_state`], what the flow's backend side has seen.
    /// TCP: once the client's FIN went by, the low byte of the
    /// acknowledgment number that covers it, by which the backend's FIN
    /// tells a passive close from a simultaneous one ([`FIN_BACKEND_FIRST`]).
    pub state: u8,
    /// The client's own port, when the key holds a substitute for it
    /// (see [`PortSubstKey`]); zero when the key's port is the client's.
    pub client_port: Be16,
    pub last_seen_ns: u64,
    /// TCP from a client outside the cluster ([`ts_flags::STAMP`]): the
    /// last real TSval the backend sent, from which the client's echoes
    /// are restored ([`crate::ts_cookie::restore`]).
    pub ts_last_real: u32,
    /// The cookie stamped into the backend's TSvals
    /// ([`crate::ts_cookie::stamp`]), fixed when the flow starts: a new key
    /// must not change a live connection's, or the client's PAWS check
    /// would drop its segments.
    pub ts_cookie: u16,
    /// [`ts_flags`] bits.
    pub ts_flags: u8,
    pub _pad: u8,
}

/// [`ReverseEntry::ts_flags`]: the timestamp cookie of an outside client's
/// TCP flow (`flags::EXTERNAL`, [`crate::ts_cookie`]).
pub mod ts_flags {
    /// The backend's TSvals are stamped with `ts_cookie`, the client's
    /// TSecrs restored.
    pub const STAMP: u8 = 0x01;
    /// A stamped TSval went out: `ts_last_real` holds the real one.
    pub const SENT: u8 = 0x02;
}

impl ReverseEntry {
    /// The reply flow `key` (backend → client) as the client sees it: from
    /// the VIP and Service port, to the client's own address and port.
    pub fn client_view(&self, key: FlowKey) -> FlowKey {
        FlowKey {
            src: self.vip,
            src_port: self.vip_port,
            dst: key.client(),
            dst_port: self.clients_port(key.dst_port),
            ..key
        }
    }
}

/// The source a pod sees its own connections to its own Service come from
/// when it is their backend (hairpin): a packet from the pod's own address
/// would be dropped by its kernel as a martian. Link-local, so no pod or
/// node owns it; the pod's replies to it leave by its default route and
/// are reverse-NATed on its veth like any reply, their destination back to
/// the pod. kube-proxy masquerades hairpin traffic to a node address
/// instead.
pub const HAIRPIN_SOURCE: Be32 = Be32([169, 254, 77, 1]);

/// [`HAIRPIN_SOURCE`] for IPv6: `100::a9fe:4d01`, in the discard-only
/// prefix `100::/64` (RFC 6666), so no pod or node owns it and no router
/// would carry it off the node. Not link-local as IPv4's is: `fe80::/64`
/// is on-link in every pod, which would look for it by neighbour
/// discovery instead of sending its replies by its default route.
pub const HAIRPIN_SOURCE6: [u8; 16] = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 169, 254, 77, 1];

/// Whether `a` is [`HAIRPIN_SOURCE6`] (as one word: a byte-array
/// comparison would be a memcmp call in BPF).
#[inline(always)]
pub fn is_hairpin_source6(a: &[u8; 16]) -> bool {
    u128::from_ne_bytes(*a) == u128::from_ne_bytes(HAIRPIN_SOURCE6)
}

/// A pod hosted on this node. Key: the pod IP (`Be32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodEntry {
    /// Ifindex of the pod's host-side veth: packets from the pod must enter
    /// there (spoof check), packets to it are redirected to its peer.
    pub ifindex: u32,
    /// MAC of the pod's own interface (inside the pod): the destination MAC
    /// of decapsulated packets.
    pub mac: [u8; 6],
    /// MAC of the host-side veth: their source MAC.
    pub host_mac: [u8; 6],
}

/// What a client's new flow (no cookie cached) to a Service port does
/// instead of taking the switch's bucket hash. Key: [`ServiceKey`]. Ports
/// without one go to the switch as new flows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortPolicy {
    /// The port's service id, for the cookie of a preferred backend.
    pub service_id: u16,
    /// [`port_policy`] flags.
    pub flags: u8,
    /// How many of `preferred` are in use.
    pub count: u8,
    /// The only backends this node's clients' new flows may go to
    /// (`internalTrafficPolicy: Local`, topology hints): one is picked by
    /// the flow's hash and sent as the cookie, which the switch honours.
    pub preferred: [u32; port_policy::MAX_PREFERRED],
    /// `sessionAffinityConfig.clientIP.timeoutSeconds`, with
    /// [`port_policy::AFFINITY`].
    pub affinity_timeout_s: u32,
}

/// [`PortPolicy`] flags and size.
pub mod port_policy {
    /// No usable endpoint: refuse new flows (kube-proxy's REJECT).
    pub const REJECT: u8 = 0x01;
    /// `internalTrafficPolicy: Local`: with no preferred backend here,
    /// drop new flows (`no_local_endpoint`), as kube-proxy does.
    pub const LOCAL_ONLY: u8 = 0x02;
    /// Some endpoint runs no agent: a new flow records a pending
    /// [`super::CookieEntry`], by which the node recognises that
    /// endpoint's replies as this flow's and restores the VIP on them.
    pub const AGENTLESS: u8 = 0x04;
    /// `sessionAffinity: ClientIP`: a client's new flow goes to the backend
    /// of its last one ([`super::AffinityEntry`]) while that is younger
    /// than `affinity_timeout_s` and the backend still takes new flows
    /// ([`super::AffinityBackend`]).
    pub const AFFINITY: u8 = 0x08;
    /// The port's address is this node's own, on a nodePort: its pods'
    /// packets to it are steered like a ClusterIP's, where the node's
    /// stack would take them (kube-proxy serves them too). Its pods reach
    /// other nodes' nodePorts plain, through the switch.
    pub const NODE_PORT: u8 = 0x10;
    /// Preferred backends one node can pick from per port.
    pub const MAX_PREFERRED: usize = 16;
}

/// `NODE_AFFINITY` key: a client and a port (by its service id) with
/// session affinity.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityKey {
    pub client: Be32,
    pub service_id: u16,
    pub _pad: u16,
}

/// [`AffinityKey`] of an IPv6 client (`NODE_AFFINITY_V6`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityKey6 {
    pub client: [u8; 16],
    pub service_id: u16,
    pub _pad: u16,
}

/// `NODE_AFFINITY` value: the backend the client's last new flow to the
/// port went to, and when (`bpf_ktime_get_ns()`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityEntry {
    pub backend_id: u32,
    pub _pad: u32,
    pub last_ns: u64,
}

/// `NODE_AFFINITY_BACKENDS` key: a backend that takes new flows of a port
/// with session affinity (for this node's clients: its preferred ones, if
/// it has any). Value: unused. A remembered backend not listed here is
/// forgotten, as kube-proxy's affinity rules exist only for endpoints in
/// use.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityBackend {
    pub service_id: u16,
    pub _pad: u16,
    pub backend_id: u32,
}

/// A Service as the backend node must know it to reverse-NAT replies: the
/// switch DNATs the inner packet and only the service id rides in the
/// Talaria option, so the node maps the id back to the ClusterIP.
/// Key: the service id widened to `u32`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceAddr {
    pub vip: Be32,
    pub port: Be16,
    pub proto: u8,
    pub _pad: u8,
}

// ---- node, IPv6 Services (inner IPv6 over the IPv4 underlay) ----

/// An IPv6 flow as a pod sees it ([`FlowKey`] with 16-byte addresses):
/// the key of `NODE_COOKIES_V6` (client → VIP6) and `NODE_REVERSE_V6`
/// (backend pod → client).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: Be16,
    pub dst_port: Be16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey6 {
    /// The same flow keyed from its other end.
    #[inline(always)]
    pub fn reversed(self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            ..self
        }
    }

    /// The client of a backend-side key (src = backend pod): `dst`, or the
    /// backend pod itself for a hairpin flow ([`HAIRPIN_SOURCE6`]).
    #[inline(always)]
    pub fn client(&self) -> [u8; 16] {
        if is_hairpin_source6(&self.dst) {
            self.src
        } else {
            self.dst
        }
    }

    /// The switch's hash input for this flow (client side: dst = the VIP).
    #[inline(always)]
    pub fn tuple(&self) -> crate::hash::FlowTuple6 {
        crate::hash::FlowTuple6 {
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            src_port: self.src_port,
            dst_port: self.dst_port,
        }
    }

    /// The outer UDP source port of this flow's tunnel: the addresses'
    /// words and the ports folded and mixed as the IPv4 flows' are, into
    /// 49152–65535 (ECMP entropy; cheap enough for every packet).
    #[inline(always)]
    pub fn outer_sport(&self) -> u16 {
        let (src, dst) = (fold6(&self.src), fold6(&self.dst));
        let ports = u32::from_ne_bytes([
            self.src_port.0[0],
            self.src_port.0[1],
            self.dst_port.0[0],
            self.dst_port.0[1],
        ]);
        let mut h = src ^ dst.rotate_left(16) ^ ports ^ self.proto as u32;
        h = h.wrapping_mul(0x9e37_79b1);
        h ^= h >> 15;
        0xc000 | (h >> 18) as u16
    }
}

/// The XOR of an IPv6 address's four native-order words: the address
/// as one word, for the flow hashes.
#[inline(always)]
fn fold6(a: &[u8; 16]) -> u32 {
    let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    w(0) ^ w(4) ^ w(8) ^ w(12)
}

/// Backend side, IPv6: how to send a backend pod's reply ([`ReverseEntry`]
/// without one-way UDP notification or timestamp cookies, which IPv6
/// flows do not have). Key: the backend's [`FlowKey6`] towards the
/// client.
///
/// `client_port` was padding before IPv6 port substitution (always 0,
/// "the key's port is the client's"): the size and the other fields'
/// offsets are those of that layout, so pinned maps of older nodes stay
/// in use.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReverseEntry6 {
    pub vip: [u8; 16],
    pub vip_port: Be16,
    pub service_id: u16,
    pub backend_id: u32,
    pub fin_seen: u8,
    pub _pad: u8,
    /// As [`ReverseEntry::client_port`]: the client's own port when the
    /// key holds a substitute for it ([`PortSubstKey6`]), else 0.
    pub client_port: Be16,
    pub _pad2: [u8; 4],
    pub last_seen_ns: u64,
}

// The layout before `client_port` (pinned maps of running nodes).
const _: () = assert!(core::mem::offset_of!(ReverseEntry6, fin_seen) == 24);
const _: () = assert!(core::mem::offset_of!(ReverseEntry6, client_port) == 26);
const _: () = assert!(core::mem::offset_of!(ReverseEntry6, last_seen_ns) == 32);

impl ReverseEntry6 {
    /// The reply flow `key` (backend → client) as the client sees it: from
    /// VIP6 and the Service port, to the client's own port.
    #[inline(always)]
    pub fn client_view(&self, key: FlowKey6) -> FlowKey6 {
        FlowKey6 {
            src: self.vip,
            src_port: self.vip_port,
            dst: key.client(),
            dst_port: self.clients_port(key.dst_port),
            ..key
        }
    }
}

/// [`ServiceAddr`] of an IPv6 Service port (`NODE_SERVICES_V6`; key: the
/// service id widened to `u32`, one id space over both families), and the
/// key of its port policy (`NODE_PORT_POLICY_V6`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceAddr6 {
    pub vip: [u8; 16],
    pub port: Be16,
    pub proto: u8,
    pub _pad: u8,
}

/// [`PortSubstKey`] of an IPv6 flow (`NODE_PORT_SUBST_V6`).
pub type PortSubstKey6 = PortSubstKey<FlowKey6>;

pod! {
    FlowKey6 = 40,
    ReverseEntry6 = 40,
    ServiceAddr6 = 20,
    AffinityKey6 = 20,
    PortSubstKey6 = 44,
}

#[cfg(test)]
mod node_v6_tests {
    use super::*;

    fn key() -> FlowKey6 {
        let mut src = [0u8; 16];
        src[..2].copy_from_slice(&[0xfd, 0x00]);
        src[15] = 2;
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[0xfd, 0x00, 0x00, 0x96]);
        dst[15] = 10;
        FlowKey6 {
            src,
            dst,
            src_port: Be16::new(40000),
            dst_port: Be16::new(80),
            proto: 6,
            _pad: [0; 3],
        }
    }

    #[test]
    fn flow_key6_reverses_and_hashes_as_the_switch() {
        let k = key();
        let r = k.reversed();
        assert_eq!((r.src, r.dst), (k.dst, k.src));
        assert_eq!((r.src_port.get(), r.dst_port.get()), (80, 40000));
        assert_eq!(r.reversed(), k);
        // The switch's vector (hash.rs `flow6_vectors`).
        assert_eq!(k.tuple().hash(), 0x94e7_19e5);
    }

    #[test]
    fn outer_sport6_is_in_the_dynamic_range_and_spreads() {
        let mut seen = [false; 0x4000];
        for p in 0..256u16 {
            let k = FlowKey6 {
                src_port: Be16::new(40000 + p),
                ..key()
            };
            let s = k.outer_sport();
            assert!(s >= 0xc000, "{s}");
            assert_eq!(s, k.outer_sport(), "stable");
            seen[usize::from(s - 0xc000)] = true;
        }
        let distinct = seen.iter().filter(|s| **s).count();
        assert!(distinct > 200, "{distinct}");
        // Every address word counts.
        let mut k = key();
        let a = k.outer_sport();
        k.src[7] ^= 1;
        assert_ne!(a, k.outer_sport());
    }

    #[test]
    fn substitute_candidates_are_in_the_range_and_per_client_and_service() {
        let in_range = |p: u16| (1024..32768).contains(&p) || p >= 61000;
        // The backend's view: dst = the client.
        let k = key().reversed();
        let tries: [u16; 8] = core::array::from_fn(|i| k.subst_candidate(9, i as u32).get());
        assert!(tries.iter().all(|p| in_range(*p)), "{tries:?}");
        let mut distinct = tries.to_vec();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 8, "{tries:?}");
        assert_eq!(k.subst_candidate(9, 0), k.subst_candidate(9, 0), "stable");
        assert_ne!(k.subst_candidate(9, 0), k.subst_candidate(10, 0));
        // Every word of the client's address counts; the backend's not.
        let mut other = k;
        other.dst[9] ^= 1;
        assert_ne!(k.subst_candidate(9, 0), other.subst_candidate(9, 0));
        let mut other = k;
        other.src[9] ^= 1;
        assert_eq!(k.subst_candidate(9, 0), other.subst_candidate(9, 0));
        // IPv4's candidates are those it had before the families shared
        // them: (client word ^ client port << 16) + service, mixed.
        let k4 = FlowKey {
            src: Be32([10, 244, 1, 3]),
            dst: Be32([10, 244, 2, 2]),
            src_port: Be16::new(8080),
            dst_port: Be16::new(40000),
            proto: 6,
            _pad: [0; 3],
        };
        let h = (u32::from_ne_bytes(k4.dst.0) ^ (40000u32 << 16))
            .wrapping_add(9)
            .wrapping_mul(0x9e37_79b1);
        for i in 0..8 {
            let want = subst_port((h >> 16).wrapping_add(i * 2654) % SUBST_PORT_COUNT);
            assert_eq!(k4.subst_candidate(9, i).get(), want);
        }
    }

    #[test]
    fn reverse_entry6_restores_the_clients_own_port() {
        let k = key().reversed();
        let mut e = ReverseEntry6 {
            vip: [0xfd; 16],
            vip_port: Be16::new(53),
            service_id: 9,
            ..Default::default()
        };
        let seen = e.client_view(k);
        assert_eq!((seen.src, seen.src_port.get()), ([0xfd; 16], 53));
        assert_eq!((seen.dst, seen.dst_port), (k.dst, k.dst_port));
        // Keyed on a substitute for client port 40001.
        e.client_port = Be16::new(40001);
        let on_subst = k.with_client_port(Be16::new(1500));
        assert_eq!(e.client_view(on_subst).dst_port.get(), 40001);
        let subst = PortSubstKey6::new(k.with_client_port(Be16::new(40001)), 9);
        assert!(subst.held_by(&e));
        assert!(!PortSubstKey6::new(k, 9).held_by(&e), "another client port");
        assert!(!PortSubstKey6 {
            service_id: 10,
            ..subst
        }
        .held_by(&e));
        // A hairpin flow's client is the backend pod itself.
        let hairpin = FlowKey6 {
            dst: HAIRPIN_SOURCE6,
            ..k
        };
        assert_eq!(hairpin.client(), k.src);
        assert_eq!(e.client_view(hairpin).dst, k.src);
        assert_eq!(k.client(), k.dst);
    }
}

/// Node-wide settings, one element of an array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    pub node_ip: Be32,
    pub switch_ip: Be32,
    pub uplink_ifindex: u32,
    pub node_mac: [u8; 6],
    pub switch_mac: [u8; 6],
    /// UDP flows idle longer than this are forgotten.
    pub udp_idle_ns: u64,
    /// The node's own device towards Services (`node_host_egress`; 0 =
    /// none): replies to the node's address enter its stack through it.
    pub host_ifindex: u32,
    pub _pad: u32,
}

/// `NODE_TS_COOKIE` (an array of one element): the key this node stamps
/// outside clients' TCP timestamps with ([`crate::ts_cookie`]), the first
/// of the agent's `ts_cookie_key_file`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeTsCookie {
    pub key: crate::ts_cookie::CookieKey,
    /// Non-zero: stamp new flows of outside TCP clients with `key`. Zero
    /// (no key file): stamp none.
    pub enabled: u32,
    pub _pad: u32,
}

/// Backend side: a flow whose client port the backend pod sees replaced.
///
/// Two Services can share a backend, and one client can reach both from
/// the same source port (TCP to two VIPs, or one UDP socket): both flows
/// are then the same 4-tuple at the backend. The first one keeps it; the
/// second's client port is replaced by a free one (as kube-proxy's SNAT
/// does on a clash), so the backend sees two flows and every reply finds
/// its own VIP. Key: the flow as it arrives (the backend's [`FlowKey`],
/// or [`FlowKey6`] in [`PortSubstKey6`], with the client's own port) and
/// its Service; value: the substitute port ([`Be16`]); the
/// [`ReverseEntry`] is keyed on the substitute.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortSubstKey<K = FlowKey> {
    pub flow: K,
    pub service_id: u16,
    pub _pad: [u8; 2],
}

impl<K: BackendKey> PortSubstKey<K> {
    /// The substitute of flow `flow` (as it arrives) of Service
    /// `service_id`.
    #[inline(always)]
    pub fn new(flow: K, service_id: u16) -> Self {
        Self {
            flow,
            service_id,
            _pad: [0; 2],
        }
    }

    /// Whether `e`, the entry on this flow's substitute, is this flow's.
    #[inline(always)]
    pub fn held_by(&self, e: &impl ReverseFlow) -> bool {
        e.service_id() == self.service_id && e.client_port() == self.flow.client_port()
    }
}

/// A backend-side flow key of either family ([`FlowKey`], [`FlowKey6`]:
/// src = the backend pod, dst = the client), as port substitution sees
/// it.
pub trait BackendKey: Copy {
    /// The client's port.
    fn client_port(&self) -> Be16;
    /// The same flow from client port `port`.
    fn with_client_port(&self, port: Be16) -> Self;
    /// The client's address as one word.
    fn client_word(&self) -> u32;

    /// The `i`th candidate substitute port of this flow for Service
    /// `service_id`: hashed from (client, client port, service), so one
    /// client connection's flows always try the same ports, and spread
    /// over the substitute range ([`subst_port`]).
    #[inline(always)]
    fn subst_candidate(&self, service_id: u16, i: u32) -> Be16 {
        let h = (self.client_word() ^ u32::from(self.client_port().get()).rotate_left(16))
            .wrapping_add(u32::from(service_id))
            .wrapping_mul(0x9e37_79b1);
        let offset = (h >> 16).wrapping_add(i.wrapping_mul(2654)) % SUBST_PORT_COUNT;
        Be16::new(subst_port(offset))
    }
}

macro_rules! backend_key {
    ($($ty:ty => $word:expr),*) => {$(
        impl BackendKey for $ty {
            #[inline(always)]
            fn client_port(&self) -> Be16 {
                self.dst_port
            }

            #[inline(always)]
            fn with_client_port(&self, port: Be16) -> Self {
                Self {
                    dst_port: port,
                    ..*self
                }
            }

            #[inline(always)]
            fn client_word(&self) -> u32 {
                $word(&self.dst)
            }
        }
    )*};
}

backend_key!(FlowKey => |a: &Be32| u32::from_ne_bytes(a.0), FlowKey6 => fold6);

/// A backend-side flow entry of either family ([`ReverseEntry`],
/// [`ReverseEntry6`]): whose flow it holds, and its FIN bits.
pub trait ReverseFlow {
    fn service_id(&self) -> u16;
    fn backend_id(&self) -> u32;
    /// The client's own port when the key holds a substitute, else 0.
    fn client_port(&self) -> Be16;
    fn fin_seen(&self) -> u8;

    /// The client's own port of this entry's flow, keyed on client port
    /// `key_port`.
    #[inline(always)]
    fn clients_port(&self, key_port: Be16) -> Be16 {
        if self.client_port().get() != 0 {
            self.client_port()
        } else {
            key_port
        }
    }
}

macro_rules! reverse_flow {
    ($($ty:ty),*) => {$(
        impl ReverseFlow for $ty {
            #[inline(always)]
            fn service_id(&self) -> u16 {
                self.service_id
            }

            #[inline(always)]
            fn backend_id(&self) -> u32 {
                self.backend_id
            }

            #[inline(always)]
            fn client_port(&self) -> Be16 {
                self.client_port
            }

            #[inline(always)]
            fn fin_seen(&self) -> u8 {
                self.fin_seen
            }
        }
    )*};
}

reverse_flow!(ReverseEntry, ReverseEntry6);

/// Backend side: the fragments of a reply datagram. Only the first
/// fragment holds the ports that find the reverse-flow entry, so the
/// reverse NAT of the first is kept for the rest, keyed by what every
/// fragment of one datagram shares (RFC 791).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// The backend pod.
    pub src: Be32,
    /// The client.
    pub dst: Be32,
    pub id: Be16,
    pub proto: u8,
    pub _pad: u8,
}

impl FragKey {
    /// The key every fragment of `ip`'s datagram shares.
    pub fn of(ip: &crate::net::Ipv4Hdr) -> Self {
        Self {
            src: ip.src,
            dst: ip.dst,
            id: ip.id,
            proto: ip.proto,
            _pad: 0,
        }
    }
}

/// What the first fragment of a reply was given, for the others.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragEntry {
    /// The source address the client must see.
    pub vip: Be32,
    pub service_id: u16,
    /// The outer UDP source port of the first fragment, so every fragment
    /// takes the same ECMP path and arrives in order.
    pub outer_sport: u16,
    pub backend_id: u32,
}

/// What the first fragment of a client's request to a VIP was sent with,
/// for the later fragments, which have no ports ([`FragKey`] from the
/// client's side).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestFragEntry {
    /// The option flags the later fragments carry: `COOKIE_VALID` (the
    /// first went with a cookie), or `NEW_FLOW | FRAG_PORTS`.
    pub flags: u8,
    pub _pad: u8,
    pub service_id: u16,
    /// The option's 32-bit word: the cookie, or the datagram's ports
    /// (source << 16 | destination) for the switch's hash.
    pub word: u32,
    /// As in [`FragEntry`].
    pub outer_sport: u16,
    pub _pad2: u16,
}

/// Flow entries a local pod holds in each flow table, counted so that one
/// pod cannot fill the tables for every other (`node_flags::POD_FLOW_LIMIT`).
/// Key: the pod's IP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodFlows {
    /// `NODE_COOKIES` entries of the pod as a client.
    pub cookies: u64,
    /// `NODE_REVERSE` entries of the pod as a backend. (64-bit: BPF's
    /// portable atomics are.)
    pub reverse: u64,
}

/// Substitute client ports: 1024–32767 and 61000–65535, outside Linux's
/// default ephemeral range (32768–60999), so that they rarely meet a port a
/// client uses for a direct connection to the same backend (which no flow
/// table sees), and never a privileged one. A backend keeps a finished
/// flow's port for its TIME_WAIT, so the pool must cover a pair's
/// substitutions over that long.
pub const SUBST_PORT_COUNT: u32 = (32768 - 1024) + (65536 - 61000);

/// The `i`th substitute port (`i < SUBST_PORT_COUNT`).
#[inline(always)]
pub const fn subst_port(i: u32) -> u16 {
    let low = 32768 - 1024;
    if i < low {
        (1024 + i) as u16
    } else {
        (61000 + (i - low)) as u16
    }
}

/// Indexes of the node's per-CPU event counter array (`NODE_STATS`).
pub mod node_stat {
    /// Packets encapsulated towards the switch (requests and replies).
    pub const ENCAP: u32 = 0;
    /// Packets decapsulated and delivered to a local pod.
    pub const DECAP: u32 = 1;
    /// Request encapsulated with a cached cookie.
    pub const CACHE_HIT: u32 = 2;
    /// Request encapsulated as a new flow (no cookie cached).
    pub const CACHE_MISS: u32 = 3;
    /// Cookie learned or changed from a reply.
    pub const COOKIE_LEARN: u32 = 4;
    /// Reverse-flow entry created or changed on the backend side.
    pub const REVERSE_LEARN: u32 = 5;
    /// Backend reply reverse-NATed to the VIP and encapsulated.
    pub const REVERSE_NAT: u32 = 6;
    /// Flow state removed by a TCP RST.
    pub const FLOW_RESET: u32 = 7;
    /// A backend-side flow got a substitute client port (two Services'
    /// flows on one 4-tuple; [`super::PortSubstKey`]).
    pub const PORT_SUBST: u32 = 8;
    /// A non-first fragment of a backend reply reverse-NATed like its
    /// first fragment ([`super::FragKey`]).
    pub const FRAGMENT_NAT: u32 = 9;
    /// A cookie not cached: the client pod holds its share of the cookie
    /// cache (or the cache is full); the flow goes on, balanced by hash.
    pub const COOKIE_REFUSED: u32 = 10;
    /// A new flow to a Service port without a usable endpoint, answered
    /// with ICMP port unreachable from the VIP (kube-proxy's REJECT).
    pub const REJECTED: u32 = 11;
    /// A client pod's ICMP error about a Service reply, sent towards the
    /// backend (client node) or delivered to it (backend node).
    pub const ICMP_RELAY: u32 = 12;
    /// A new flow sent with a preferred backend as its cookie
    /// (`internalTrafficPolicy: Local`, topology hints; [`super::PortPolicy`]).
    pub const PREFERRED: u32 = 13;
    /// A later fragment of a request to a VIP sent like its first one
    /// ([`super::RequestFragEntry`]).
    pub const REQUEST_FRAGMENT: u32 = 14;
    /// A reply of an endpoint without an agent restored to the VIP of the
    /// client's flow (`flags::ENDPOINT`).
    pub const ENDPOINT_REPLY: u32 = 15;
    /// Such a reply with no flow to a VIP behind it: the client talked to
    /// the endpoint directly; delivered as it is.
    pub const ENDPOINT_DIRECT: u32 = 16;
    /// A new flow sent to the backend its client's session affinity names
    /// (`port_policy::AFFINITY`).
    pub const AFFINITY: u32 = 17;
    /// A one-way UDP flow's cookie sent to its client's node
    /// (`flags::NOTIFY`; [`super::reverse_state`]).
    pub const NOTIFY_SENT: u32 = 18;
    /// Such a cookie learned on the client's node.
    pub const NOTIFY_LEARNED: u32 = 19;
    /// A backend's TCP segment to an outside client with its TSval stamped
    /// with the flow's cookie ([`super::ts_flags`]).
    pub const TS_STAMPED: u32 = 20;
    /// An outside client's TCP segment with its TSecr (an echo of a
    /// stamped TSval) restored before the backend sees it.
    pub const TS_RESTORED: u32 = 21;
    /// Size of the array.
    pub const COUNT: u32 = 22;
    /// Metric names, in index order.
    pub const NAMES: [&str; COUNT as usize] = [
        "encap",
        "decap",
        "cache_hit",
        "cache_miss",
        "cookie_learn",
        "reverse_learn",
        "reverse_nat",
        "flow_reset",
        "port_subst",
        "fragment_nat",
        "cookie_refused",
        "rejected",
        "icmp_relay",
        "preferred",
        "request_fragment",
        "endpoint_reply",
        "endpoint_direct",
        "affinity",
        "notify_sent",
        "notify_learned",
        "ts_stamped",
        "ts_restored",
    ];
}

/// [`ReverseEntry::state`]: a UDP flow whose client's node has no cookie
/// (its requests come as new flows) and whose backend has not replied is
/// one-way; after [`reverse_state::NOTIFY_AFTER`] such requests the
/// backend's node tells the client's node the cookie (`flags::NOTIFY`), so
/// that the flow keeps its backend when the buckets move.
pub mod reverse_state {
    /// Requests without a cookie counted so far (saturating).
    pub const REQUESTS: u8 = 0x03;
    /// The request whose arrival sends the notification: the third, so
    /// that a DNS client's two queries (A and AAAA from one port) before
    /// the first answer send none.
    pub const NOTIFY_AFTER: u8 = 3;
    /// The backend replied: its replies carry the cookie.
    pub const REPLIED: u8 = 0x40;
    /// The cookie was sent (once per flow).
    pub const NOTIFIED: u8 = 0x80;
}

/// `fin_seen` bit: FIN sent by the pod that opened the flow (client side:
/// the client; backend side: the client, seen on the uplink).
pub const FIN_FROM_CLIENT: u8 = 0x01;
/// `fin_seen` bit: FIN sent towards the client (by the backend).
pub const FIN_FROM_BACKEND: u8 = 0x02;
/// `fin_seen` bit: the backend closed actively, or at the same time as the
/// client (its FIN does not acknowledge the client's, though that went by
/// first), so it holds the connection in TIME_WAIT (and the 4-tuple with
/// it); after a client's active close it holds nothing.
pub const FIN_BACKEND_FIRST: u8 = 0x04;

/// `fin_seen` bit: after both FINs, the client's first, the client
/// acknowledged the backend's: the backend's connection is closed. Until
/// then it is in LAST_ACK, and it would answer a SYN on the 4-tuple with
/// an ACK (the client then resets, and waits a second to retry).
pub const FIN_ACKED: u8 = 0x08;

/// Whether a flow entry's `fin_seen` has FINs both ways: the connection is
/// over. Its entry stays a while (stragglers; on the backend side the
/// backend's TIME_WAIT) but no longer counts against its pod's share, which
/// bounds open connections.
#[inline(always)]
pub const fn finished(fin_seen: u8) -> bool {
    fin_seen & (FIN_FROM_CLIENT | FIN_FROM_BACKEND) == FIN_FROM_CLIENT | FIN_FROM_BACKEND
}

/// Whether a finished flow's 4-tuple may go to another flow at once: the
/// client closed first, so the backend kept no TIME_WAIT for it, and the
/// backend's connection is gone ([`FIN_ACKED`]).
#[inline(always)]
pub const fn reusable(fin_seen: u8) -> bool {
    finished(fin_seen) && fin_seen & (FIN_BACKEND_FIRST | FIN_ACKED) == FIN_ACKED
}

pod! {
    Ipv4LpmKey = 8,
    Ipv6LpmKey = 20,
    RouteValue = 16,
    ServiceKey = 8,
    ServiceValue = 8,
    ServiceScopedKey = 8,
    BucketValue = 4,
    BackendValue = 12,
    NodeValue = 4,
    TunnelPeerKey = 8,
    EndpointReplyKey = 12,
    EndpointReplyValue = 8,
    TsCookieKey = 4,
    TsCookieValue = 4,
    PacketBytes = 16,
    FlowKey = 16,
    CookieEntry = 16,
    ReverseEntry = 32,
    PortSubstKey = 20,
    PodFlows = 16,
    FragKey = 12,
    FragEntry = 12,
    RequestFragEntry = 12,
    PodEntry = 16,
    ServiceAddr = 8,
    PortPolicy = 72,
    AffinityKey = 8,
    AffinityEntry = 16,
    AffinityBackend = 8,
    NodeConfig = 40,
    NodeTsCookie = 24,
}

/// `NODE_MTU` (an `Array<u32>` of [`mtu::COUNT`] elements): path MTU
/// settings written by the agent.
pub mod mtu {
    /// Element: the uplink's L3 MTU in bytes. An encapsulated packet (or
    /// every GSO segment of it) must fit in it. 0 = no check.
    pub const UPLINK_MTU: u32 = 0;
    /// Number of elements.
    pub const COUNT: u32 = 1;
}

/// `NODE_FLAGS` (an `Array<u32>` of [`node_flags::COUNT`] elements):
/// switches of the data path written by the agent; 0 is the default.
pub mod node_flags {
    /// Element: non-zero = learn no cookies, so every packet of a flow
    /// leaves as a new flow and the switch balances it by hash alone. For
    /// experiments (the lab's hash-only consistency variant), never for
    /// production: established flows then move when the pool changes.
    pub const IGNORE_COOKIES: u32 = 0;
    /// Element: the most entries one local pod may hold in each flow table
    /// ([`super::PodFlows`]); 0 = no limit.
    pub const POD_FLOW_LIMIT: u32 = 1;
    /// Number of elements.
    pub const COUNT: u32 = 2;
}

/// Indexes of `NODE_MTU_STATS` (a per-CPU `u64` array): what the MTU check
/// did.
pub mod mtu_stat {
    /// A pod's packet did not fit the uplink once encapsulated and had DF
    /// set: it was turned into an ICMP fragmentation-needed error (type 3
    /// code 4, next-hop MTU = uplink MTU − 48) and sent back to the pod.
    pub const FRAG_NEEDED: u32 = 0;
    /// Dropped: too big once encapsulated, DF clear (nothing may fragment
    /// it: fragments cannot be load-balanced).
    pub const TOO_BIG_NO_DF: u32 = 1;
    /// Dropped: an ICMP error that is too big once encapsulated (an ICMP
    /// error is never answered with another one).
    pub const TOO_BIG_ICMP: u32 = 2;
    /// Size of the array.
    pub const COUNT: u32 = 3;
    /// Names, in index order (metrics: `frag_needed` is an event, the
    /// other two are drop reasons).
    pub const NAMES: [&str; COUNT as usize] = ["frag_needed", "too_big_no_df", "too_big_icmp"];
}
