//! `deploy/` against the binaries it runs.
//!
//! Every document of every `deploy/*.yaml` must be a kind this test knows,
//! deserialise into its k8s-openapi type and serialise back to the same
//! fields (so a misspelt field fails too). Then, for `talaria-controller`
//! and `talaria-node`:
//!
//! - the container's `command` + `args`, with the environment variables the
//!   binary reads through clap, parse with the binary's own clap
//!   definition ([`talaria_controller::cli::Cli`], [`talaria_node::cli::Cli`]);
//!   every other environment variable is one the binary reads itself;
//! - the config file named by `--config` is a mounted ConfigMap key and
//!   parses with the binary's config type; flags are applied to it as the
//!   binary does;
//! - the container ports, probes, Prometheus annotation and the controller's
//!   Service reach the ports in that config, and the node agent's
//!   controller URL names that Service;
//! - the Roles and ClusterRoles bound to the workload's ServiceAccount grant
//!   exactly the (group, resource, verb)s the binary declares next to the
//!   code that makes the calls: nothing missing, nothing extra.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
};

use clap::{CommandFactory, Parser};
use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment},
        core::v1::{
            ConfigMap, Container, Namespace, PodSpec, PodTemplateSpec, Service, ServiceAccount,
        },
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde::{de::DeserializeOwned, Serialize};
use talaria_controller::config::SourceConfig;

/// ConfigMaps the manifests mount but do not contain (deploy/README.md says
/// how to create them).
const EXTERNAL_CONFIG_MAPS: &[&str] = &["talaria-p4info"];

/// Environment variables `talaria-controller` reads outside clap:
/// `RUST_LOG` (the log filter) and the leader-election identity and
/// namespace fallbacks (`source::kube::identity`, `cli::Cli::apply`).
const CONTROLLER_ENV: &[&str] = &["RUST_LOG", "POD_NAME", "POD_NAMESPACE", "HOSTNAME"];

/// Environment variables `talaria-node` reads outside clap: `RUST_LOG` and
/// `NODE_NAME` (`k8s::node_name`).
const NODE_ENV: &[&str] = &["RUST_LOG", "NODE_NAME"];

/// What the downward API gives a field reference, for the parse.
fn field_ref_value(path: &str) -> String {
    match path {
        "status.hostIP" | "status.podIP" => "192.0.2.11".into(),
        "spec.nodeName" => "node-1".into(),
        "metadata.name" => "pod-1".into(),
        "metadata.namespace" => "talaria-system".into(),
        other => panic!("field reference {other:?} not known to this test"),
    }
}

/// One manifest document, typed.
#[derive(Debug)]
enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ConfigMap(ConfigMap),
    Service(Service),
    Deployment(Deployment),
    DaemonSet(DaemonSet),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
}

/// Deserialises `v` as `K` after checking its apiVersion and kind, and
/// checks that `K` keeps every field of it.
fn typed<K>(v: serde_json::Value, at: &str) -> K
where
    K: k8s_openapi::Resource + DeserializeOwned + Serialize,
{
    assert_eq!(v["apiVersion"], K::API_VERSION, "{at}: apiVersion");
    let k: K = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{at}: not a valid {}: {e}", K::KIND));
    let back = serde_json::to_value(&k).unwrap();
    assert_eq!(
        back,
        v,
        "{at}: fields lost in the {} round trip (a misspelt or misplaced field?)",
        K::KIND
    );
    k
}

/// Every object of `deploy/`, with where it came from.
struct Manifests {
    objects: Vec<(String, Object)>,
}

