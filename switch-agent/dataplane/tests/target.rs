//! P4Runtime write semantics of [`Dataplane`] over the real maps, and
//! restart through the pins. Root only.

use std::net::Ipv4Addr;
use talaria_preflight::{require, LOADS_BPF};
use talaria_tables::build::{self, prefix};

use talaria_common::{net::IPPROTO_TCP, p4::sizes};
use talaria_switch_dataplane::{
    testing::{mac, TestSwitch},
    Config, Dataplane, Entry, Table, Target, TargetError,
};

fn backend(id: u32, last: u8) -> Entry {
    build::backend(
        id,
        Ipv4Addr::new(10, 244, 0, last),
        8080,
        Ipv4Addr::new(192, 168, 0, 2),
    )
}

#[test]
fn insert_modify_delete_follow_p4runtime() {
    require!(LOADS_BPF);
    let sw = TestSwitch::new("tgt", 1);
    let dp = sw.dp();

    dp.insert(&backend(1, 5)).unwrap();
    assert!(matches!(
        dp.insert(&backend(1, 6)),
        Err(TargetError::AlreadyExists)
    ));
    dp.modify(&backend(1, 7)).unwrap();
    assert!(matches!(
        dp.modify(&backend(2, 7)),
        Err(TargetError::NotFound)
    ));
    assert_eq!(dp.entries(Table::Backend).unwrap(), vec![backend(1, 7)]);
    assert_eq!(dp.get(&backend(1, 0).key()).unwrap(), Some(backend(1, 7)));
    assert_eq!(dp.get(&backend(2, 0).key()).unwrap(), None);
    assert_eq!(dp.backend_counter(1).unwrap().packets, 0);
    dp.delete(&backend(1, 0).key()).unwrap();
    assert!(matches!(
        dp.delete(&backend(1, 0).key()),
        Err(TargetError::NotFound)
    ));
    assert!(matches!(dp.backend_counter(1), Err(TargetError::NotFound)));
    assert!(dp.entries(Table::Backend).unwrap().is_empty());

    // LPM: host bits are invalid; the same prefix twice already exists.
    let route = |a: [u8; 4], len| build::route(prefix(a.into(), len), 1, mac(1), mac(2));
    assert!(matches!(
        dp.insert(&route([10, 1, 2, 3], 16)),
        Err(TargetError::Invalid(_))
    ));
    dp.insert(&route([10, 1, 0, 0], 16)).unwrap();
    dp.insert(&route([10, 1, 0, 0], 24)).unwrap();
    assert!(matches!(
        dp.insert(&route([10, 1, 0, 0], 16)),
        Err(TargetError::AlreadyExists)
    ));
    let blackhole = build::blackhole(prefix(Ipv4Addr::new(10, 1, 0, 0), 16));
    dp.modify(&blackhole).unwrap();
    let mut routes = dp.entries(Table::Ipv4Route).unwrap();
    routes.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(routes.len(), 2);
    assert!(routes.contains(&blackhole) && routes.contains(&route([10, 1, 0, 0], 24)));
    // A key read is exact, not a longest-prefix match.
    assert_eq!(
        dp.get(&route([10, 1, 0, 0], 16).key()).unwrap(),
        Some(blackhole)
    );
    assert_eq!(dp.get(&route([10, 1, 2, 0], 24).key()).unwrap(), None);
    assert!(matches!(
        dp.delete(&route([10, 2, 0, 0], 16).key()),
        Err(TargetError::NotFound)
    ));

    // Exact tables fill up at their P4 size.
    for i in 0..sizes::SWITCH_ADDR {
        dp.insert(&build::switch_addr(Ipv4Addr::from(0x0a00_0000 + i)))
            .unwrap();
    }
    match dp.insert(&build::switch_addr(Ipv4Addr::new(10, 9, 9, 9))) {
        Err(TargetError::Full { size }) => assert_eq!(size, sizes::SWITCH_ADDR),
        other => panic!("expected Full, got {other:?}"),
    }
    // So do LPM tables.
    let pod_node = |addr| build::pod_node(prefix(addr, 24), Ipv4Addr::new(192, 168, 0, 2));
    for i in 0..sizes::POD_NODE {
        dp.insert(&pod_node(Ipv4Addr::from(0x0a00_0000 + (i << 8))))
            .unwrap();
    }
    match dp.insert(&pod_node(Ipv4Addr::new(11, 0, 0, 0))) {
        Err(TargetError::Full { size }) => assert_eq!(size, sizes::POD_NODE),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(
        dp.entries(Table::PodNode).unwrap().len() as u32,
        sizes::POD_NODE
    );
    assert!(matches!(
        dp.counter(talaria_switch_dataplane::CounterId::Drop, 32),
        Err(TargetError::Invalid(_))
    ));
}

#[test]
fn restart_keeps_entries_and_the_attachment() {
    require!(LOADS_BPF);
    let mut sw = TestSwitch::new("restart", 2);
    let svc = build::service(Ipv4Addr::new(10, 96, 0, 1), 443, IPPROTO_TCP, 3, 0, 0);
    let dp = sw.dp.take().unwrap();
    dp.insert(&svc).unwrap();
    let config = Config {
        pin_dir: dp.pin_dir().to_path_buf(),
        ports: dp
            .ports()
            .iter()
            .map(|(p, (n, _))| (*p, n.clone()))
            .collect(),
    };
    let (_, before) =
        aya::programs::SchedClassifier::query_tcx("sw1", aya::programs::TcAttachType::Ingress)
            .unwrap();
    assert_eq!(before.len(), 1);
    dp.close();

    // Still attached with the process's handle gone.
    let (_, closed) =
        aya::programs::SchedClassifier::query_tcx("sw1", aya::programs::TcAttachType::Ingress)
            .unwrap();
    assert_eq!(
        closed.len(),
        1,
        "the pinned link keeps the program attached"
    );

    let dp = Dataplane::open(config).unwrap();
    assert_eq!(dp.entries(Table::ServiceV4).unwrap(), vec![svc]);
    let (_, after) =
        aya::programs::SchedClassifier::query_tcx("sw1", aya::programs::TcAttachType::Ingress)
            .unwrap();
    assert_eq!(
        after.len(),
        1,
        "the new program replaced the old one in the same link"
    );
    assert_ne!(after[0].id(), before[0].id(), "a new program");
    sw.dp = Some(dp);
}

#[test]
fn detach_removes_the_attachment_and_the_pins() {
    require!(LOADS_BPF);
    let mut sw = TestSwitch::new("detach", 1);
    let dp = sw.dp.take().unwrap();
    let dir = dp.pin_dir().to_path_buf();
    assert!(dir.join("SWITCH_BACKEND").exists() && dir.join("link_port1").exists());
    dp.detach().unwrap();
    let (_, progs) =
        aya::programs::SchedClassifier::query_tcx("sw1", aya::programs::TcAttachType::Ingress)
            .unwrap();
    assert!(progs.is_empty(), "still attached: {progs:?}");
    assert!(!dir.exists());
}

#[test]
fn maps_pinned_with_another_layout_are_refused() {
    require!(LOADS_BPF);
    let mut sw = TestSwitch::new("layout", 1);
    let dp = sw.dp.take().unwrap();
    let config = Config {
        pin_dir: dp.pin_dir().to_path_buf(),
        ports: Default::default(),
    };
    dp.detach().unwrap();

    // An "older build" left SWITCH_SWITCH_ADDR with 8 entries instead of 16.
    std::fs::create_dir_all(&config.pin_dir).unwrap();
    struct RemoveOnDrop(std::path::PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = RemoveOnDrop(config.pin_dir.clone());
    let pin = std::ffi::CString::new(config.pin_dir.join("SWITCH_SWITCH_ADDR").to_str().unwrap())
        .unwrap();
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // BPF_MAP_TYPE_HASH
    attr[4..8].copy_from_slice(&4u32.to_ne_bytes());
    attr[8..12].copy_from_slice(&4u32.to_ne_bytes());
    attr[12..16].copy_from_slice(&8u32.to_ne_bytes());
    // SAFETY: BPF_MAP_CREATE and BPF_OBJ_PIN with valid attributes.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), attr.len()) };
    assert!(fd >= 0, "map create: {}", std::io::Error::last_os_error());
    let mut attr = [0u8; 128];
    attr[0..8].copy_from_slice(&(pin.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
    let r = unsafe { libc::syscall(libc::SYS_bpf, 6, attr.as_ptr(), attr.len()) };
    assert_eq!(r, 0, "pin: {}", std::io::Error::last_os_error());
    unsafe { libc::close(fd as i32) };

    match Dataplane::open(config.clone()) {
        Err(talaria_switch_dataplane::Error::Layout { name, want, got }) => {
            assert_eq!(name, "SWITCH_SWITCH_ADDR");
            assert_eq!(want.2, sizes::SWITCH_ADDR);
            assert_eq!(got.2, 8);
        }
        other => panic!("expected a layout error, got {other:?}"),
    }
}

#[test]
fn reopen_with_fewer_ports_detaches_the_dropped_port() {
    require!(LOADS_BPF);
    let mut sw = TestSwitch::new("ports", 2);
    let dp = sw.dp.take().unwrap();
    let mut config = Config {
        pin_dir: dp.pin_dir().to_path_buf(),
        ports: Default::default(),
    };
    config.ports.insert(1, "sw1".to_string());
    dp.close();
    let dp = Dataplane::open(config).unwrap();
    let attached = |ifname: &str| {
        aya::programs::SchedClassifier::query_tcx(ifname, aya::programs::TcAttachType::Ingress)
            .unwrap()
            .1
            .len()
    };
    assert_eq!(attached("sw1"), 1);
    assert_eq!(attached("sw2"), 0);
    assert_eq!(dp.port_stats().unwrap().len(), 1);
    sw.dp = Some(dp);
}
