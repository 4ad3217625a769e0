//! The switch-agent data plane: the talaria pipeline (p4/talaria.p4) as a
//! TC eBPF program on the switch's Linux ports, and [`Dataplane`], which
//! loads it, keeps its maps pinned, and implements the P4Runtime table
//! semantics ([`Target`]) over them.
//!
//! Restart: maps and the per-port TCX links are pinned under
//! [`Config::pin_dir`]. A restarted process reopens the same maps (entries
//! and counters survive) and swaps its freshly loaded program into the
//! existing links atomically (`BPF_LINK_UPDATE`), so forwarding never stops.

pub mod entry;
pub mod sys;
pub mod target;
pub mod testing;

use std::{
    collections::BTreeMap,
    fs, io,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::TcAttachOptions,
        LinkOrder, SchedClassifier, TcAttachType,
    },
    Ebpf, EbpfLoader,
};
pub use entry::{CounterId, Entry, EntryKey, Table, Target, TargetError};
pub use sys::TestRunOutput;
use talaria_common::{
    drop::{DropReason, DROP_REASON_COUNT},
    maps::PacketBytes,
};
use talaria_switch_ebpf::{map_name, PORT_COUNT, PORT_DROP_ROWS, PROGRAM_NAME};

/// The compiled pipeline (crate talaria-switch-ebpf), built by build.rs.
pub static PROGRAM: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/talaria-switch-pipeline"));

pub use talaria_preflight::BPFFS;

