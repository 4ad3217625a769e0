//! The P4 program's control-plane surface: every table, action and counter of
//! `p4/talaria.p4`, with its P4Info name, id and size, the key fields and
//! action parameters with their widths.
//!
//! Must match `p4/talaria.p4`, `p4/constants.p4` and
//! `p4/talaria.p4info.txtpb`; `tests/tests/p4_consistency.rs` checks all
//! three against this module.
//!
//! Ids are fixed in the P4 source with `@id` annotations that already carry
//! the P4Runtime type prefix ([`ID_PREFIX_TABLE`] and friends), which p4c
//! copies into the P4Info unchanged. Clients should still resolve names to
//! ids from the P4Info the target reports (the P4Runtime way) and may use
//! these as a cross-check.
//!
//! Byte order: P4Runtime carries every key field and action parameter as a
//! big-endian byte string of `ceil(bitwidth / 8)` bytes, whatever the type.

/// P4Runtime id prefix (top byte) of actions.
pub const ID_PREFIX_ACTION: u8 = 0x01;
/// P4Runtime id prefix (top byte) of tables.
pub const ID_PREFIX_TABLE: u8 = 0x02;
/// P4Runtime id prefix (top byte) of indirect counters.
pub const ID_PREFIX_COUNTER: u8 = 0x12;
/// P4Runtime id prefix (top byte) of direct counters.
pub const ID_PREFIX_DIRECT_COUNTER: u8 = 0x13;

/// The P4 architecture the program is written for (P4Info `pkg_info.arch`).
pub const ARCH: &str = "v1model";

/// The control every table, action and counter lives in; the first
/// component of their P4Info names.
pub const INGRESS_CONTROL: &str = "TalariaIngress";

/// The P4Info id of the object of type `prefix` numbered `n` (1-based): what
/// p4c emits for `@id(n)` or `@id(prefix << 24 | n)`.
pub const fn p4info_id(prefix: u8, n: u32) -> u32 {
    ((prefix as u32) << 24) | (n & 0x00ff_ffff)
}

/// Must match `const bit<32> IPV4_ROUTE_SIZE` in p4/constants.p4.
pub const IPV4_ROUTE_SIZE: u32 = 1024;
/// Must match `const bit<32> SWITCH_ADDR_SIZE` in p4/constants.p4.
pub const SWITCH_ADDR_SIZE: u32 = 16;
/// Must match `const bit<32> SERVICE_V4_SIZE` in p4/constants.p4.
pub const SERVICE_V4_SIZE: u32 = 65536;
/// Must match `const bit<32> COOKIE_CHECK_SIZE` in p4/constants.p4.
pub const COOKIE_CHECK_SIZE: u32 = 262_144;
/// Must match `const bit<32> LB_BUCKET_SIZE` in p4/constants.p4.
pub const LB_BUCKET_SIZE: u32 = 1_048_576;
/// Must match `const bit<32> BACKEND_SIZE` in p4/constants.p4.
pub const BACKEND_SIZE: u32 = 262_144;
/// Must match `const bit<32> POD_NODE_SIZE` in p4/constants.p4.
pub const POD_NODE_SIZE: u32 = 1024;
/// Size of `service_counter`: the whole 16-bit service id space. Must match
/// `const bit<32> SERVICE_COUNTER_SIZE` in p4/constants.p4.
pub const SERVICE_COUNTER_SIZE: u32 = 65536;
/// Size of `drop_counter`. Must match `const bit<32> DROP_REASON_COUNT` in
/// p4/constants.p4.
pub const DROP_COUNTER_SIZE: u32 = crate::drop::DROP_REASON_COUNT;
/// Size of `lb_event_counter`. Must match `const bit<32> LB_EVENT_COUNT` in
/// p4/constants.p4.
pub const LB_EVENT_COUNTER_SIZE: u32 = crate::drop::LB_EVENT_COUNT;

/// How a key field is matched (the P4 `match_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchKind {
    /// `exact`.
    Exact,
    /// `lpm`: longest prefix match.
    Lpm,
}