impl Manifests {
    fn load() -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no manifests in {}", dir.display());
        let mut objects = Vec::new();
        for file in &files {
            objects.extend(Self::parse_file(file));
        }
        Self { objects }
    }

    fn parse_file(file: &Path) -> Vec<(String, Object)> {
        use serde::Deserialize;
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        let mut out = Vec::new();
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let at = format!("{name} document {}", i + 1);
            let y = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{at}: not YAML: {e}"));
            if y.is_null() {
                continue;
            }
            let v = serde_json::to_value(&y).unwrap();
            let kind = v["kind"].as_str().unwrap_or_default().to_string();
            let o = match kind.as_str() {
                "Namespace" => Object::Namespace(typed(v, &at)),
                "ServiceAccount" => Object::ServiceAccount(typed(v, &at)),
                "ConfigMap" => Object::ConfigMap(typed(v, &at)),
                "Service" => Object::Service(typed(v, &at)),
                "Deployment" => Object::Deployment(typed(v, &at)),
                "DaemonSet" => Object::DaemonSet(typed(v, &at)),
                "ClusterRole" => Object::ClusterRole(typed(v, &at)),
                "ClusterRoleBinding" => Object::ClusterRoleBinding(typed(v, &at)),
                "Role" => Object::Role(typed(v, &at)),
                "RoleBinding" => Object::RoleBinding(typed(v, &at)),
                other => panic!("{at}: kind {other:?} is not one this test checks"),
            };
            out.push((format!("{at} ({kind})"), o));
        }
        out
    }

    fn config_map(&self, ns: &str, name: &str) -> Option<&ConfigMap> {
        self.objects.iter().find_map(|(_, o)| match o {
            Object::ConfigMap(c)
                if c.metadata.namespace.as_deref() == Some(ns)
                    && c.metadata.name.as_deref() == Some(name) =>
            {
                Some(c)
            }
            _ => None,
        })
    }

    /// `data[key]` of ConfigMap `ns/name`, which must exist.
    fn config_map_key(&self, ns: &str, name: &str, key: &str) -> String {
        let cm = self
            .config_map(ns, name)
            .unwrap_or_else(|| panic!("ConfigMap {ns}/{name} is not in deploy/"));
        cm.data
            .as_ref()
            .and_then(|d| d.get(key))
            .unwrap_or_else(|| panic!("ConfigMap {ns}/{name} has no key {key:?}"))
            .clone()
    }

    /// The pod template and namespace of the one workload whose container
    /// runs `binary`, and that container.
    fn workload(&self, binary: &str) -> Workload<'_> {
        let mut found = Vec::new();
        for (at, o) in &self.objects {
            let (meta, template, selector) = match o {
                Object::Deployment(d) => {
                    let s = d.spec.as_ref().unwrap();
                    (&d.metadata, &s.template, &s.selector)
                }
                Object::DaemonSet(d) => {
                    let s = d.spec.as_ref().unwrap();
                    (&d.metadata, &s.template, &s.selector)
                }
                _ => continue,
            };
            let labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
            let labels = labels.unwrap_or_default();
            for (k, v) in selector.match_labels.iter().flatten() {
                assert_eq!(
                    labels.get(k),
                    Some(v),
                    "{at}: selector {k}={v} misses its pods"
                );
            }
            let spec = template.spec.as_ref().unwrap();
            for c in &spec.containers {
                if c.command
                    .as_ref()
                    .and_then(|c| c.first())
                    .map(String::as_str)
                    == Some(binary)
                {
                    found.push(Workload {
                        at: at.clone(),
                        namespace: meta.namespace.clone().expect("namespaced workload"),
                        template,
                        spec,
                        container: c,
                        labels: labels.clone(),
                    });
                }
            }
        }
        assert_eq!(
            found.len(),
            1,
            "exactly one container must run {binary} as its command"
        );
        found.pop().unwrap()
    }

    /// The Services in `ns` that select pods with `labels`.
    fn services_for(&self, ns: &str, labels: &BTreeMap<String, String>) -> Vec<&Service> {
        self.objects
            .iter()
            .filter_map(|(_, o)| match o {
                Object::Service(s) if s.metadata.namespace.as_deref() == Some(ns) => Some(s),
                _ => None,
            })
            .filter(|s| {
                let sel = s.spec.as_ref().and_then(|s| s.selector.as_ref());
                sel.is_some_and(|sel| {
                    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
            })
            .collect()
    }

    /// Every (scope, group, resource, verb) granted to ServiceAccount
    /// `ns/sa`: scope `*` for ClusterRoleBindings, the namespace for
    /// RoleBindings.
    fn grants(&self, ns: &str, sa: &str) -> BTreeSet<Grant> {
        let is_sa = |s: &Subject| {
            s.kind == "ServiceAccount" && s.name == sa && s.namespace.as_deref() == Some(ns)
        };
        let rules = |kind: &str, name: &str, role_ns: Option<&str>| -> Vec<PolicyRule> {
            let found = self.objects.iter().find_map(|(_, o)| match o {
                Object::ClusterRole(r)
                    if kind == "ClusterRole" && r.metadata.name.as_deref() == Some(name) =>
                {
                    Some(r.rules.clone().unwrap_or_default())
                }
                Object::Role(r)
                    if kind == "Role"
                        && r.metadata.name.as_deref() == Some(name)
                        && r.metadata.namespace.as_deref() == role_ns =>
                {
                    Some(r.rules.clone().unwrap_or_default())
                }
                _ => None,
            });
            found.unwrap_or_else(|| panic!("{kind} {name} is bound but not in deploy/"))
        };
        let mut out = BTreeSet::new();
        let mut add = |scope: &str, rules: Vec<PolicyRule>, at: &str| {
            for r in rules {
                assert!(
                    r.non_resource_urls.is_none() && r.resource_names.is_none(),
                    "{at}: rule {r:?} has resourceNames or nonResourceURLs, which no binary uses"
                );
                for g in r.api_groups.iter().flatten() {
                    for res in r.resources.iter().flatten() {
                        for v in &r.verbs {
                            out.insert((scope.to_string(), g.clone(), res.clone(), v.clone()));
                        }
                    }
                }
            }
        };
        for (at, o) in &self.objects {
            match o {
                Object::ClusterRoleBinding(b) if b.subjects.iter().flatten().any(is_sa) => {
                    assert_eq!(b.role_ref.kind, "ClusterRole", "{at}");
                    add("*", rules("ClusterRole", &b.role_ref.name, None), at);
                }
                Object::RoleBinding(b) if b.subjects.iter().flatten().any(is_sa) => {
                    let scope = b
                        .metadata
                        .namespace
                        .clone()
                        .expect("namespaced RoleBinding");
                    let role_ns = (b.role_ref.kind == "Role").then_some(scope.as_str());
                    add(
                        &scope,
                        rules(&b.role_ref.kind, &b.role_ref.name, role_ns),
                        at,
                    );
                }
                _ => {}
            }
        }
        out
    }
}

/// (scope, API group, resource, verb); scope `*` is cluster-wide.
type Grant = (String, String, String, String);

fn expected(scope: &str, access: &[(&str, &str, &[&str])]) -> BTreeSet<Grant> {
    access
        .iter()
        .flat_map(|(g, r, verbs)| {
            verbs.iter().map(move |v| {
                (
                    scope.to_string(),
                    g.to_string(),
                    r.to_string(),
                    v.to_string(),
                )
            })
        })
        .collect()
}

/// Fails with both differences: what is missing and what is extra.
fn assert_grants(who: &str, granted: &BTreeSet<Grant>, needed: &BTreeSet<Grant>) {
    let missing: Vec<_> = needed.difference(granted).collect();
    let extra: Vec<_> = granted.difference(needed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "RBAC of {who}: missing {missing:?}, extra {extra:?} ((scope, group, resource, verb); scope * = cluster)"
    );
}

/// The container running one binary, in its pod template.
struct Workload<'a> {
    at: String,
    namespace: String,
    template: &'a PodTemplateSpec,
    spec: &'a PodSpec,
    container: &'a Container,
    labels: BTreeMap<String, String>,
}

