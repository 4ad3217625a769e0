//! The loaded node programs and their maps.

use std::{
    collections::{BTreeSet, HashMap as StdHashMap},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use aya::{
    maps::{lpm_trie, Array, HashMap, LpmTrie, Map, MapData, PerCpuArray},
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        tc::{SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    sys::SyscallError,
    Ebpf, EbpfLoader,
};
use talaria_common::{
    be::Be16,
    drop::{DropReason, DROP_REASON_COUNT},
    maps::{
        finished, mtu, mtu_stat, node_flags, node_stat, AffinityBackend, BackendKey, CookieEntry,
        FlowKey, FlowKey6, NodeConfig, NodeTsCookie, PodEntry, PodFlows, PortPolicy, PortSubstKey,
        PortSubstKey6, ReverseEntry, ReverseEntry6, ReverseFlow, ServiceAddr, ServiceAddr6,
        ServiceKey, FIN_BACKEND_FIRST, PENDING_BACKEND,
    },
    net::IPPROTO_UDP,
    ts_cookie::CookieKey,
};

use crate::{
    config::{Cidr, ServiceConfig, ServiceValue},
    Error, Result, EBPF_OBJECT,
};

/// Program on the ingress of each pod's host-side veth.
pub const PROG_POD: &str = "node_pod_egress";
/// Program on the ingress of the uplink.
pub const PROG_UPLINK: &str = "node_uplink_ingress";
/// Program on the egress of the uplink: the node's own clients.
pub const PROG_HOST: &str = "node_host_egress";

/// Which side of its interface `prog` hooks.
fn attach_type(prog: &str) -> TcAttachType {
    if prog == PROG_HOST {
        TcAttachType::Egress
    } else {
        TcAttachType::Ingress
    }
}

/// Map names (also their pin file names).
pub const MAP_COOKIES: &str = "NODE_COOKIES";
pub const MAP_REVERSE: &str = "NODE_REVERSE";
pub const MAP_PODS: &str = "NODE_PODS";
pub const MAP_PODS_V6: &str = "NODE_PODS_V6";
pub const MAP_SVC_CIDRS: &str = "NODE_SVC_CIDRS";
pub const MAP_SERVICES: &str = "NODE_SERVICES";
pub const MAP_PORT_POLICY: &str = "NODE_PORT_POLICY";
pub const MAP_AFFINITY_BACKENDS: &str = "NODE_AFFINITY_BACKENDS";
pub const MAP_CONFIG: &str = "NODE_CONFIG";
pub const MAP_STATS: &str = "NODE_STATS";
pub const MAP_DROPS: &str = "NODE_DROPS";
pub const MAP_MTU: &str = "NODE_MTU";
pub const MAP_FLAGS: &str = "NODE_FLAGS";
pub const MAP_MTU_STATS: &str = "NODE_MTU_STATS";
pub const MAP_PORT_SUBST: &str = "NODE_PORT_SUBST";
pub const MAP_POD_FLOWS: &str = "NODE_POD_FLOWS";
pub const MAP_TS_COOKIE: &str = "NODE_TS_COOKIE";
pub const MAP_SVC_CIDRS_V6: &str = "NODE_SVC_CIDRS_V6";
pub const MAP_SERVICES_V6: &str = "NODE_SERVICES_V6";
pub const MAP_PORT_POLICY_V6: &str = "NODE_PORT_POLICY_V6";
pub const MAP_COOKIES_V6: &str = "NODE_COOKIES_V6";
pub const MAP_REVERSE_V6: &str = "NODE_REVERSE_V6";
pub const MAP_PORT_SUBST_V6: &str = "NODE_PORT_SUBST_V6";

/// Counters summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Indexed by `node_stat`.
    pub events: Vec<(&'static str, u64)>,
    /// Every drop reason with its count.
    pub drops: Vec<(DropReason, u64)>,
    /// The MTU check's counters, indexed by [`mtu_stat`].
    pub mtu: Vec<(&'static str, u64)>,
}

impl Stats {
    /// An event counter by `node_stat` index.
    pub fn event(&self, idx: u32) -> u64 {
        self.events.get(idx as usize).map_or(0, |e| e.1)
    }

    /// A drop counter.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.iter().find(|d| d.0 == reason).map_or(0, |d| d.1)
    }

    /// An MTU check counter by [`mtu_stat`] index.
    pub fn mtu_event(&self, idx: u32) -> u64 {
        self.mtu.get(idx as usize).map_or(0, |e| e.1)
    }

    /// Reads the three per-CPU counter maps (events, drops, MTU check).
    pub fn read(stats: &Map, drops: &Map, mtu: &Map) -> Result<Self> {
        let stats: PerCpuArray<_, u64> =
            PerCpuArray::try_from(stats).map_err(|e| Error::map(MAP_STATS, e))?;
        let drops: PerCpuArray<_, u64> =
            PerCpuArray::try_from(drops).map_err(|e| Error::map(MAP_DROPS, e))?;
        let mtu: PerCpuArray<_, u64> =
            PerCpuArray::try_from(mtu).map_err(|e| Error::map(MAP_MTU_STATS, e))?;
        let sum = |m: &PerCpuArray<_, u64>, i: u32, name| -> Result<u64> {
            Ok(m.get(&i, 0).map_err(|e| Error::map(name, e))?.iter().sum())
        };
        let mut out = Self::default();
        for (i, name) in node_stat::NAMES.iter().enumerate() {
            out.events.push((name, sum(&stats, i as u32, MAP_STATS)?));
        }
        for r in DropReason::ALL {
            debug_assert!(u32::from(r.code()) < DROP_REASON_COUNT);
            out.drops
                .push((r, sum(&drops, u32::from(r.code()), MAP_DROPS)?));
        }
        for (i, name) in mtu_stat::NAMES.iter().enumerate() {
            out.mtu.push((name, sum(&mtu, i as u32, MAP_MTU_STATS)?));
        }
        Ok(out)
    }

    /// Reads the counters of a running node from its pinned maps.
    pub fn read_pinned(pin_dir: &Path) -> Result<Self> {
        let stats = open_pinned(pin_dir, MAP_STATS)?;
        let drops = open_pinned(pin_dir, MAP_DROPS)?;
        let mtu = open_pinned(pin_dir, MAP_MTU_STATS)?;
        Self::read(&stats, &drops, &mtu)
    }
}

/// Opens a pinned map of a running node.
pub fn open_pinned(pin_dir: &Path, name: &'static str) -> Result<Map> {
    let data = MapData::from_pin(pin_dir.join(name)).map_err(|e| Error::map(name, e))?;
    Map::from_map_data(data).map_err(|e| Error::map(name, e))
}

/// Number of entries in a pinned flow map whose values are `V`.
pub fn count_pinned<V: aya::Pod>(pin_dir: &Path, name: &'static str) -> Result<usize> {
    let map = open_pinned(pin_dir, name)?;
    let h: HashMap<_, FlowKey, V> = HashMap::try_from(&map).map_err(|e| Error::map(name, e))?;
    Ok(h.keys().filter(|k| k.is_ok()).count())
}

/// The pod addresses in a running node's pinned `NODE_PODS`, with the
/// ifindex of their veth.
pub fn pinned_pods(pin_dir: &Path) -> Result<Vec<(Ipv4Addr, u32)>> {
    let map = open_pinned(pin_dir, MAP_PODS)?;
    let h: HashMap<_, [u8; 4], PodEntry> =
        HashMap::try_from(&map).map_err(|e| Error::map(MAP_PODS, e))?;
    let mut out: Vec<(Ipv4Addr, u32)> = h
        .iter()
        .filter_map(|r| r.ok())
        .map(|(k, v)| (Ipv4Addr::from(k), v.ifindex))
        .collect();
    out.sort();
    Ok(out)
}

/// The services in a running node's pinned `NODE_SERVICES` (id → VIP,
/// port, protocol), sorted by id.
pub fn pinned_services(pin_dir: &Path) -> Result<Vec<(u32, ServiceAddr)>> {
    let map = open_pinned(pin_dir, MAP_SERVICES)?;
    let h: HashMap<_, u32, ServiceAddr> =
        HashMap::try_from(&map).map_err(|e| Error::map(MAP_SERVICES, e))?;
    let mut out: Vec<(u32, ServiceAddr)> = h.iter().filter_map(|r| r.ok()).collect();
    out.sort_by_key(|s| s.0);
    Ok(out)
}

/// The prefixes in a `NODE_SVC_CIDRS` map.
fn service_cidrs_of(map: &Map) -> Result<BTreeSet<Cidr>> {
    let t: LpmTrie<_, [u8; 4], u32> =
        LpmTrie::try_from(map).map_err(|e| Error::map(MAP_SVC_CIDRS, e))?;
    t.keys()
        .map(|k| {
            let k = k.map_err(|e| Error::map(MAP_SVC_CIDRS, e))?;
            // Key::prefix_len is at most 32: the map's keys are 4 bytes.
            Ok((Ipv4Addr::from(k.data()).into(), k.prefix_len() as u8))
        })
        .collect()
}

/// The prefixes in a `NODE_SVC_CIDRS_V6` map.
fn service_cidrs6_of(map: &Map) -> Result<BTreeSet<Cidr>> {
    let t: LpmTrie<_, [u8; 16], u32> =
        LpmTrie::try_from(map).map_err(|e| Error::map(MAP_SVC_CIDRS_V6, e))?;
    t.keys()
        .map(|k| {
            let k = k.map_err(|e| Error::map(MAP_SVC_CIDRS_V6, e))?;
            // At most 128: the map's keys are 16 bytes.
            Ok((Ipv6Addr::from(k.data()).into(), k.prefix_len() as u8))
        })
        .collect()
}

/// The service CIDRs in a running node's pinned `NODE_SVC_CIDRS` and
/// `NODE_SVC_CIDRS_V6`.
pub fn pinned_service_cidrs(pin_dir: &Path) -> Result<BTreeSet<Cidr>> {
    let mut all = service_cidrs_of(&open_pinned(pin_dir, MAP_SVC_CIDRS)?)?;
    all.extend(service_cidrs6_of(&open_pinned(pin_dir, MAP_SVC_CIDRS_V6)?)?);
    Ok(all)
}

/// The IPv6 services in a running node's pinned `NODE_SERVICES_V6`,
/// sorted by id.
pub fn pinned_services_v6(pin_dir: &Path) -> Result<Vec<(u32, ServiceAddr6)>> {
    let map = open_pinned(pin_dir, MAP_SERVICES_V6)?;
    let h: HashMap<_, u32, ServiceAddr6> =
        HashMap::try_from(&map).map_err(|e| Error::map(MAP_SERVICES_V6, e))?;
    let mut out: Vec<(u32, ServiceAddr6)> = h.iter().filter_map(|r| r.ok()).collect();
    out.sort_by_key(|s| s.0);
    Ok(out)
}

/// Number of entries in a pinned IPv6 flow map whose values are `V`.
pub fn count_pinned6<V: aya::Pod>(pin_dir: &Path, name: &'static str) -> Result<usize> {
    let map = open_pinned(pin_dir, name)?;
    let h: HashMap<_, FlowKey6, V> = HashMap::try_from(&map).map_err(|e| Error::map(name, e))?;
    Ok(h.keys().filter(|k| k.is_ok()).count())
}

/// The node programs, loaded, and their maps.
pub struct Node {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    /// Links of an unpinned node, by (program, interface).
    links: StdHashMap<(String, String), SchedClassifierLinkId>,
    /// What [`Node::set_services`] last wrote, so that the next call
    /// writes only what changed (None: read the maps' keys first).
    services_written: Option<ServiceMaps>,
    /// The node's address, from [`Node::set_config`]: the only one whose
    /// nodePorts it steers.
    node_ip: Option<Ipv4Addr>,
}

/// The contents of the maps [`Node::set_services`] owns.
#[derive(Default)]
struct ServiceMaps {
    policies: StdHashMap<ServiceKey, PortPolicy>,
    policies6: StdHashMap<ServiceAddr6, PortPolicy>,
    services: StdHashMap<u32, ServiceAddr>,
    services6: StdHashMap<u32, ServiceAddr6>,
    affinity_backends: StdHashMap<AffinityBackend, u8>,
}

/// Maps the agent rewrites whole at start from its own sources (the local
/// pods): one pinned with another layout is replaced, not refused.
/// (`NODE_PODS_V6` held only an ifindex before IPv6 Services.)
const REBUILT_MAPS: [&str; 1] = [MAP_PODS_V6];

/// Refuses maps pinned in `dir` whose key or value size is not this
/// build's: a talaria-node whose map layouts changed (a new field in a flow
/// entry) must not run on the pins of an older one. aya reuses a map
/// pinned under the name without looking at it, and the verifier would
/// then reject the programs, or userspace would misread the entries.
fn check_pinned_layouts(dir: &Path) -> Result<()> {
    use aya_obj::generated::bpf_map_type::{BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY};
    let obj = aya_obj::Object::parse(EBPF_OBJECT)
        .map_err(|e| Error::Invalid(format!("the node's eBPF object: {e}")))?;
    for (name, def) in &obj.maps {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapData::from_pin(&path)
            .and_then(|m| m.info())
            .map_err(|e| Error::Invalid(format!("pinned map {}: {e}", path.display())))?;
        // An array's length is its index space (counters by code); a hash
        // map's may differ (`flow_table_size` applies to new pins only).
        let array = [BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY]
            .map(|t| t as u32)
            .contains(&def.map_type());
        let layout = |k: u32, v: u32, n: u32| {
            let entries = if array {
                format!(", {n} entries")
            } else {
                String::new()
            };
            format!("{k}-byte keys, {v}-byte values{entries}")
        };
        let pinned = layout(info.key_size(), info.value_size(), info.max_entries());
        let ours = layout(def.key_size(), def.value_size(), def.max_entries());
        if pinned != ours && REBUILT_MAPS.contains(&name.as_str()) {
            // Holds nothing the agent does not write again at start: the
            // old pin goes, and the map is created anew. Programs still
            // attached keep the old map until they are replaced.
            std::fs::remove_file(&path)
                .map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
            tracing::info!(map = %name, %pinned, %ours, "re-pinned a map of another layout");
            continue;
        }
        if pinned != ours {
            return Err(Error::Invalid(format!(
                "pinned map {} has {pinned}, this talaria-node's {name} {ours}: it was pinned \
                 by another version. `talaria-node unpin --pin-dir {}` removes the old pins \
                 (and the flows they hold)",
                path.display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

impl Node {
    /// Loads and verifies both programs. With `pin_dir`, the maps are
    /// pinned there and maps already pinned there are reused, so a
    /// restarted agent keeps every flow. `flow_table_size` sizes the flow
    /// tables.
    pub fn load(pin_dir: Option<&Path>, flow_table_size: u32) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(MAP_COOKIES, flow_table_size)
            .map_max_entries(MAP_REVERSE, flow_table_size)
            .map_max_entries(MAP_COOKIES_V6, flow_table_size)
            .map_max_entries(MAP_REVERSE_V6, flow_table_size);
        // The maps are declared pinned-by-name; without a pin directory they
        // are pinned in a private scratch directory that is removed right
        // after loading (the maps live on as long as this process holds them).
        static SCRATCH: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let scratch = pin_dir.is_none().then(|| {
            let n = SCRATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            PathBuf::from(format!(
                "/sys/fs/bpf/talaria/scratch-{}-{n}",
                std::process::id()
            ))
        });
        let dir = pin_dir.or(scratch.as_deref()).expect("a pin directory");
        crate::sys::ensure_bpffs(dir)?;
        check_pinned_layouts(dir)?;
        loader.default_map_pin_directory(dir);
        let loaded = loader
            .load(EBPF_OBJECT)
            .map_err(|e| Error::Load(Box::new(e)));
        if let Some(dir) = &scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
        let mut ebpf = loaded?;
        for name in [PROG_POD, PROG_UPLINK, PROG_HOST] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| Error::Invalid(format!("no program {name}")))?
                .try_into()
                .map_err(|e| Error::program(name, e))?;
            prog.load().map_err(|e| Error::program(name, e))?;
        }
        Ok(Self {
            ebpf,
            pin_dir: pin_dir.map(Path::to_owned),
            links: Default::default(),
            services_written: None,
            node_ip: None,
        })
    }

    /// A loaded program (for `BPF_PROG_TEST_RUN`).
    pub fn program(&self, name: &str) -> Result<&SchedClassifier> {
        self.ebpf
            .program(name)
            .ok_or_else(|| Error::Invalid(format!("no program {name}")))?
            .try_into()
            .map_err(|e| Error::program(name, e))
    }

    /// [`Node::program`] for attaching and detaching; a function of the
    /// loaded object alone, so the link table stays borrowable meanwhile.
    fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
        ebpf.program_mut(name)
            .ok_or_else(|| Error::Invalid(format!("no program {name}")))?
            .try_into()
            .map_err(|e| Error::program(name, e))
    }

    fn map(&self, name: &'static str) -> Result<&Map> {
        self.ebpf
            .map(name)
            .ok_or_else(|| Error::Invalid(format!("no map {name}")))
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| Error::Invalid(format!("no map {name}")))
    }

    /// Attaches `prog` (one of [`PROG_POD`], [`PROG_UPLINK`], [`PROG_HOST`])
    /// to the TCX ingress (egress for [`PROG_HOST`]) of `ifname`. With a pin directory the link is pinned as
    /// `links/<prog>@<ifname>`: if that pin exists the running program is
    /// replaced atomically (`BPF_LINK_UPDATE`), so packets never see the
    /// hook empty; the link outlives the agent. Without one the link lives
    /// as long as this [`Node`].
    pub fn attach(&mut self, prog: &str, ifname: &str) -> Result<()> {
        let pin = self
            .pin_dir
            .as_ref()
            .map(|d| d.join("links").join(link_pin_name(prog, ifname)));
        let program = Self::program_mut(&mut self.ebpf, prog)?;
        let existing = match &pin {
            Some(path) => match PinnedLink::from_pin(path) {
                Ok(old) => Some(old),
                Err(LinkError::SyscallError(SyscallError { io_error, .. }))
                    if io_error.kind() == io::ErrorKind::NotFound =>
                {
                    None
                }
                Err(e) => return Err(pin_err(path, e)),
            },
            None => None,
        };
        let id = match existing {
            Some(old) => {
                let path = pin.as_ref().expect("pinned");
                let fd_link = old.unpin().map_err(|e| pin_err(path, e))?;
                let link = SchedClassifierLink::try_from(fd_link).map_err(|e| pin_err(path, e))?;
                match program.attach_to_link(link) {
                    Ok(id) => id,
                    // The interface is gone and back (new ifindex): attach anew.
                    Err(_) => program
                        .attach_with_options(
                            ifname,
                            attach_type(prog),
                            TcAttachOptions::TcxOrder(LinkOrder::default()),
                        )
                        .map_err(|e| Error::program(prog, e))?,
                }
            }
            None => program
                .attach_with_options(
                    ifname,
                    attach_type(prog),
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .map_err(|e| Error::program(prog, e))?,
        };
        if let Some(path) = pin {
            let link = program.take_link(id).map_err(|e| Error::program(prog, e))?;
            let fd_link = FdLink::try_from(link).map_err(|e| pin_err(&path, e))?;
            std::fs::create_dir_all(path.parent().expect("links dir"))
                .map_err(|e| Error::io("create links dir", e))?;
            fd_link.pin(&path).map_err(|e| pin_err(&path, e))?;
        } else if let Some(old) = self.links.insert((prog.into(), ifname.into()), id) {
            let _ = program.detach(old);
        }
        Ok(())
    }

    /// Detaches `prog` from `ifname`: removes the pinned link (the pin is
    /// its only reference, so this detaches it), or detaches the link of
    /// an unpinned node. Nothing attached: nothing to do.
    pub fn detach(&mut self, prog: &str, ifname: &str) -> Result<()> {
        if self.pin_dir.is_some() {
            return self.remove_link_pin(&link_pin_name(prog, ifname));
        }
        if let Some(id) = self.links.remove(&(prog.to_string(), ifname.to_string())) {
            let program = Self::program_mut(&mut self.ebpf, prog)?;
            // A deleted interface took its attachment with it.
            let _ = program.detach(id);
        }
        Ok(())
    }

    /// File names of the pinned links (`<prog>@<ifname>`); empty without
    /// a pin directory.
    pub fn pinned_links(&self) -> Result<Vec<String>> {
        let Some(dir) = &self.pin_dir else {
            return Ok(Vec::new());
        };
        match std::fs::read_dir(dir.join("links")) {
            Ok(d) => Ok(d
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io("read links dir", e)),
        }
    }

    /// Removes the pinned link `name` (a file name from
    /// [`Node::pinned_links`]), which detaches it.
    pub fn remove_link_pin(&mut self, name: &str) -> Result<()> {
        let Some(dir) = &self.pin_dir else {
            return Ok(());
        };
        let path = dir.join("links").join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
        }
    }

    /// Writes the node-wide settings.
    pub fn set_config(&mut self, cfg: &NodeConfig) -> Result<()> {
        let mut a: Array<_, NodeConfig> =
            Array::try_from(self.map_mut(MAP_CONFIG)?).map_err(|e| Error::map(MAP_CONFIG, e))?;
        a.set(0, cfg, 0).map_err(|e| Error::map(MAP_CONFIG, e))?;
        self.node_ip = Some(Ipv4Addr::from(cfg.node_ip.0));
        Ok(())
    }

    /// Sets the uplink's L3 MTU for the path MTU check (0 turns the check
    /// off).
    pub fn set_uplink_mtu(&mut self, uplink_mtu: u32) -> Result<()> {
        let mut a: Array<_, u32> =
            Array::try_from(self.map_mut(MAP_MTU)?).map_err(|e| Error::map(MAP_MTU, e))?;
        a.set(mtu::UPLINK_MTU, uplink_mtu, 0)
            .map_err(|e| Error::map(MAP_MTU, e))
    }

    /// Learn no cookies (every packet leaves as a new flow): the hash-only
    /// variant of the lab's consistency experiment.
    pub fn set_ignore_cookies(&mut self, ignore: bool) -> Result<()> {
        let mut a: Array<_, u32> =
            Array::try_from(self.map_mut(MAP_FLAGS)?).map_err(|e| Error::map(MAP_FLAGS, e))?;
        a.set(node_flags::IGNORE_COOKIES, u32::from(ignore), 0)
            .map_err(|e| Error::map(MAP_FLAGS, e))
    }

    /// The most entries one pod may hold in each flow table (0 = no limit).
    pub fn set_pod_flow_limit(&mut self, limit: u32) -> Result<()> {
        let mut a: Array<_, u32> =
            Array::try_from(self.map_mut(MAP_FLAGS)?).map_err(|e| Error::map(MAP_FLAGS, e))?;
        a.set(node_flags::POD_FLOW_LIMIT, limit, 0)
            .map_err(|e| Error::map(MAP_FLAGS, e))
    }

    /// The key outside TCP clients' new connections are stamped with
    /// (`talaria_common::ts_cookie`); `None` stamps none. Live connections
    /// keep the cookie they started with.
    pub fn set_ts_cookie(&mut self, key: Option<CookieKey>) -> Result<()> {
        let mut a: Array<_, NodeTsCookie> = Array::try_from(self.map_mut(MAP_TS_COOKIE)?)
            .map_err(|e| Error::map(MAP_TS_COOKIE, e))?;
        let value = NodeTsCookie {
            key: key.unwrap_or_default(),
            enabled: u32::from(key.is_some()),
            _pad: 0,
        };
        a.set(0, value, 0).map_err(|e| Error::map(MAP_TS_COOKIE, e))
    }

    /// The uplink MTU the programs check against (0 = no check).
    pub fn uplink_mtu(&self) -> Result<u32> {
        let a: Array<_, u32> =
            Array::try_from(self.map(MAP_MTU)?).map_err(|e| Error::map(MAP_MTU, e))?;
        a.get(&mtu::UPLINK_MTU, 0)
            .map_err(|e| Error::map(MAP_MTU, e))
    }

    /// The service CIDRs in `NODE_SVC_CIDRS` and `NODE_SVC_CIDRS_V6`.
    pub fn service_cidrs(&self) -> Result<BTreeSet<Cidr>> {
        let mut all = service_cidrs_of(self.map(MAP_SVC_CIDRS)?)?;
        all.extend(service_cidrs6_of(self.map(MAP_SVC_CIDRS_V6)?)?);
        Ok(all)
    }

    /// Adds service CIDRs (present ones stay), each to its family's map.
    pub fn add_service_cidrs(&mut self, cidrs: &[Cidr]) -> Result<()> {
        let (v4, v6) = split_cidrs(cidrs);
        let mut t: LpmTrie<_, [u8; 4], u32> = LpmTrie::try_from(self.map_mut(MAP_SVC_CIDRS)?)
            .map_err(|e| Error::map(MAP_SVC_CIDRS, e))?;
        for k in &v4 {
            t.insert(k, 1, 0)
                .map_err(|e| Error::map(MAP_SVC_CIDRS, e))?;
        }
        let mut t: LpmTrie<_, [u8; 16], u32> = LpmTrie::try_from(self.map_mut(MAP_SVC_CIDRS_V6)?)
            .map_err(|e| Error::map(MAP_SVC_CIDRS_V6, e))?;
        for k in &v6 {
            t.insert(k, 1, 0)
                .map_err(|e| Error::map(MAP_SVC_CIDRS_V6, e))?;
        }
        Ok(())
    }

    /// Removes service CIDRs (absent ones are no error).
    pub fn remove_service_cidrs(&mut self, cidrs: &[Cidr]) -> Result<()> {
        let (v4, v6) = split_cidrs(cidrs);
        let absent_ok = |r: std::result::Result<(), aya::maps::MapError>, name| match r {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::SyscallError(SyscallError { io_error, .. }))
                if io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            Err(e) => Err(Error::map(name, e)),
        };
        let mut t: LpmTrie<_, [u8; 4], u32> = LpmTrie::try_from(self.map_mut(MAP_SVC_CIDRS)?)
            .map_err(|e| Error::map(MAP_SVC_CIDRS, e))?;
        for k in &v4 {
            absent_ok(t.remove(k), MAP_SVC_CIDRS)?;
        }
        let mut t: LpmTrie<_, [u8; 16], u32> = LpmTrie::try_from(self.map_mut(MAP_SVC_CIDRS_V6)?)
            .map_err(|e| Error::map(MAP_SVC_CIDRS_V6, e))?;
        for k in &v6 {
            absent_ok(t.remove(k), MAP_SVC_CIDRS_V6)?;
        }
        Ok(())
    }

    /// Replaces the service CIDRs (both families).
    pub fn set_service_cidrs(&mut self, cidrs: &[Cidr]) -> Result<()> {
        let want: Vec<Cidr> = cidrs.iter().map(|c| crate::config::network(*c)).collect();
        let stale: Vec<Cidr> = self
            .service_cidrs()?
            .into_iter()
            .filter(|c| !want.contains(c))
            .collect();
        self.remove_service_cidrs(&stale)?;
        self.add_service_cidrs(cidrs)
    }

    /// Replaces the services: id → VIP, port, protocol (`NODE_SERVICES`,
    /// `NODE_SERVICES_V6`), the ports whose new flows are refused, go to
    /// preferred backends or keep session affinity (`NODE_PORT_POLICY`,
    /// `NODE_PORT_POLICY_V6`), and the backends such
    /// an affinity may name (`NODE_AFFINITY_BACKENDS`). Only what changed
    /// since the last call is written (a new Service in a large cluster
    /// costs a few map writes, not one per Service).
    pub fn set_services(&mut self, list: &[ServiceConfig]) -> Result<()> {
        let mut want = ServiceMaps::default();
        for s in list {
            let v4 = match s.map_value()? {
                ServiceValue::V4(v) => v,
                ServiceValue::V6(v) => {
                    if let Some(p) = s.policy6() {
                        want.policies6.insert(v, p);
                    }
                    want.services6.insert(u32::from(s.id), v);
                    want.affinity_backends
                        .extend(s.affinity_backends().map(|b| (b, 1)));
                    continue;
                }
            };
            want.services.insert(u32::from(s.id), v4);
            // Every node's nodePorts are known (for the replies of a
            // local backend); only the node's own are steered.
            let elsewhere = s.node_port && self.node_ip.map(IpAddr::V4) != Some(s.vip);
            if let Some(p) = s.policy().filter(|_| !elsewhere) {
                want.policies.insert(s.port_key()?, p);
            }
            want.affinity_backends
                .extend(s.affinity_backends().map(|b| (b, 1)));
        }
        // Forgotten until all is written: a failure halfway makes the next
        // call read the maps again.
        let have = self.services_written.take();
        let have = have.as_ref();
        sync_hash_map(
            self.map_mut(MAP_PORT_POLICY)?,
            MAP_PORT_POLICY,
            have.map(|h| &h.policies),
            &want.policies,
        )?;
        sync_hash_map(
            self.map_mut(MAP_PORT_POLICY_V6)?,
            MAP_PORT_POLICY_V6,
            have.map(|h| &h.policies6),
            &want.policies6,
        )?;
        sync_hash_map(
            self.map_mut(MAP_SERVICES)?,
            MAP_SERVICES,
            have.map(|h| &h.services),
            &want.services,
        )?;
        sync_hash_map(
            self.map_mut(MAP_SERVICES_V6)?,
            MAP_SERVICES_V6,
            have.map(|h| &h.services6),
            &want.services6,
        )?;
        sync_hash_map(
            self.map_mut(MAP_AFFINITY_BACKENDS)?,
            MAP_AFFINITY_BACKENDS,
            have.map(|h| &h.affinity_backends),
            &want.affinity_backends,
        )?;
        self.services_written = Some(want);
        Ok(())
    }

    /// Replaces the local pods (pod IP → veth and MACs).
    pub fn set_pods(&mut self, pods: &[(Ipv4Addr, PodEntry)]) -> Result<()> {
        let mut h: HashMap<_, [u8; 4], PodEntry> =
            HashMap::try_from(self.map_mut(MAP_PODS)?).map_err(|e| Error::map(MAP_PODS, e))?;
        let stale: Vec<[u8; 4]> = h
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !pods.iter().any(|p| p.0.octets() == *k))
            .collect();
        for k in stale {
            h.remove(&k).map_err(|e| Error::map(MAP_PODS, e))?;
        }
        for (ip, p) in pods {
            h.insert(ip.octets(), p, 0)
                .map_err(|e| Error::map(MAP_PODS, e))?;
        }
        Ok(())
    }

    /// Replaces the local pods' IPv6 addresses (address → veth and MACs,
    /// as the pod's IPv4 entry), against which their IPv6 sources are
    /// checked and to which IPv6 Service traffic is delivered.
    pub fn set_pods_v6(&mut self, pods: &[(Ipv6Addr, PodEntry)]) -> Result<()> {
        let want = pods.iter().map(|(ip, e)| (ip.octets(), *e)).collect();
        sync_hash_map(self.map_mut(MAP_PODS_V6)?, MAP_PODS_V6, None, &want)
    }

    /// The counters, summed over CPUs.
    pub fn stats(&self) -> Result<Stats> {
        Stats::read(
            self.map(MAP_STATS)?,
            self.map(MAP_DROPS)?,
            self.map(MAP_MTU_STATS)?,
        )
    }

    /// Every cached cookie (client side).
    pub fn cookies(&self) -> Result<Vec<(FlowKey, CookieEntry)>> {
        let h: HashMap<_, FlowKey, CookieEntry> =
            HashMap::try_from(self.map(MAP_COOKIES)?).map_err(|e| Error::map(MAP_COOKIES, e))?;
        Ok(h.iter().filter_map(|r| r.ok()).collect())
    }

    /// Every reverse-flow entry (backend side).
    pub fn reverse_flows(&self) -> Result<Vec<(FlowKey, ReverseEntry)>> {
        let h: HashMap<_, FlowKey, ReverseEntry> =
            HashMap::try_from(self.map(MAP_REVERSE)?).map_err(|e| Error::map(MAP_REVERSE, e))?;
        Ok(h.iter().filter_map(|r| r.ok()).collect())
    }

    /// Every cached cookie of IPv6 flows (client side).
    pub fn cookies6(&self) -> Result<Vec<(FlowKey6, CookieEntry)>> {
        let h: HashMap<_, FlowKey6, CookieEntry> = HashMap::try_from(self.map(MAP_COOKIES_V6)?)
            .map_err(|e| Error::map(MAP_COOKIES_V6, e))?;
        Ok(h.iter().filter_map(|r| r.ok()).collect())
    }

    /// Every reverse-flow entry of IPv6 flows (backend side).
    pub fn reverse_flows6(&self) -> Result<Vec<(FlowKey6, ReverseEntry6)>> {
        let h: HashMap<_, FlowKey6, ReverseEntry6> = HashMap::try_from(self.map(MAP_REVERSE_V6)?)
            .map_err(|e| Error::map(MAP_REVERSE_V6, e))?;
        Ok(h.iter().filter_map(|r| r.ok()).collect())
    }

    /// Every substitute client port of IPv6 flows (backend side): the
    /// flow as it arrived and its Service → the substitute.
    pub fn port_substitutes6(&self) -> Result<Vec<(PortSubstKey6, Be16)>> {
        let h: HashMap<_, PortSubstKey6, Be16> = HashMap::try_from(self.map(MAP_PORT_SUBST_V6)?)
            .map_err(|e| Error::map(MAP_PORT_SUBST_V6, e))?;
        Ok(h.iter().filter_map(|r| r.ok()).collect())
    }

    /// Inserts a cookie of an IPv6 flow (tests).
    pub fn insert_cookie6(&mut self, key: &FlowKey6, entry: &CookieEntry) -> Result<()> {
        let mut h: HashMap<_, FlowKey6, CookieEntry> =
            HashMap::try_from(self.map_mut(MAP_COOKIES_V6)?)
                .map_err(|e| Error::map(MAP_COOKIES_V6, e))?;
        h.insert(key, entry, 0)
            .map_err(|e| Error::map(MAP_COOKIES_V6, e))
    }

    /// Inserts a cookie (tests and benches: a warm cache).
    pub fn insert_cookie(&mut self, key: &FlowKey, entry: &CookieEntry) -> Result<()> {
        let mut h: HashMap<_, FlowKey, CookieEntry> = HashMap::try_from(self.map_mut(MAP_COOKIES)?)
            .map_err(|e| Error::map(MAP_COOKIES, e))?;
        h.insert(key, entry, 0)
            .map_err(|e| Error::map(MAP_COOKIES, e))
    }

    /// Removes flow state that has served its time (`ttl`). Returns
    /// (cookies, reverse entries) removed.
    pub fn gc(&mut self, now_ns: u64, ttl: &FlowTtl) -> Result<(usize, usize)> {
        let expired = |k: &FlowKey, last: u64, fin: u8, finished_ttl: u64, pending: bool| {
            let idle = now_ns.saturating_sub(last);
            if k.proto == IPPROTO_UDP {
                idle > ttl.udp_idle_ns
            } else if pending {
                // A connection to an endpoint without an agent that no
                // reply ever answered.
                idle > ttl.fin_grace_ns
            } else {
                finished(fin) && idle > finished_ttl
            }
        };
        // What a pod's share counts: open connections.
        let open = |k: &FlowKey, fin: u8| k.proto == IPPROTO_UDP || !finished(fin);
        let (cookies, cookie_pods) = self.sweep(
            MAP_COOKIES,
            |k, v: &CookieEntry| {
                let pending = v.backend_id == PENDING_BACKEND;
                expired(k, v.last_seen_ns, v.fin_seen, ttl.fin_grace_ns, pending)
            },
            |k, v: &CookieEntry| open(k, v.fin_seen),
        )?;
        // A reverse entry stays for the backend's TIME_WAIT when the backend
        // closed first; otherwise the FIN grace is enough.
        let reverse_ttl = |fin: u8| {
            if fin & FIN_BACKEND_FIRST != 0 {
                ttl.time_wait_ns
            } else {
                ttl.fin_grace_ns
            }
        };
        let (reverse, reverse_pods) = self.sweep(
            MAP_REVERSE,
            |k, v: &ReverseEntry| {
                expired(
                    k,
                    v.last_seen_ns,
                    v.fin_seen,
                    reverse_ttl(v.fin_seen),
                    false,
                )
            },
            |k, v: &ReverseEntry| open(k, v.fin_seen),
        )?;
        self.sweep_substitutes::<FlowKey, ReverseEntry>(MAP_PORT_SUBST, MAP_REVERSE)?;
        self.recount_pod_flows(&cookie_pods, &reverse_pods)?;
        // IPv6 flows: the same rules (they hold no pod flow slots).
        let cookies6 = self.sweep6(MAP_COOKIES_V6, |k, v: &CookieEntry| {
            flow_expired(
                now_ns,
                ttl,
                (k.proto, v.last_seen_ns, v.fin_seen),
                ttl.fin_grace_ns,
            )
        })?;
        let reverse6 = self.sweep6(MAP_REVERSE_V6, |k, v: &ReverseEntry6| {
            let finished_ttl = reverse_ttl(v.fin_seen);
            flow_expired(
                now_ns,
                ttl,
                (k.proto, v.last_seen_ns, v.fin_seen),
                finished_ttl,
            )
        })?;
        self.sweep_substitutes::<FlowKey6, ReverseEntry6>(MAP_PORT_SUBST_V6, MAP_REVERSE_V6)?;
        Ok((cookies + cookies6, reverse + reverse6))
    }

    /// [`Node::sweep`] of an IPv6 flow map, which counts nothing per pod.
    fn sweep6<V: aya::Pod>(
        &mut self,
        name: &'static str,
        dead: impl Fn(&FlowKey6, &V) -> bool,
    ) -> Result<usize> {
        let mut map: HashMap<_, FlowKey6, V> =
            HashMap::try_from(self.map_mut(name)?).map_err(|e| Error::map(name, e))?;
        let keys: Vec<FlowKey6> = map
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(k, v)| dead(k, v))
            .map(|(k, _)| k)
            .collect();
        let mut removed = 0;
        for k in &keys {
            // Looked at again just before deleting, as in `sweep`.
            if map.get(k, 0).is_ok_and(|v| dead(k, &v)) && map.remove(k).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Writes the exact per-pod entry counts the sweep saw
    /// (`NODE_POD_FLOWS`), correcting what the programs' increments and
    /// decrements left. A flow that starts while this runs may be counted
    /// one short until the next sweep.
    fn recount_pod_flows(
        &mut self,
        cookies: &std::collections::HashMap<[u8; 4], u64>,
        reverse: &std::collections::HashMap<[u8; 4], u64>,
    ) -> Result<()> {
        let mut counts: HashMap<_, [u8; 4], PodFlows> =
            HashMap::try_from(self.map_mut(MAP_POD_FLOWS)?)
                .map_err(|e| Error::map(MAP_POD_FLOWS, e))?;
        let stale: Vec<[u8; 4]> = counts
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !cookies.contains_key(k) && !reverse.contains_key(k))
            .collect();
        for k in stale {
            let _ = counts.remove(&k);
        }
        let pods: std::collections::BTreeSet<&[u8; 4]> =
            cookies.keys().chain(reverse.keys()).collect();
        for pod in pods {
            let c = PodFlows {
                cookies: cookies.get(pod).copied().unwrap_or(0),
                reverse: reverse.get(pod).copied().unwrap_or(0),
            };
            counts
                .insert(pod, c, 0)
                .map_err(|e| Error::map(MAP_POD_FLOWS, e))?;
        }
        Ok(())
    }

    /// Entries each pod holds in each flow table, as the programs count
    /// them (`NODE_POD_FLOWS`).
    pub fn pod_flows(&self) -> Result<Vec<(std::net::Ipv4Addr, PodFlows)>> {
        let h: HashMap<_, [u8; 4], PodFlows> = HashMap::try_from(self.map(MAP_POD_FLOWS)?)
            .map_err(|e| Error::map(MAP_POD_FLOWS, e))?;
        Ok(h.iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| (std::net::Ipv4Addr::from(k), v))
            .collect())
    }

    /// Removes the substitute ports (map `subst_name`, of the family
    /// whose reverse-flow entries are `reverse_name`) whose flow is gone:
    /// no reverse-flow entry on the substitute, or another flow's (it took
    /// the port after this sweep's own walk of the reverse entries freed
    /// it).
    fn sweep_substitutes<K, V>(
        &mut self,
        subst_name: &'static str,
        reverse_name: &'static str,
    ) -> Result<usize>
    where
        K: BackendKey + aya::Pod,
        V: ReverseFlow + aya::Pod,
        PortSubstKey<K>: aya::Pod,
    {
        let subst: HashMap<_, PortSubstKey<K>, Be16> =
            HashMap::try_from(self.map(subst_name)?).map_err(|e| Error::map(subst_name, e))?;
        let all: Vec<(PortSubstKey<K>, Be16)> = subst.iter().filter_map(|r| r.ok()).collect();
        let reverse: HashMap<_, K, V> =
            HashMap::try_from(self.map(reverse_name)?).map_err(|e| Error::map(reverse_name, e))?;
        let dead: Vec<PortSubstKey<K>> = all
            .into_iter()
            .filter(|(k, port)| {
                let held = k.flow.with_client_port(*port);
                reverse.get(&held, 0).map_or(true, |e| !k.held_by(&e))
            })
            .map(|(k, _)| k)
            .collect();
        let mut subst: HashMap<_, PortSubstKey<K>, Be16> =
            HashMap::try_from(self.map_mut(subst_name)?).map_err(|e| Error::map(subst_name, e))?;
        for k in &dead {
            let _ = subst.remove(k);
        }
        Ok(dead.len())
    }

    /// Removes the entries of flow map `name` that `dead` picks; returns how
    /// many, and per pod (the key's source) how many of those left are
    /// `counted`. Keys are collected first: deleting while iterating a BPF
    /// hash map restarts the walk.
    fn sweep<V: aya::Pod>(
        &mut self,
        name: &'static str,
        dead: impl Fn(&FlowKey, &V) -> bool,
        counted: impl Fn(&FlowKey, &V) -> bool,
    ) -> Result<(usize, std::collections::HashMap<[u8; 4], u64>)> {
        let mut map: HashMap<_, FlowKey, V> =
            HashMap::try_from(self.map_mut(name)?).map_err(|e| Error::map(name, e))?;
        let mut left = std::collections::HashMap::new();
        let mut count = |k: &FlowKey, v: &V| {
            if counted(k, v) {
                *left.entry(k.src.0).or_insert(0u64) += 1;
            }
        };
        let mut keys = Vec::new();
        for (k, v) in map.iter().filter_map(|r| r.ok()) {
            if dead(&k, &v) {
                keys.push(k);
            } else {
                count(&k, &v);
            }
        }
        // Look again just before deleting: a packet may have refreshed the
        // entry since the walk read it, and a live flow's entry must stay.
        // (A packet between this look and the delete can still lose its
        // entry; the flow's next inbound packet recreates it.)
        let mut removed = 0;
        for k in &keys {
            match map.get(k, 0) {
                Ok(v) if dead(k, &v) => {
                    if map.remove(k).is_ok() {
                        removed += 1;
                    }
                }
                Ok(v) => count(k, &v),
                Err(_) => {}
            }
        }
        Ok((removed, left))
    }
}