impl MatchKind {
    /// The P4 `match_kind` name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Lpm => "lpm",
        }
    }

    /// The P4Info `MatchField.MatchType` enum value.
    pub const fn p4info_value(self) -> i32 {
        match self {
            Self::Exact => 2,
            Self::Lpm => 3,
        }
    }
}

/// A table key field. Its P4Info match field id is its position + 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyField {
    /// The P4Info match field name (the key's `@name`).
    pub name: &'static str,
    pub bitwidth: u32,
    pub match_kind: MatchKind,
}

/// An action parameter. Its P4Info param id is its position + 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Param {
    pub name: &'static str,
    pub bitwidth: u32,
}

/// Where a table may use an action (P4Info `ActionRef.scope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionScope {
    /// In entries and as the default action.
    TableAndDefault,
    /// Only as the default action (`@defaultonly`).
    DefaultOnly,
}

/// An action a table may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ActionRef {
    pub action: Action,
    pub scope: ActionScope,
}

const fn both(action: Action) -> ActionRef {
    ActionRef {
        action,
        scope: ActionScope::TableAndDefault,
    }
}

const fn default_only(action: Action) -> ActionRef {
    ActionRef {
        action,
        scope: ActionScope::DefaultOnly,
    }
}

const fn exact(name: &'static str, bitwidth: u32) -> KeyField {
    KeyField {
        name,
        bitwidth,
        match_kind: MatchKind::Exact,
    }
}

const fn lpm(name: &'static str, bitwidth: u32) -> KeyField {
    KeyField {
        name,
        bitwidth,
        match_kind: MatchKind::Lpm,
    }
}

const fn param(name: &'static str, bitwidth: u32) -> Param {
    Param { name, bitwidth }
}

/// Every table of `control TalariaIngress` in p4/talaria.p4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum Table {
    /// Must match `table ipv4_route` in p4/talaria.p4: LPM routing of every
    /// IPv4 packet the switch sends on.
    Ipv4Route,
    /// Must match `table switch_addr` in p4/talaria.p4: this switch's
    /// tunnel addresses.
    SwitchAddr,
    /// Must match `table service_v4` in p4/talaria.p4: (VIP, port, proto)
    /// to service.
    ServiceV4,
    /// Must match `table cookie_check` in p4/talaria.p4: the (service,
    /// backend) pairs a cookie may name.
    CookieCheck,
    /// Must match `table lb_bucket` in p4/talaria.p4: (service, bucket) to
    /// backend id.
    LbBucket,
    /// Must match `table backend` in p4/talaria.p4: backend id to pod
    /// address, port and node.
    Backend,
    /// Must match `table pod_node` in p4/talaria.p4: client pod address
    /// (LPM) to its node, for replies.
    PodNode,
}

impl Table {
    /// Every table, in P4 declaration (and P4Info) order.
    pub const ALL: [Table; 7] = [
        Self::Ipv4Route,
        Self::SwitchAddr,
        Self::ServiceV4,
        Self::CookieCheck,
        Self::LbBucket,
        Self::Backend,
        Self::PodNode,
    ];