impl Workload<'_> {
    /// `command` + `args`, then `--flag value` for each environment
    /// variable that `cmd` (the binary's clap definition) reads; panics on
    /// one it does not read unless it is in `other_env`.
    fn argv(&self, m: &Manifests, cmd: &clap::Command, other_env: &[&str]) -> Vec<String> {
        let c = self.container;
        let mut argv: Vec<String> = c.command.clone().unwrap_or_default();
        argv.extend(c.args.clone().unwrap_or_default());
        // The env-backed flags of the command and of the subcommand used
        // (of every subcommand when none is: clap then refuses the flags).
        let subs: Vec<&clap::Command> = match argv.get(1).and_then(|s| cmd.find_subcommand(s)) {
            Some(s) => vec![s],
            None => cmd.get_subcommands().collect(),
        };
        let flags: BTreeMap<String, String> = cmd
            .get_arguments()
            .chain(subs.into_iter().flat_map(|s| s.get_arguments()))
            .filter_map(|a| {
                let env = a.get_env()?.to_str()?.to_string();
                Some((env, format!("--{}", a.get_long()?)))
            })
            .collect();
        for e in c.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), None) => v.clone(),
                (None, Some(from)) => {
                    if let Some(r) = &from.config_map_key_ref {
                        m.config_map_key(&self.namespace, &r.name, &r.key)
                    } else if let Some(f) = &from.field_ref {
                        field_ref_value(&f.field_path)
                    } else {
                        panic!(
                            "{}: env {} from a source this test does not know",
                            self.at, e.name
                        )
                    }
                }
                _ => panic!("{}: env {} has no value", self.at, e.name),
            };
            match flags.get(&e.name) {
                Some(flag) => argv.extend([flag.clone(), value]),
                None => assert!(
                    other_env.contains(&e.name.as_str()),
                    "{}: env {} is read by neither {}'s flags nor its code",
                    self.at,
                    e.name,
                    argv[0]
                ),
            }
        }
        argv
    }

    /// The contents of `path` in the container: a key of a ConfigMap
    /// mounted there (a `configMap` volume or a projected one). `None` for
    /// an [`EXTERNAL_CONFIG_MAPS`] one.
    fn file(&self, m: &Manifests, path: &Path) -> Option<String> {
        for vm in self.container.volume_mounts.iter().flatten() {
            let Ok(rel) = path.strip_prefix(&vm.mount_path) else {
                continue;
            };
            let rel = rel.to_str().unwrap();
            let vol = self
                .spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == vm.name)
                .unwrap_or_else(|| panic!("{}: no volume {}", self.at, vm.name));
            let sources: Vec<(&String, Option<&Vec<_>>)> = match (&vol.config_map, &vol.projected) {
                (Some(c), _) => vec![(&c.name, c.items.as_ref())],
                (_, Some(p)) => p
                    .sources
                    .iter()
                    .flatten()
                    .filter_map(|s| s.config_map.as_ref().map(|c| (&c.name, c.items.as_ref())))
                    .collect(),
                _ => panic!("{}: {} is not a ConfigMap volume", self.at, path.display()),
            };
            for (name, items) in sources {
                let key = match items {
                    Some(items) => match items.iter().find(|i| i.path == rel) {
                        Some(i) => i.key.clone(),
                        None => continue,
                    },
                    None => rel.to_string(),
                };
                if EXTERNAL_CONFIG_MAPS.contains(&name.as_str()) {
                    return None;
                }
                return Some(m.config_map_key(&self.namespace, name, &key));
            }
            panic!("{}: nothing mounted at {}", self.at, path.display());
        }
        panic!("{}: {} is in no volume mount", self.at, path.display());
    }

    /// The container port a probe or Service names (by name or number).
    fn port(&self, p: &IntOrString) -> i32 {
        let ports = self.container.ports.iter().flatten();
        let found = match p {
            IntOrString::Int(n) => ports.clone().find(|c| c.container_port == *n),
            IntOrString::String(name) => ports.clone().find(|c| c.name.as_deref() == Some(name)),
        };
        found
            .unwrap_or_else(|| panic!("{}: port {p:?} is not a container port", self.at))
            .container_port
    }

    /// The ports of the probes' `httpGet`s, by path.
    fn probes(&self) -> BTreeMap<String, i32> {
        let c = self.container;
        [&c.liveness_probe, &c.readiness_probe, &c.startup_probe]
            .into_iter()
            .flatten()
            .map(|p| {
                let h = p.http_get.as_ref().expect("probes are httpGet");
                (h.path.clone().unwrap_or_default(), self.port(&h.port))
            })
            .collect()
    }

    /// `prometheus.io/port` of the pod template.
    fn prometheus_port(&self) -> i32 {
        let a = self
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref());
        a.and_then(|a| a.get("prometheus.io/port"))
            .unwrap_or_else(|| panic!("{}: no prometheus.io/port", self.at))
            .parse()
            .unwrap()
    }

    /// The ServiceAccount the pods run as, which must be in deploy/.
    fn service_account(&self, m: &Manifests) -> String {
        let sa = self
            .spec
            .service_account_name
            .clone()
            .expect("serviceAccountName");
        assert!(
            m.objects
                .iter()
                .any(|(_, o)| matches!(o, Object::ServiceAccount(s)
                if s.metadata.name.as_deref() == Some(&sa)
                    && s.metadata.namespace.as_deref() == Some(&self.namespace))),
            "{}: ServiceAccount {sa} is not in deploy/",
            self.at
        );
        sa
    }
}

