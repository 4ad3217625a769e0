//! `talaria-lab`: the talaria network-namespace testbed.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use talaria_lab::manifests::{self, ServiceSet};
use talaria_lab::modes::{iptables_restore_bin, Mode};
use talaria_lab::netns::{self, State};
use talaria_lab::switch::{SwitchKind, BMV2_DIR_ENV, SWITCH_ENV};
use talaria_lab::topology::{Names, Topology};
use talaria_lab::traffic::{self, LoadSpec, Proto};
use talaria_lab::{
    bench, bringup, components, demo, doctor, faults, measure, new_service, rules, soak,
};

#[derive(Parser)]
#[command(
    name = "talaria-lab",
    version,
    about = "talaria network-namespace testbed: topology, kube-proxy baselines, load, demo, benchmarks"
)]
struct Cli {
    /// What runs on the switch ports: talaria's switch-agent, or bmv2's
    /// simple_switch_grpc (the lab compiles p4/talaria.p4 with the p4c it
    /// finds, unless --bmv2-dir names a build).
    #[arg(long, global = true, env = SWITCH_ENV, default_value = "switch-agent", value_parser = ["switch-agent", "bmv2"])]
    switch: String,
    /// Your own p4c output for p4/talaria.p4 (talaria.json,
    /// talaria.p4info.txtpb), for `--switch bmv2`, instead of the lab's.
    #[arg(long, global = true, env = BMV2_DIR_ENV)]
    bmv2_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check what the lab needs from this machine (root, bpffs, kernel,
    /// tools, components, bmv2) and say how to fix what is missing; exits 1
    /// when the demo cannot run.
    Doctor {
        /// Also fix what can be fixed (mount bpffs).
        #[arg(long)]
        fix: bool,
    },
    /// Bring up the embedded demo in talaria mode, run HTTP and UDP echo from
    /// pods to ClusterIPs, print a results table, tear down.
    Demo {
        /// Keep the lab up afterwards (remove it with `talaria-lab down`).
        #[arg(long)]
        keep: bool,
        /// Topology YAML (default: the embedded 1 switch / 3 nodes / 4 pods / 20 Services).
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Seconds of traffic per test.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
    /// Run the benchmarks; writes CSV, SVG plots and summary.md.
    Bench(bench::BenchArgs),
    /// Faults under load: kill -9 switch-agent, the controller and a node
    /// agent in turn while long and short connections run; writes
    /// summary.md and faults.csv, fails unless every long connection and
    /// every table survived.
    Faults(faults::FaultsArgs),
    /// Soak: endpoint churn at scale (10,000 Services × 10 endpoints, 100
    /// changes a second for 10 minutes by default) under long and short
    /// connections; writes summary.md and samples.csv, fails if a long
    /// connection broke or the controller ended out of step.
    Soak(soak::SoakArgs),
    /// A new Service's first packet: creates Services one at a time in a
    /// fake Kubernetes API (controller and node agents in Kubernetes mode)
    /// and measures creation → first TCP connection to its ClusterIP
    /// served from a remote node; writes summary.md and latencies.csv,
    /// fails if a Service was not served.
    BenchNewService(new_service::NewServiceArgs),
    /// Bring up a lab, start the pod servers, apply a mode, and keep it up.
    Up {
        /// Topology YAML (default: embedded).
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Load-balancing mode.
        #[arg(long, value_enum, default_value = "direct")]
        mode: Mode,
    },
    /// Remove labs recorded in state files: the given prefixes, or all.
    Down {
        /// Prefixes (e.g. tl3f2a); none = every lab in the state dir.
        prefixes: Vec<String>,
    },
    /// List labs recorded in the state dir.
    Status,
    /// One measurement on a fresh lab: mode, load kind, Services, concurrency.
    Run {
        /// Topology YAML (default: embedded).
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Load-balancing mode.
        #[arg(long, value_enum, default_value = "direct")]
        mode: Mode,
        /// Load kind.
        #[arg(long, value_enum, default_value = "http-short")]
        proto: Proto,
        /// Number of Services programmed (overrides the topology's).
        #[arg(long)]
        services: Option<u32>,
        /// Concurrent workers.
        #[arg(long, default_value_t = 10)]
        concurrency: u32,
        /// Seconds of traffic.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
    /// Write the generated manifests and configs of a topology (no root).
    Manifests {
        /// Topology YAML (default: embedded).
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Output directory.
        #[arg(long, default_value = "lab-manifests")]
        out: PathBuf,
        /// Number of Services (overrides the topology's).
        #[arg(long)]
        services: Option<u32>,
    },
    /// Print a node's kube-proxy rules (iptables-restore or nft -f input).
    Rules {
        /// iptables or nftables.
        #[arg(long, value_enum)]
        mode: Mode,
        /// Topology YAML (default: embedded).
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Number of Services (overrides the topology's).
        #[arg(long)]
        services: Option<u32>,
    },
    /// A fake Kubernetes API server holding one coordination.k8s.io Lease
    /// (plain HTTP), for controllers with leader election in a lab; runs
    /// until killed or --max-seconds.
    LeaseServer {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:9443")]
        listen: SocketAddr,
        /// Exit after this many seconds (bounded lifetime).
        #[arg(long, default_value_t = 4 * 3600)]
        max_seconds: u64,
    },
    /// Pod server: HTTP/1.1 on --http-port, UDP echo on --udp-port (run inside a pod netns).
    Serve {
        /// Backend name put in every response.
        #[arg(long)]
        name: String,
        /// HTTP port.
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// UDP echo port.
        #[arg(long, default_value_t = 5353)]
        udp_port: u16,
        /// File to create once listening.
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Listen on IPv6 as well (a dual-stack pod): one socket of each
        /// kind on `[::]`, which takes IPv4 too.
        #[arg(long)]
        ipv6: bool,
        /// Exit after this many seconds (bounded lifetime).
        #[arg(long, default_value_t = 4 * 3600)]
        max_seconds: u64,
    },
    /// Load generator (run inside a pod netns); prints a JSON result.
    Load {
        /// Load kind.
        #[arg(long, value_enum)]
        proto: Proto,
        /// Targets IP:PORT, comma-separated, used round-robin.
        #[arg(long, value_delimiter = ',', required = true)]
        target: Vec<SocketAddr>,
        /// Workers (connections for `hold`).
        #[arg(long, default_value_t = 10)]
        concurrency: u32,
        /// Run length in milliseconds (capped at 600 s).
        #[arg(long, default_value_t = 3000)]
        duration_ms: u64,
        /// Stop after this many requests.
        #[arg(long, default_value_t = u64::MAX)]
        max_requests: u64,
        /// Per-request timeout in milliseconds.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// `hold`: milliseconds between requests of one connection.
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
        /// Write the JSON here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Stop early once this file exists.
        #[arg(long)]
        stop_file: Option<PathBuf>,
    },
}

fn load_topology(p: &Option<PathBuf>) -> Result<Topology> {
    match p {
        Some(p) => Ok(Topology::from_yaml(
            &std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?,
        )?),
        None => Ok(Topology::embedded_default()),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let switch = SwitchKind::parse(&cli.switch, cli.bmv2_dir.clone())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Doctor { fix } => {
            let findings = doctor::examine(fix);
            print!("{}", doctor::report(&findings));
            if !doctor::demo_ready(&findings) {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Serve {
            name,
            http_port,
            udp_port,
            ready_file,
            ipv6,
            max_seconds,
        } => rt.block_on(traffic::serve(
            name,
            http_port,
            udp_port,
            ipv6,
            ready_file,
            Duration::from_secs(max_seconds),
        )),
        Cmd::Load {
            proto,
            target,
            concurrency,
            duration_ms,
            max_requests,
            timeout_ms,
            interval_ms,
            out,
            stop_file,
        } => {
            let r = rt.block_on(traffic::run_load(LoadSpec {
                proto,
                targets: target,
                concurrency,
                duration: Duration::from_millis(duration_ms),
                max_requests,
                timeout: Duration::from_millis(timeout_ms),
                interval: Duration::from_millis(interval_ms),
                stop_file,
            }))?;
            let j = serde_json::to_string_pretty(&r)?;
            match out {
                Some(p) => std::fs::write(p, j)?,
                None => println!("{j}"),
            }
            Ok(())
        }
        Cmd::Manifests {
            topology,
            out,
            services,
        } => {
            let mut t = load_topology(&topology)?;
            if let Some(s) = services {
                t.services = s;
            }
            let names = Names {
                prefix: "tlXXXX".into(),
            };
            std::fs::create_dir_all(&out)?;
            let set = ServiceSet::from_topology(&t);
            std::fs::write(
                out.join("services.yaml"),
                manifests::services_yaml(&t, &set.services),
            )?;
            std::fs::write(out.join("nodes.yaml"), manifests::nodes_yaml(&t))?;
            std::fs::write(
                out.join("switch.yaml"),
                serde_yaml::to_string(&manifests::switch_config(&t, &names))?,
            )?;
            for n in 0..t.nodes {
                std::fs::write(
                    out.join(format!("node-{n}.yaml")),
                    serde_yaml::to_string(&manifests::node_config(&t, &names, n))?,
                )?;
            }
            println!("wrote {}", out.display());
            Ok(())
        }
        Cmd::Rules {
            mode,
            topology,
            services,
        } => {
            let mut t = load_topology(&topology)?;
            if let Some(s) = services {
                t.services = s;
            }
            let set = ServiceSet::from_topology(&t);
            // One ruleset per Service family, as kube-proxy's proxiers.
            for &family in &t.service_families {
                match mode {
                    Mode::Iptables => {
                        print!(
                            "# {}\n{}",
                            iptables_restore_bin(family),
                            rules::iptables_restore(&t, &set, family)
                        )
                    }
                    Mode::Nftables => {
                        print!("{}", rules::nft_script(&t, &set, family, t.node_ip(0)))
                    }
                    m => bail!("{} has no host rules", m.name()),
                }
            }
            Ok(())
        }
        Cmd::Status => {
            let files = State::list();
            if files.is_empty() {
                println!("no labs in {}", netns::state_dir().display());
            }
            for f in files {
                match State::load(&f) {
                    Ok(s) => println!(
                        "{}  mode={}  switch={}  netns={}  processes={}  owner pid {}",
                        s.prefix,
                        s.mode,
                        s.switch,
                        s.netns.len(),
                        s.procs.len(),
                        s.owner_pid
                    ),
                    Err(e) => println!("{}: unreadable: {e}", f.display()),
                }
            }
            Ok(())
        }
        Cmd::Down { prefixes } => {
            let files: Vec<PathBuf> = if prefixes.is_empty() {
                State::list()
            } else {
                prefixes.iter().map(|p| State::path(p)).collect()
            };
            let mut failed = false;
            for f in files {
                let s = State::load(&f).with_context(|| format!("state file {}", f.display()))?;
                let problems = netns::teardown(&s);
                if problems.is_empty() {
                    println!(
                        "removed lab {} ({} namespaces, {} processes)",
                        s.prefix,
                        s.netns.len(),
                        s.procs.len()
                    );
                } else {
                    failed = true;
                    for p in problems {
                        eprintln!("{}: {p}", s.prefix);
                    }
                }
            }
            if failed {
                bail!("some resources could not be removed");
            }
            Ok(())
        }
        Cmd::Up { topology, mode } => {
            let t = load_topology(&topology)?;
            rt.block_on(async {
                let (mut lab, _) = bringup::lab_for(t, mode, &switch).await?;
                lab.keep();
                println!(
                    "lab {} is up in {} mode on {}",
                    lab.prefix(),
                    mode.name(),
                    switch.name()
                );
                println!("  manifests and configs: {}", lab.run_dir.display());
                println!(
                    "  a pod shell:           ip netns exec {} bash",
                    lab.names.pod(0, 0)
                );
                println!("  remove it:             talaria-lab down {}", lab.prefix());
                Ok(())
            })
        }
        Cmd::Run {
            topology,
            mode,
            proto,
            services,
            concurrency,
            seconds,
        } => {
            let mut t = load_topology(&topology)?;
            if let Some(s) = services {
                t.services = s;
            }
            rt.block_on(async {
                let d = Duration::from_secs(seconds);
                let r = measure::single_run(t, mode, &switch, proto, concurrency, d).await?;
                println!("{}", serde_json::to_string_pretty(&r)?);
                Ok(())
            })
        }
        Cmd::Demo {
            keep,
            topology,
            seconds,
        } => {
            let t = load_topology(&topology)?;
            let d = Duration::from_secs(seconds);
            rt.block_on(demo::run(t, keep, d, switch.clone()))
                .map(|_| ())
        }
        Cmd::Bench(args) => rt.block_on(bench::run(args, switch.clone(), cli.bmv2_dir)),
        Cmd::Faults(args) => rt.block_on(faults::run(args, switch.clone())),
        Cmd::LeaseServer {
            listen,
            max_seconds,
        } => rt.block_on(async {
            let leases = talaria_controller::source::fake_lease::FakeLeases::default();
            let addr = leases.serve(listen).await?;
            eprintln!("fake Lease API server on http://{addr}");
            tokio::time::sleep(std::time::Duration::from_secs(max_seconds)).await;
            Ok(())
        }),
        Cmd::Soak(args) => rt.block_on(soak::run_soak(args, switch.clone())),
        Cmd::BenchNewService(args) => rt.block_on(new_service::run(args, switch.clone())),
    }
    .map_err(|e| {
        let missing = components::talaria_missing(&switch);
        if !missing.is_empty() && format!("{e:#}").contains("talaria") {
            eprintln!("talaria components missing: {}", missing.join("; "));
        }
        e
    })
}