    /// The full P4Info name, `TalariaIngress.<alias>`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ipv4Route => "TalariaIngress.ipv4_route",
            Self::SwitchAddr => "TalariaIngress.switch_addr",
            Self::ServiceV4 => "TalariaIngress.service_v4",
            Self::CookieCheck => "TalariaIngress.cookie_check",
            Self::LbBucket => "TalariaIngress.lb_bucket",
            Self::Backend => "TalariaIngress.backend",
            Self::PodNode => "TalariaIngress.pod_node",
        }
    }

    /// The P4Info alias: the name without the control.
    pub const fn alias(self) -> &'static str {
        match self {
            Self::Ipv4Route => "ipv4_route",
            Self::SwitchAddr => "switch_addr",
            Self::ServiceV4 => "service_v4",
            Self::CookieCheck => "cookie_check",
            Self::LbBucket => "lb_bucket",
            Self::Backend => "backend",
            Self::PodNode => "pod_node",
        }
    }

    /// The P4Info id (`@id` in p4/talaria.p4).
    pub const fn id(self) -> u32 {
        let n = match self {
            Self::Ipv4Route => 1,
            Self::SwitchAddr => 2,
            Self::ServiceV4 => 3,
            Self::CookieCheck => 4,
            Self::LbBucket => 5,
            Self::Backend => 6,
            Self::PodNode => 7,
        };
        p4info_id(ID_PREFIX_TABLE, n)
    }

    /// The table size (maximum entries); the switch-agent sizes the BPF map
    /// behind the table with it.
    pub const fn size(self) -> u32 {
        match self {
            Self::Ipv4Route => IPV4_ROUTE_SIZE,
            Self::SwitchAddr => SWITCH_ADDR_SIZE,
            Self::ServiceV4 => SERVICE_V4_SIZE,
            Self::CookieCheck => COOKIE_CHECK_SIZE,
            Self::LbBucket => LB_BUCKET_SIZE,
            Self::Backend => BACKEND_SIZE,
            Self::PodNode => POD_NODE_SIZE,
        }
    }

    /// The key fields, in key order.
    pub const fn key(self) -> &'static [KeyField] {
        match self {
            Self::Ipv4Route => KEY_IPV4_ROUTE,
            Self::SwitchAddr => KEY_SWITCH_ADDR,
            Self::ServiceV4 => KEY_SERVICE_V4,
            Self::CookieCheck => KEY_COOKIE_CHECK,
            Self::LbBucket => KEY_LB_BUCKET,
            Self::Backend => KEY_BACKEND,
            Self::PodNode => KEY_POD_NODE,
        }
    }

    /// The actions the table may run, in the order of its `actions` list.
    pub const fn actions(self) -> &'static [ActionRef] {
        match self {
            Self::Ipv4Route => ACTIONS_IPV4_ROUTE,
            Self::SwitchAddr => ACTIONS_SWITCH_ADDR,
            Self::ServiceV4 => ACTIONS_SERVICE_V4,
            Self::CookieCheck => ACTIONS_COOKIE_CHECK,
            Self::LbBucket => ACTIONS_LB_BUCKET,
            Self::Backend => ACTIONS_BACKEND,
            Self::PodNode => ACTIONS_POD_NODE,
        }
    }

    /// The initial default action (a plain, not `const`, `default_action`
    /// without arguments).
    pub const fn default_action(self) -> Action {
        match self {
            Self::Ipv4Route => Action::Drop,
            Self::SwitchAddr => Action::Transit,
            Self::ServiceV4 => Action::ServiceMiss,
            Self::CookieCheck => Action::CookieStale,
            Self::LbBucket => Action::BucketMiss,
            Self::Backend => Action::BackendMiss,
            Self::PodNode => Action::PodNodeMiss,
        }
    }

    /// The direct counter attached to the table, if any.
    pub const fn direct_counter(self) -> Option<DirectCounter> {
        match self {
            Self::Backend => Some(DirectCounter::Backend),
            _ => None,
        }
    }

    /// Whether the table may run the action with P4Info id `action_id`: in
    /// its default entry (`default_entry`) or in a match entry (any action
    /// not `@defaultonly`).
    pub const fn allows_action_id(self, action_id: u32, default_entry: bool) -> bool {
        let refs = self.actions();
        let mut i = 0;
        while i < refs.len() {
            if refs[i].action.id() == action_id {
                return default_entry || matches!(refs[i].scope, ActionScope::TableAndDefault);
            }
            i += 1;
        }
        false
    }

    /// The P4Info match field id of key field `name`.
    pub fn key_field_id(self, name: &str) -> Option<u32> {
        position_id(self.key().iter().map(|k| k.name), name)
    }

    /// The table with P4Info name or alias `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == name || t.alias() == name)
    }

    /// The table with P4Info id `id`.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.id() == id)
    }
}