/// Checks that the listen address is reachable from the probes (not
/// loopback) and returns its port.
fn listen_port(what: &str, addr: &str) -> i32 {
    let a: SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("{what} {addr:?}: {e}"));
    assert!(
        a.ip().is_unspecified(),
        "{what} {a} is not reachable by probes and Prometheus (use 0.0.0.0)"
    );
    i32::from(a.port())
}

/// `https://HOST:PORT`, and not the `kubernetes` Service talaria serves.
fn assert_api_server(who: &str, url: &str) {
    let rest = url
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("{who}: API server {url:?} is not https://HOST:PORT"));
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{who}: API server {url:?} has no port"));
    port.parse::<u16>().unwrap();
    assert!(
        !host.starts_with("kubernetes.default") && !host.is_empty(),
        "{who}: API server {url:?} goes through the kubernetes Service"
    );
}

struct Controller {
    config: talaria_controller::config::Config,
    /// `http://NAME.NAMESPACE.svc:PORT` of its Service.
    service_url: String,
}

fn check_controller(m: &Manifests) -> Controller {
    let w = m.workload("talaria-controller");
    let argv = w.argv(m, &talaria_controller::cli::Cli::command(), CONTROLLER_ENV);
    let cli = talaria_controller::cli::Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("{}: {argv:?}: {e}", w.at));
    let path = cli.config.clone().expect("--config");
    let text = w.file(m, &path).expect("the config is in deploy/");
    let file = talaria_controller::config::Config::parse(&text)
        .unwrap_or_else(|e| panic!("{}: {}: {e}", w.at, path.display()));
    let config = cli.apply(file).unwrap();
    assert!(
        w.file(m, &config.p4info).is_none(),
        "the P4Info is the external talaria-p4info ConfigMap"
    );

    let SourceConfig::Kubernetes {
        api_server,
        leader_election,
    } = &config.source
    else {
        panic!("{}: the controller does not read Kubernetes", w.at)
    };
    assert_api_server(&w.at, api_server);
    let le = leader_election
        .as_ref()
        .expect("leader election with 2 replicas");

    // Ports: REST, probes, metrics and the Service all reach `listen`.
    let port = listen_port("listen", &config.listen.to_string());
    assert_eq!(w.port(&IntOrString::String("http".into())), port);
    let probes = w.probes();
    assert_eq!(probes.get("/healthz"), Some(&port), "liveness");
    assert_eq!(probes.get("/readyz"), Some(&port), "readiness");
    assert_eq!(w.prometheus_port(), port, "/metrics is on the REST port");
    let services = m.services_for(&w.namespace, &w.labels);
    assert_eq!(services.len(), 1, "one Service for the controller");
    let svc = services[0];
    let sp = svc.spec.as_ref().unwrap().ports.as_ref().unwrap();
    assert_eq!(sp.len(), 1);
    let target = sp[0]
        .target_port
        .clone()
        .unwrap_or(IntOrString::Int(sp[0].port));
    assert_eq!(w.port(&target), port, "Service targetPort");
    let service_url = format!(
        "http://{}.{}.svc:{}",
        svc.metadata.name.as_ref().unwrap(),
        w.namespace,
        sp[0].port
    );

    // RBAC: the reflectors cluster-wide, the Lease in its namespace.
    let sa = w.service_account(m);
    let mut needed = expected("*", talaria_controller::source::kube::CLUSTER_ACCESS);
    needed.extend(expected(
        &le.namespace,
        talaria_controller::source::kube::LEASE_ACCESS,
    ));
    assert_grants("talaria-controller", &m.grants(&w.namespace, &sa), &needed);
    Controller {
        config,
        service_url,
    }
}