/// Whether an IPv6 flow entry (`proto`, last packet, FIN bits) has served
/// its time: UDP after `udp_idle_ns` idle, TCP `finished_ttl` after both
/// FINs (an RST removes it in the data path).
fn flow_expired(
    now_ns: u64,
    ttl: &FlowTtl,
    (proto, last, fin): (u8, u64, u8),
    finished_ttl: u64,
) -> bool {
    let idle = now_ns.saturating_sub(last);
    if proto == IPPROTO_UDP {
        idle > ttl.udp_idle_ns
    } else {
        finished(fin) && idle > finished_ttl
    }
}

/// LPM keys of `NODE_SVC_CIDRS` and of `NODE_SVC_CIDRS_V6`.
type LpmKeys = (Vec<lpm_trie::Key<[u8; 4]>>, Vec<lpm_trie::Key<[u8; 16]>>);

/// `cidrs` (host bits clear) as LPM keys of `NODE_SVC_CIDRS` and of
/// `NODE_SVC_CIDRS_V6`.
fn split_cidrs(cidrs: &[Cidr]) -> LpmKeys {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for c in cidrs {
        match crate::config::network(*c) {
            (IpAddr::V4(a), l) => v4.push(lpm_trie::Key::new(u32::from(l), a.octets())),
            (IpAddr::V6(a), l) => v6.push(lpm_trie::Key::new(u32::from(l), a.octets())),
        }
    }
    (v4, v6)
}