/// Every action of `control TalariaIngress` in p4/talaria.p4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum Action {
    /// Must match `action forward` in p4/talaria.p4 (`ipv4_route`).
    Forward,
    /// Must match `action drop` in p4/talaria.p4 (`ipv4_route`; counted as
    /// no_route).
    Drop,
    /// Must match `action terminate_tunnel` in p4/talaria.p4 (`switch_addr`).
    TerminateTunnel,
    /// Must match `action transit` in p4/talaria.p4 (`switch_addr` default).
    Transit,
    /// Must match `action set_service` in p4/talaria.p4 (`service_v4`).
    SetService,
    /// Must match `action service_miss` in p4/talaria.p4 (`service_v4`
    /// default).
    ServiceMiss,
    /// Must match `action cookie_valid` in p4/talaria.p4 (`cookie_check`).
    CookieValid,
    /// Must match `action cookie_stale` in p4/talaria.p4 (`cookie_check`
    /// default).
    CookieStale,
    /// Must match `action select_backend` in p4/talaria.p4 (`lb_bucket`).
    SelectBackend,
    /// Must match `action bucket_miss` in p4/talaria.p4 (`lb_bucket`
    /// default).
    BucketMiss,
    /// Must match `action set_backend` in p4/talaria.p4 (`backend`).
    SetBackend,
    /// Must match `action backend_miss` in p4/talaria.p4 (`backend` default).
    BackendMiss,
    /// Must match `action set_client_node` in p4/talaria.p4 (`pod_node`).
    SetClientNode,
    /// Must match `action pod_node_miss` in p4/talaria.p4 (`pod_node`
    /// default).
    PodNodeMiss,
}

impl Action {
    /// Every action, in P4 declaration (and P4Info) order.
    pub const ALL: [Action; 14] = [
        Self::Forward,
        Self::Drop,
        Self::TerminateTunnel,
        Self::Transit,
        Self::SetService,
        Self::ServiceMiss,
        Self::CookieValid,
        Self::CookieStale,
        Self::SelectBackend,
        Self::BucketMiss,
        Self::SetBackend,
        Self::BackendMiss,
        Self::SetClientNode,
        Self::PodNodeMiss,
    ];

    /// The full P4Info name, `TalariaIngress.<alias>`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Forward => "TalariaIngress.forward",
            Self::Drop => "TalariaIngress.drop",
            Self::TerminateTunnel => "TalariaIngress.terminate_tunnel",
            Self::Transit => "TalariaIngress.transit",
            Self::SetService => "TalariaIngress.set_service",
            Self::ServiceMiss => "TalariaIngress.service_miss",
            Self::CookieValid => "TalariaIngress.cookie_valid",
            Self::CookieStale => "TalariaIngress.cookie_stale",
            Self::SelectBackend => "TalariaIngress.select_backend",
            Self::BucketMiss => "TalariaIngress.bucket_miss",
            Self::SetBackend => "TalariaIngress.set_backend",
            Self::BackendMiss => "TalariaIngress.backend_miss",
            Self::SetClientNode => "TalariaIngress.set_client_node",
            Self::PodNodeMiss => "TalariaIngress.pod_node_miss",
        }
    }

    /// The P4Info alias: the name without the control.
    pub const fn alias(self) -> &'static str {
        match self {
            Self::Forward => "forward",
            Self::Drop => "drop",
            Self::TerminateTunnel => "terminate_tunnel",
            Self::Transit => "transit",
            Self::SetService => "set_service",
            Self::ServiceMiss => "service_miss",
            Self::CookieValid => "cookie_valid",
            Self::CookieStale => "cookie_stale",
            Self::SelectBackend => "select_backend",
            Self::BucketMiss => "bucket_miss",
            Self::SetBackend => "set_backend",
            Self::BackendMiss => "backend_miss",
            Self::SetClientNode => "set_client_node",
            Self::PodNodeMiss => "pod_node_miss",
        }
    }

    /// The P4Info id (`@id` in p4/talaria.p4).
    pub const fn id(self) -> u32 {
        let n = match self {
            Self::Forward => 1,
            Self::Drop => 2,
            Self::TerminateTunnel => 3,
            Self::Transit => 4,
            Self::SetService => 5,
            Self::ServiceMiss => 6,
            Self::CookieValid => 7,
            Self::CookieStale => 8,
            Self::SelectBackend => 9,
            Self::BucketMiss => 10,
            Self::SetBackend => 11,
            Self::BackendMiss => 12,
            Self::SetClientNode => 13,
            Self::PodNodeMiss => 14,
        };
        p4info_id(ID_PREFIX_ACTION, n)
    }

    /// The parameters, in declaration order.
    pub const fn params(self) -> &'static [Param] {
        match self {
            Self::Forward => PARAMS_FORWARD,
            Self::SetService => PARAMS_SET_SERVICE,
            Self::SelectBackend => PARAMS_SELECT_BACKEND,
            Self::SetBackend => PARAMS_SET_BACKEND,
            Self::SetClientNode => PARAMS_SET_CLIENT_NODE,
            Self::Drop
            | Self::TerminateTunnel
            | Self::Transit
            | Self::ServiceMiss
            | Self::CookieValid
            | Self::CookieStale
            | Self::BucketMiss
            | Self::BackendMiss
            | Self::PodNodeMiss => &[],
        }
    }

    /// The P4Info param id of parameter `name`.
    pub fn param_id(self, name: &str) -> Option<u32> {
        position_id(self.params().iter().map(|p| p.name), name)
    }

    /// The action with P4Info name or alias `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == name || a.alias() == name)
    }

    /// The action with P4Info id `id`.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.id() == id)
    }
}