fn check_node(m: &Manifests, controller: &Controller) {
    use talaria_node::{
        cli::{Cli, Cmd},
        config::{Config, KubernetesConfig, Mode},
    };
    let w = m.workload("talaria-node");
    let argv = w.argv(m, &Cli::command(), NODE_ENV);
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{}: {argv:?}: {e}", w.at));
    let Cmd::Run(run) = cli.cmd else {
        panic!("{}: {argv:?} does not run the agent", w.at)
    };
    let path = run.config.clone().expect("--config");
    let text = w.file(m, &path).expect("the config is in deploy/");
    let file =
        Config::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {}: {e:?}", w.at, path.display()));
    let cfg = run.apply(file);

    assert_eq!(cfg.mode, Mode::Kubernetes, "{}", w.at);
    assert_api_server(&w.at, &cfg.kubernetes.api_server);
    assert!(
        !cfg.node_ip.is_unspecified(),
        "{}: node_ip is per node",
        w.at
    );
    // The node name comes from the downward API unless configured.
    if cfg.kubernetes.node_name.is_empty() {
        let e = w
            .container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "NODE_NAME");
        let field = e
            .and_then(|e| e.value_from.as_ref())
            .and_then(|f| f.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(field, Some("spec.nodeName"), "{}: NODE_NAME", w.at);
    }
    assert!(
        controller
            .config
            .fabric
            .switch_addrs
            .contains(&cfg.switch_ip),
        "{}: switch_ip {} is not one of the controller's fabric.switch_addrs",
        w.at,
        cfg.switch_ip
    );
    assert_eq!(
        cfg.kubernetes.controller_url, controller.service_url,
        "{}: controller_url",
        w.at
    );
    assert_eq!(
        KubernetesConfig::default().controller_url,
        controller.service_url,
        "the node agent's default controller_url names the controller's Service"
    );

    // Ports: metrics, the readiness probe and Prometheus.
    let port = listen_port("metrics_addr", &cfg.metrics_addr);
    assert_eq!(w.port(&IntOrString::String("metrics".into())), port);
    assert_eq!(w.probes().get("/metrics"), Some(&port), "readiness");
    assert_eq!(w.prometheus_port(), port);

    // Pins live on the host's bpffs, shared back to the host.
    let bpffs = w
        .container
        .volume_mounts
        .iter()
        .flatten()
        .find(|vm| cfg.pin_dir.starts_with(&vm.mount_path))
        .unwrap_or_else(|| panic!("{}: pin_dir {} is not mounted", w.at, cfg.pin_dir.display()));
    assert_eq!(bpffs.mount_propagation.as_deref(), Some("Bidirectional"));
    let vol = w
        .spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == bpffs.name)
        .unwrap();
    assert_eq!(
        vol.host_path.as_ref().map(|h| h.path.as_str()),
        Some(talaria_preflight::BPFFS),
        "pin_dir is on the host's bpffs"
    );

    let sa = w.service_account(m);
    assert_grants(
        "talaria-node",
        &m.grants(&w.namespace, &sa),
        &expected("*", talaria_node::k8s::CLUSTER_ACCESS),
    );
}