/// How long the GC keeps flow state, in nanoseconds of
/// `CLOCK_MONOTONIC` (see [`crate::config::Config`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTtl {
    /// A UDP flow, after its last packet.
    pub udp_idle_ns: u64,
    /// A finished TCP flow's cookie, after its last packet.
    pub fin_grace_ns: u64,
    /// A finished TCP flow's reverse entry when the backend closed first
    /// (it holds TIME_WAIT), after its last packet; otherwise
    /// `fin_grace_ns`.
    pub time_wait_ns: u64,
}

impl FlowTtl {
    /// From the configuration's seconds.
    pub fn from_secs(udp_idle: u64, fin_grace: u64, time_wait: u64) -> Self {
        let ns = |s: u64| s.saturating_mul(1_000_000_000);
        Self {
            udp_idle_ns: ns(udp_idle),
            fin_grace_ns: ns(fin_grace),
            time_wait_ns: ns(time_wait),
        }
    }
}

/// File name of a pinned link (bpffs refuses dots in names).
pub fn link_pin_name(prog: &str, ifname: &str) -> String {
    format!("{prog}@{}", ifname.replace('.', "_"))
}

fn pin_err(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Pin {
        path: path.display().to_string(),
        source: Box::new(e),
    }
}

/// Removes a node's pins (links first, which detaches the programs, then
/// the maps). For tests and decommissioning.
pub fn unpin_all(pin_dir: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(pin_dir.join("links"));
    match std::fs::remove_dir_all(pin_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", pin_dir.display()), e)),
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime into a zeroed timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Brings hash map `name` to `want`: keys not wanted go, and entries that
/// differ from `have` (what was written last; None: unknown, so the map's
/// keys are read and every entry written) are written.
fn sync_hash_map<K, V>(
    map: &mut Map,
    name: &'static str,
    have: Option<&StdHashMap<K, V>>,
    want: &StdHashMap<K, V>,
) -> Result<()>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod + PartialEq,
{
    let mut h: HashMap<_, K, V> = HashMap::try_from(map).map_err(|e| Error::map(name, e))?;
    let present: Vec<K> = match have {
        Some(have) => have.keys().copied().collect(),
        None => h.keys().filter_map(|k| k.ok()).collect(),
    };
    for k in present.iter().filter(|k| !want.contains_key(k)) {
        h.remove(k).map_err(|e| Error::map(name, e))?;
    }
    for (k, v) in want {
        if have.and_then(|have| have.get(k)) != Some(v) {
            h.insert(k, v, 0).map_err(|e| Error::map(name, e))?;
        }
    }
    Ok(())
}