/// What a counter counts (P4Info `CounterSpec.Unit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CounterUnit {
    /// `CounterType.packets`.
    Packets,
    /// `CounterType.packets_and_bytes`.
    Both,
}

impl CounterUnit {
    /// The P4Info `CounterSpec.Unit` enum value.
    pub const fn p4info_value(self) -> i32 {
        match self {
            Self::Packets => 2,
            Self::Both => 3,
        }
    }
}

/// Every indirect counter (counter array) of `control TalariaIngress`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum Counter {
    /// Must match `counter(...) service_counter` in p4/talaria.p4: packets
    /// and bytes client to service, index = service id.
    Service,
    /// Must match `counter(...) drop_counter` in p4/talaria.p4: index =
    /// [`crate::drop::DropReason::code`].
    Drop,
    /// Must match `counter(...) lb_event_counter` in p4/talaria.p4: index =
    /// [`crate::drop::LbEvent`] as `u8`.
    LbEvent,
}

impl Counter {
    /// Every counter, in P4 declaration (and P4Info) order.
    pub const ALL: [Counter; 3] = [Self::Service, Self::Drop, Self::LbEvent];

    /// The full P4Info name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Service => "TalariaIngress.service_counter",
            Self::Drop => "TalariaIngress.drop_counter",
            Self::LbEvent => "TalariaIngress.lb_event_counter",
        }
    }

    /// The P4Info alias.
    pub const fn alias(self) -> &'static str {
        match self {
            Self::Service => "service_counter",
            Self::Drop => "drop_counter",
            Self::LbEvent => "lb_event_counter",
        }
    }

    /// The P4Info id (`@id` in p4/talaria.p4).
    pub const fn id(self) -> u32 {
        let n = match self {
            Self::Service => 1,
            Self::Drop => 2,
            Self::LbEvent => 3,
        };
        p4info_id(ID_PREFIX_COUNTER, n)
    }

    /// The number of cells.
    pub const fn size(self) -> u32 {
        match self {
            Self::Service => SERVICE_COUNTER_SIZE,
            Self::Drop => DROP_COUNTER_SIZE,
            Self::LbEvent => LB_EVENT_COUNTER_SIZE,
        }
    }

    pub const fn unit(self) -> CounterUnit {
        match self {
            Self::Service => CounterUnit::Both,
            Self::Drop | Self::LbEvent => CounterUnit::Packets,
        }
    }

    /// The counter with P4Info name or alias `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == name || c.alias() == name)
    }

    /// The counter with P4Info id `id`.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.id() == id)
    }
}