/// Namespaced objects are in a Namespace of `deploy/`; bindings name
/// roles and accounts that exist.
fn check_references(m: &Manifests) {
    let namespaces: BTreeSet<String> = m
        .objects
        .iter()
        .filter_map(|(_, o)| match o {
            Object::Namespace(n) => n.metadata.name.clone(),
            _ => None,
        })
        .collect();
    for (at, o) in &m.objects {
        let ns = match o {
            Object::Namespace(_) | Object::ClusterRole(_) | Object::ClusterRoleBinding(_) => {
                continue
            }
            Object::ServiceAccount(x) => &x.metadata.namespace,
            Object::ConfigMap(x) => &x.metadata.namespace,
            Object::Service(x) => &x.metadata.namespace,
            Object::Deployment(x) => &x.metadata.namespace,
            Object::DaemonSet(x) => &x.metadata.namespace,
            Object::Role(x) => &x.metadata.namespace,
            Object::RoleBinding(x) => &x.metadata.namespace,
        };
        let ns = ns
            .as_deref()
            .unwrap_or_else(|| panic!("{at}: no namespace"));
        assert!(
            namespaces.contains(ns),
            "{at}: namespace {ns} is not in deploy/"
        );
    }
}

#[test]
fn deploy_manifests_match_the_binaries() {
    let m = Manifests::load();
    check_references(&m);
    let controller = check_controller(&m);
    check_node(&m, &controller);
}

#[test]
fn unknown_kinds_and_fields_fail() {
    let dir = std::env::temp_dir().join(format!("talaria-deploy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = [
        (
            "kind",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n",
        ),
        (
            "field",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: y}\ndatta: {a: b}\n",
        ),
        (
            "apiVersion",
            "apiVersion: apps/v1beta1\nkind: Deployment\nmetadata: {name: x}\n",
        ),
    ];
    for (what, text) in bad {
        let f = dir.join(format!("{what}.yaml"));
        std::fs::write(&f, text).unwrap();
        let r = std::panic::catch_unwind(|| Manifests::parse_file(&f));
        assert!(r.is_err(), "a bad {what} was accepted");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