/// Errors of the loader and of the non-table operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The machine lacks what the data plane needs (bpffs not mountable).
    #[error(transparent)]
    Preflight(#[from] talaria_preflight::Error),
    /// The pin directory could not be created.
    #[error("pin directory {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The eBPF object failed to load (maps created or reopened, BTF).
    #[error("loading the switch eBPF object")]
    Load(#[source] Box<aya::EbpfError>),
    /// The verifier rejected the program, or attaching it failed.
    #[error("program {what}")]
    Program {
        what: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A pinned map has another (key size, value size, max entries) than
    /// this build: left by an older version; detach that switch first.
    #[error("pinned map {name} has layout {got:?}, this build needs {want:?}")]
    Layout {
        name: String,
        want: (u32, u32, u32),
        got: (u32, u32, u32),
    },
    /// A port is configured twice, out of range, or names no interface.
    #[error("port {port}: {reason}")]
    Port { port: u16, reason: String },
    /// A port specification is not `N@ifname`.
    #[error("bad port spec {0:?}, expected N@ifname")]
    PortSpec(String),
    /// Pinning, reopening or converting a TCX link failed.
    #[error("{what}")]
    Link {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A bpf(2) call on a map, link or the program failed.
    #[error("{what}")]
    Sys {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to open the data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Directory on bpffs that holds the pinned maps and per-port links.
    /// Default: `/sys/fs/bpf/talaria/switch/default`; one per switch
    /// instance ([`Config::for_instance`]).
    pub pin_dir: PathBuf,
    /// P4 port number → Linux interface name, like bmv2's `-i 1@veth1`.
    /// The program is attached (TCX ingress) to each.
    pub ports: BTreeMap<u16, String>,
}

impl Default for Config {
    fn default() -> Self {
        Self::for_instance("default")
    }
}

impl Config {
    /// The default pin directory of switch instance `name`.
    pub fn default_pin_dir(name: &str) -> PathBuf {
        Path::new(BPFFS).join("talaria/switch").join(name)
    }

    /// A config with the default pin directory of instance `name` and no
    /// ports.
    pub fn for_instance(name: &str) -> Self {
        Self {
            pin_dir: Self::default_pin_dir(name),
            ports: BTreeMap::new(),
        }
    }

    /// Adds a port given as `N@ifname`.
    pub fn with_port_spec(mut self, spec: &str) -> Result<Self> {
        let (port, ifname) = parse_port_spec(spec)?;
        self.ports.insert(port, ifname);
        Ok(self)
    }
}

/// Parses a bmv2-style port spec `N@ifname`.
pub fn parse_port_spec(spec: &str) -> Result<(u16, String)> {
    let bad = || Error::PortSpec(spec.to_string());
    let (n, ifname) = spec.split_once('@').ok_or_else(bad)?;
    let port: u16 = n.parse().map_err(|_| bad())?;
    if ifname.is_empty() {
        return Err(bad());
    }
    Ok((port, ifname.to_string()))
}

/// Per-port packet counters, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortStats {
    pub port: u16,
    pub ifname: String,
    /// Packets (and bytes) the pipeline received on the port.
    pub rx: PacketBytes,
    /// Packets (and bytes) the pipeline redirected out of the port.
    pub tx: PacketBytes,
    /// Packets (and bytes) the pipeline dropped that arrived on the port,
    /// for every reason in [`DropReason::ALL`] order.
    pub drops: Vec<(DropReason, PacketBytes)>,
}

/// File descriptors of the pinned maps.
pub(crate) struct Maps {
    /// One per table, named by [`table_map_name`].
    pub tables: BTreeMap<Table, OwnedFd>,
    pub backend_counter: OwnedFd,
    pub service_counter: OwnedFd,
    pub drop_counter: OwnedFd,
    pub lb_event_counter: OwnedFd,
    pub port_rx: OwnedFd,
    pub port_tx: OwnedFd,
    pub port_drop: OwnedFd,
    pub port_ifindex: OwnedFd,
    pub ifindex_port: OwnedFd,
}

/// The map of `table`: `SWITCH_` and its alias in capitals.
pub(crate) fn table_map_name(table: Table) -> String {
    format!("{}{}", map_name::PREFIX, table.alias().to_ascii_uppercase())
}

impl Maps {
    fn open(dir: &Path) -> Result<Self> {
        let get = |name: &str| {
            sys::obj_get(&dir.join(name)).map_err(|source| Error::Sys {
                what: format!("opening pinned map {name}"),
                source,
            })
        };
        let tables = Table::ALL
            .iter()
            .map(|t| Ok((*t, get(&table_map_name(*t))?)))
            .collect::<Result<_>>()?;
        let maps = Self {
            tables,
            backend_counter: get(map_name::BACKEND_COUNTER)?,
            service_counter: get(map_name::SERVICE_COUNTER)?,
            drop_counter: get(map_name::DROP_COUNTER)?,
            lb_event_counter: get(map_name::LB_EVENT_COUNTER)?,
            port_rx: get(map_name::PORT_RX)?,
            port_tx: get(map_name::PORT_TX)?,
            port_drop: get(map_name::PORT_DROP)?,
            port_ifindex: get(map_name::PORT_IFINDEX)?,
            ifindex_port: get(map_name::IFINDEX_PORT)?,
        };
        maps.check_layout()?;
        Ok(maps)
    }

    /// Refuses maps pinned by a build with another layout or table size
    /// (aya reuses a pinned map as it finds it): such a switch must be
    /// [`Dataplane::detach`]ed and opened afresh.
    fn check_layout(&self) -> Result<()> {
        use talaria_switch_ebpf::size;
        let tables = self.tables.iter().map(|(t, fd)| {
            let (key, value) = target::map_layout(*t);
            (table_map_name(*t), fd, (key as u32, value as u32, t.size()))
        });
        let others = [
            (
                map_name::BACKEND_COUNTER,
                &self.backend_counter,
                (4, 16, size::BACKEND),
            ),
            (
                map_name::SERVICE_COUNTER,
                &self.service_counter,
                (4, 16, size::SERVICE_COUNTER),
            ),
            (
                map_name::PORT_DROP,
                &self.port_drop,
                (4, 16, PORT_DROP_ROWS * DROP_REASON_COUNT),
            ),
        ]
        .map(|(name, fd, want)| (name.to_string(), fd, want));
        for (name, fd, want) in tables.chain(others) {
            let got = sys::map_layout(fd.as_fd()).map_err(|source| Error::Sys {
                what: format!("reading the layout of {name}"),
                source,
            })?;
            if got != want {
                return Err(Error::Layout { name, want, got });
            }
        }
        Ok(())
    }
}

/// The loaded, attached switch pipeline. Safe to share between threads:
/// every table operation is one bpf(2) call on a map.
pub struct Dataplane {
    pin_dir: PathBuf,
    ports: BTreeMap<u16, (String, u32)>,
    /// Owns the program (its fd serves test runs).
    ebpf: Ebpf,
    pub(crate) maps: Maps,
    pub(crate) ncpus: usize,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("pin_dir", &self.pin_dir)
            .field("ports", &self.ports)
            .finish()
    }
}

impl Dataplane {
    /// Loads the pipeline, reopening the maps pinned in `config.pin_dir`
    /// (or creating and pinning them), and attaches it to the ingress of
    /// every port, replacing the program of a pinned link atomically.
    pub fn open(config: Config) -> Result<Self> {
        let pin_dir = config.pin_dir.clone();
        let dir_err = |source| Error::PinDir {
            path: pin_dir.clone(),
            source,
        };
        if pin_dir.starts_with(BPFFS) {
            talaria_preflight::ensure(&[talaria_preflight::Need::Bpffs])?;
        }
        fs::create_dir_all(&pin_dir).map_err(dir_err)?;

        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pin_dir)
            .load(PROGRAM)
            .map_err(|e| Error::Load(Box::new(e)))?;
        let maps = Maps::open(&pin_dir)?;
        let ncpus = aya::util::nr_cpus().map_err(|(what, source)| Error::Sys {
            what: what.to_string(),
            source,
        })?;

        let mut ports = BTreeMap::new();
        for (&port, ifname) in &config.ports {
            if u32::from(port) >= PORT_COUNT {
                return Err(Error::Port {
                    port,
                    reason: format!("above {}", PORT_COUNT - 1),
                });
            }
            let ifindex = ifindex_of(ifname).map_err(|e| Error::Port {
                port,
                reason: format!("{ifname}: {e}"),
            })?;
            if ports.values().any(|(_, i)| *i == ifindex) {
                return Err(Error::Port {
                    port,
                    reason: format!("{ifname} is already another port"),
                });
            }
            ports.insert(port, (ifname.clone(), ifindex));
        }

        let program: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| Error::Sys {
                what: format!("no program {PROGRAM_NAME}"),
                source: io::ErrorKind::NotFound.into(),
            })?
            .try_into()
            .map_err(|e| program_err("type", e))?;
        program
            .load()
            .map_err(|e| program_err("load (verifier)", e))?;

        let mut dp = Self {
            pin_dir,
            ports,
            ebpf,
            maps,
            ncpus,
        };
        dp.write_port_maps()?;
        dp.attach_all()?;
        Ok(dp)
    }

    /// The pin path of the TCX link of `port`.
    fn link_pin(&self, port: u16) -> PathBuf {
        self.pin_dir.join(format!("{LINK_PIN_PREFIX}{port}"))
    }

    /// Attaches the program to every port: swaps it into a pinned link that
    /// still sits on the port's interface, otherwise attaches anew and pins
    /// the link. Links of ports no longer configured are removed.
    fn attach_all(&mut self) -> Result<()> {
        for (port, _) in self.pinned_links()? {
            if !self.ports.contains_key(&port) {
                if let Ok(fd) = sys::obj_get(&self.link_pin(port)) {
                    let _ = sys::link_detach(fd.as_fd());
                }
                let _ = fs::remove_file(self.link_pin(port));
            }
        }
        let ports: Vec<(u16, String, u32)> = self
            .ports
            .iter()
            .map(|(p, (name, index))| (*p, name.clone(), *index))
            .collect();
        for (port, ifname, ifindex) in ports {
            let pin = self.link_pin(port);
            let reuse = match sys::obj_get(&pin) {
                Ok(fd) => {
                    let on = sys::tcx_link_ifindex(fd.as_fd()).unwrap_or(0);
                    if on != ifindex {
                        let _ = fs::remove_file(&pin);
                    }
                    on == ifindex
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(source) => {
                    return Err(Error::Sys {
                        what: format!("opening {}", pin.display()),
                        source,
                    })
                }
            };
            let program: &mut SchedClassifier = self
                .ebpf
                .program_mut(PROGRAM_NAME)
                .expect("checked in open")
                .try_into()
                .map_err(|e| program_err("type", e))?;
            if reuse {
                let old = PinnedLink::from_pin(&pin).map_err(|e| link_err(&pin, e))?;
                let link = FdLink::from(old)
                    .try_into()
                    .map_err(|e| link_err(&pin, e))?;
                let id = program
                    .attach_to_link(link)
                    .map_err(|e| program_err(&format!("replace on {ifname}"), e))?;
                // The pin keeps the link; our fd may go.
                drop(
                    program
                        .take_link(id)
                        .map_err(|e| program_err("take link", e))?,
                );
            } else {
                let id = program
                    .attach_with_options(
                        &ifname,
                        TcAttachType::Ingress,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .map_err(|e| program_err(&format!("attach to {ifname}"), e))?;
                let link = program
                    .take_link(id)
                    .map_err(|e| program_err("take link", e))?;
                let fd_link: FdLink = link.try_into().map_err(|e| link_err(&pin, e))?;
                fd_link.pin(&pin).map_err(|e| link_err(&pin, e))?;
            }
        }
        Ok(())
    }

    /// Ports with a pinned link in the pin directory.
    fn pinned_links(&self) -> Result<Vec<(u16, PathBuf)>> {
        let rd = fs::read_dir(&self.pin_dir).map_err(|source| Error::PinDir {
            path: self.pin_dir.clone(),
            source,
        })?;
        Ok(rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let port = name.strip_prefix(LINK_PIN_PREFIX)?.parse().ok()?;
                Some((port, e.path()))
            })
            .collect())
    }

    /// Fills the port ↔ ifindex maps from the configured ports.
    fn write_port_maps(&self) -> Result<()> {
        let err = |what: &str| {
            let what = what.to_string();
            move |source| Error::Sys { what, source }
        };
        let fd = self.maps.port_ifindex.as_fd();
        for port in 0..PORT_COUNT {
            let ifindex = self.ports.get(&(port as u16)).map_or(0, |(_, i)| *i);
            sys::map_update(
                fd,
                &port.to_ne_bytes(),
                &ifindex.to_ne_bytes(),
                sys::BPF_ANY,
            )
            .map_err(err("writing SWITCH_PORT_IFINDEX"))?;
        }
        let fd = self.maps.ifindex_port.as_fd();
        let mut stale = Vec::new();
        let mut key = [0u8; 4];
        let mut prev: Option<[u8; 4]> = None;
        while sys::map_next_key(fd, prev.as_ref().map(|k| &k[..]), &mut key)
            .map_err(err("reading SWITCH_IFINDEX_PORT"))?
        {
            stale.push(key);
            prev = Some(key);
        }
        for (port, (_, ifindex)) in &self.ports {
            sys::map_update(
                fd,
                &ifindex.to_ne_bytes(),
                &u32::from(*port).to_ne_bytes(),
                sys::BPF_ANY,
            )
            .map_err(err("writing SWITCH_IFINDEX_PORT"))?;
        }
        for k in stale {
            let ifindex = u32::from_ne_bytes(k);
            if !self.ports.values().any(|(_, i)| *i == ifindex) {
                let _ = sys::map_delete(fd, &k);
            }
        }
        Ok(())
    }

    /// The configured ports: P4 port → (interface name, ifindex).
    pub fn ports(&self) -> &BTreeMap<u16, (String, u32)> {
        &self.ports
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Packet counters of every configured port, summed over CPUs.
    pub fn port_stats(&self) -> Result<Vec<PortStats>> {
        self.ports
            .iter()
            .map(|(&port, (ifname, _))| {
                let read = |fd: &OwnedFd, index: u32| {
                    self.percpu_sum(fd, &index.to_ne_bytes())
                        .map(Option::unwrap_or_default)
                        .map_err(|source| Error::Sys {
                            what: "reading port counters".into(),
                            source,
                        })
                };
                let row = u32::from(port) * DROP_REASON_COUNT;
                Ok(PortStats {
                    port,
                    ifname: ifname.clone(),
                    rx: read(&self.maps.port_rx, port.into())?,
                    tx: read(&self.maps.port_tx, port.into())?,
                    drops: DropReason::ALL
                        .iter()
                        .map(|&r| Ok((r, read(&self.maps.port_drop, row + u32::from(r.code()))?)))
                        .collect::<Result<_>>()?,
                })
            })
            .collect()
    }

    /// Sums a per-CPU [`PacketBytes`] cell; `None` if the key is absent.
    pub(crate) fn percpu_sum(&self, fd: &OwnedFd, key: &[u8]) -> io::Result<Option<PacketBytes>> {
        const CELL: usize = std::mem::size_of::<PacketBytes>();
        let mut buf = vec![0u8; CELL * self.ncpus];
        if !sys::map_lookup(fd.as_fd(), key, &mut buf)? {
            return Ok(None);
        }
        let mut sum = PacketBytes::default();
        for cell in buf.chunks_exact(CELL) {
            sum.packets += u64::from_ne_bytes(cell[0..8].try_into().unwrap());
            sum.bytes += u64::from_ne_bytes(cell[8..16].try_into().unwrap());
        }
        Ok(Some(sum))
    }

    /// Runs the pipeline once on `packet` with BPF_PROG_TEST_RUN, as if it
    /// arrived on P4 port `port` (`None`: on no port). The verdict is
    /// `TC_ACT_REDIRECT` (7) for a forwarded packet, whose egress port shows
    /// in [`Dataplane::port_stats`]; the kernel does not perform the
    /// redirect in a test run. Must run in the network namespace of the
    /// ports.
    pub fn test_run(&self, packet: &[u8], port: Option<u16>) -> Result<TestRunOutput> {
        self.test_run_repeat(packet, port, 1)
    }

    /// [`Dataplane::test_run`] `repeat` times on the same skb (so a packet
    /// the pipeline rewrites is seen rewritten by the later runs).
    pub fn test_run_repeat(
        &self,
        packet: &[u8],
        port: Option<u16>,
        repeat: u32,
    ) -> Result<TestRunOutput> {
        let ifindex = match port {
            Some(p) => {
                self.ports
                    .get(&p)
                    .ok_or_else(|| Error::Port {
                        port: p,
                        reason: "not configured".into(),
                    })?
                    .1
            }
            None => 0,
        };
        let program: &SchedClassifier = self
            .ebpf
            .program(PROGRAM_NAME)
            .expect("checked in open")
            .try_into()
            .map_err(|e| program_err("type", e))?;
        let fd = program.fd().map_err(|e| program_err("fd", e))?;
        sys::prog_test_run(fd.as_fd(), packet, ifindex, repeat).map_err(|source| Error::Sys {
            what: "BPF_PROG_TEST_RUN".into(),
            source,
        })
    }

    /// Closes the data plane but leaves it forwarding: maps and links stay
    /// pinned, and a later [`Dataplane::open`] with the same pin directory
    /// takes over.
    pub fn close(self) {}

    /// Stops forwarding and forgets everything: removes the TCX links from
    /// the ports and every pinned map (entries and counters are lost) and
    /// the pin directory.
    pub fn detach(self) -> Result<()> {
        let dir = self.pin_dir.clone();
        let rm = |path: &Path| match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::PinDir {
                path: path.to_path_buf(),
                source: e,
            }),
            _ => Ok(()),
        };
        for (_, path) in self.pinned_links()? {
            // Detach at once: dropping the last reference alone lets the
            // kernel release the link a little later.
            if let Ok(fd) = sys::obj_get(&path) {
                let _ = sys::link_detach(fd.as_fd());
            }
            rm(&path)?;
        }
        let tables = Table::ALL.iter().map(|t| table_map_name(*t));
        for name in tables.chain(map_name::NON_TABLE.map(String::from)) {
            rm(&dir.join(name))?;
        }
        drop(self);
        match fs::remove_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::PinDir {
                path: dir,
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

/// File name prefix of the pinned per-port TCX links.
const LINK_PIN_PREFIX: &str = "link_port";

fn program_err(what: &str, e: aya::programs::ProgramError) -> Error {
    Error::Program {
        what: what.to_string(),
        source: Box::new(e),
    }
}

fn link_err(pin: &Path, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Link {
        what: format!("link {}", pin.display()),
        source: Box::new(e),
    }
}

/// The ifindex of `ifname` in the calling thread's network namespace.
pub fn ifindex_of(ifname: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
    // SAFETY: valid C string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}