/// Every direct counter (one cell per table entry) of `control
/// TalariaIngress`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum DirectCounter {
    /// Must match `direct_counter(...) backend_counter` in p4/talaria.p4:
    /// packets and bytes per `backend` entry.
    Backend,
}

impl DirectCounter {
    /// Every direct counter, in P4 declaration (and P4Info) order.
    pub const ALL: [DirectCounter; 1] = [Self::Backend];

    /// The full P4Info name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Backend => "TalariaIngress.backend_counter",
        }
    }

    /// The P4Info alias.
    pub const fn alias(self) -> &'static str {
        match self {
            Self::Backend => "backend_counter",
        }
    }

    /// The P4Info id (`@id` in p4/talaria.p4).
    pub const fn id(self) -> u32 {
        match self {
            Self::Backend => p4info_id(ID_PREFIX_DIRECT_COUNTER, 1),
        }
    }

    pub const fn unit(self) -> CounterUnit {
        match self {
            Self::Backend => CounterUnit::Both,
        }
    }

    /// The table whose entries it counts.
    pub const fn table(self) -> Table {
        match self {
            Self::Backend => Table::Backend,
        }
    }

    /// The direct counter with P4Info name or alias `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == name || c.alias() == name)
    }

    /// The direct counter with P4Info id `id`.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.id() == id)
    }
}

// Keys, action lists and parameters, one constant per table or action so
// that the `const fn`s above can hand out `'static` slices.

const KEY_IPV4_ROUTE: &[KeyField] = &[lpm("dst_addr", 32)];
const KEY_SWITCH_ADDR: &[KeyField] = &[exact("dst_addr", 32)];
const KEY_SERVICE_V4: &[KeyField] = &[exact("vip", 32), exact("port", 16), exact("proto", 8)];
const KEY_COOKIE_CHECK: &[KeyField] = &[exact("service_id", 16), exact("backend_id", 32)];
const KEY_LB_BUCKET: &[KeyField] = &[exact("service_id", 16), exact("bucket", 16)];
const KEY_BACKEND: &[KeyField] = &[exact("backend_id", 32)];
const KEY_POD_NODE: &[KeyField] = &[lpm("pod_addr", 32)];

const ACTIONS_IPV4_ROUTE: &[ActionRef] = &[both(Action::Forward), both(Action::Drop)];
const ACTIONS_SWITCH_ADDR: &[ActionRef] =
    &[both(Action::TerminateTunnel), default_only(Action::Transit)];
const ACTIONS_SERVICE_V4: &[ActionRef] =
    &[both(Action::SetService), default_only(Action::ServiceMiss)];
const ACTIONS_COOKIE_CHECK: &[ActionRef] =
    &[both(Action::CookieValid), default_only(Action::CookieStale)];
const ACTIONS_LB_BUCKET: &[ActionRef] = &[
    both(Action::SelectBackend),
    default_only(Action::BucketMiss),
];
const ACTIONS_BACKEND: &[ActionRef] =
    &[both(Action::SetBackend), default_only(Action::BackendMiss)];
const ACTIONS_POD_NODE: &[ActionRef] = &[
    both(Action::SetClientNode),
    default_only(Action::PodNodeMiss),
];

const PARAMS_FORWARD: &[Param] = &[param("port", 9), param("src_mac", 48), param("dst_mac", 48)];
const PARAMS_SET_SERVICE: &[Param] = &[
    param("service_id", 16),
    param("bucket_mask", 16),
    param("hash_mode", 8),
];
const PARAMS_SELECT_BACKEND: &[Param] = &[param("backend_id", 32)];
const PARAMS_SET_BACKEND: &[Param] = &[
    param("backend_ip", 32),
    param("backend_port", 16),
    param("node_ip", 32),
];
const PARAMS_SET_CLIENT_NODE: &[Param] = &[param("node_ip", 32)];

/// 1-based position of `name` among `names`: P4Info numbers match fields and
/// action parameters that way when they carry no `@id`.
fn position_id<'a>(mut names: impl Iterator<Item = &'a str>, name: &str) -> Option<u32> {
    names.position(|n| n == name).map(|i| i as u32 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_are_unique() {
        let mut ids = [0u32; 7 + 14 + 3 + 1];
        let mut n = 0;
        for t in Table::ALL {
            assert_eq!(t.id() >> 24, u32::from(ID_PREFIX_TABLE), "{t:?}");
            assert_eq!(Table::from_id(t.id()), Some(t));
            assert_eq!(Table::from_name(t.name()), Some(t));
            assert_eq!(Table::from_name(t.alias()), Some(t));
            ids[n] = t.id();
            n += 1;
        }
        for a in Action::ALL {
            assert_eq!(a.id() >> 24, u32::from(ID_PREFIX_ACTION), "{a:?}");
            assert_eq!(Action::from_id(a.id()), Some(a));
            assert_eq!(Action::from_name(a.name()), Some(a));
            ids[n] = a.id();
            n += 1;
        }
        for c in Counter::ALL {
            assert_eq!(c.id() >> 24, u32::from(ID_PREFIX_COUNTER), "{c:?}");
            assert_eq!(Counter::from_id(c.id()), Some(c));
            ids[n] = c.id();
            n += 1;
        }
        for c in DirectCounter::ALL {
            assert_eq!(c.id() >> 24, u32::from(ID_PREFIX_DIRECT_COUNTER), "{c:?}");
            assert_eq!(DirectCounter::from_id(c.id()), Some(c));
            ids[n] = c.id();
            n += 1;
        }
        assert_eq!(n, ids.len());
        ids.sort_unstable();
        assert!(ids.windows(2).all(|w| w[0] != w[1]), "duplicate id");
    }

    #[test]
    fn names_are_control_dot_alias() {
        let check = |name: &str, alias: &str| {
            assert_eq!(name.strip_prefix("TalariaIngress."), Some(alias));
        };
        Table::ALL.iter().for_each(|t| check(t.name(), t.alias()));
        Action::ALL.iter().for_each(|a| check(a.name(), a.alias()));
        Counter::ALL.iter().for_each(|c| check(c.name(), c.alias()));
        DirectCounter::ALL
            .iter()
            .for_each(|c| check(c.name(), c.alias()));
    }

    #[test]
    fn tables_are_self_consistent() {
        for t in Table::ALL {
            let d = t.default_action();
            assert!(t.allows_action_id(d.id(), true), "{t:?} default {d:?}");
            assert!(
                d.params().is_empty(),
                "{t:?}: default actions take no arguments"
            );
            for (i, k) in t.key().iter().enumerate() {
                assert_eq!(t.key_field_id(k.name), Some(i as u32 + 1));
            }
            if let Some(c) = t.direct_counter() {
                assert_eq!(c.table(), t);
            }
        }
        assert!(Table::ServiceV4.allows_action_id(Action::SetService.id(), false));
        assert!(!Table::ServiceV4.allows_action_id(Action::ServiceMiss.id(), false));
        assert!(!Table::ServiceV4.allows_action_id(Action::Forward.id(), true));
        assert_eq!(Action::SetBackend.param_id("node_ip"), Some(3));
        assert_eq!(Action::SetBackend.param_id("nope"), None);
    }

    #[test]
    fn counters_cover_their_index_space() {
        for r in crate::drop::DropReason::ALL {
            assert!(u32::from(r.code()) < Counter::Drop.size());
        }
        for e in crate::drop::LbEvent::ALL {
            assert!((e as u32) < Counter::LbEvent.size());
        }
        assert_eq!(Counter::Service.size(), 1 << 16);
    }
}
