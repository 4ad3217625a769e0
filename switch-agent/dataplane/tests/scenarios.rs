//! The packet scenarios of `talaria_switch_dataplane::testing::scenarios`
//! through the real pipeline with BPF_PROG_TEST_RUN. Root only; each suite
//! builds its own namespace with veth ports and tears it down.
//!
//! The same suites run through real ports on switch-agent and on bmv2 in
//! `bmv2-testbed/tests/parity.rs`. Here the kernel does not perform the
//! redirect, so the egress port is the one whose tx counter moved, and the
//! per-port drop counters (metrics only, no P4 twin) are checked as well.

use talaria_preflight::{require, LOADS_BPF};
use talaria_switch_dataplane::{
    testing::{
        scenarios::{self, Counters, Op, Rig, RigError, Suite, Watch, INGRESS_PORT},
        TestSwitch,
    },
    CounterId, Dataplane, Entry, Target,
};

const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// A data plane driven with BPF_PROG_TEST_RUN.
struct TestRun<'a>(&'a Dataplane);

impl TestRun<'_> {
    fn tx(&self) -> Result<Vec<(u16, u64)>, RigError> {
        Ok(self
            .0
            .port_stats()?
            .iter()
            .map(|p| (p.port, p.tx.packets))
            .collect())
    }
}

impl Rig for TestRun<'_> {
    fn write(&mut self, op: Op, entry: &Entry) -> Result<(), RigError> {
        Ok(match op {
            Op::Insert => self.0.insert(entry),
            Op::Modify => self.0.modify(entry),
            Op::Delete => self.0.delete(&entry.key()),
        }?)
    }

    fn send(&mut self, frame: &[u8]) -> Result<Vec<(u16, Vec<u8>)>, RigError> {
        let before = self.tx()?;
        let out = self.0.test_run(frame, Some(INGRESS_PORT))?;
        let after = self.tx()?;
        let moved: Vec<u16> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| a.1 != b.1)
            .map(|(b, _)| b.0)
            .collect();
        match (out.retval, moved.as_slice()) {
            (TC_ACT_REDIRECT, [port]) => Ok(vec![(*port, out.data)]),
            (TC_ACT_SHOT, []) => Ok(vec![]),
            (retval, moved) => {
                Err(format!("verdict {retval} with tx counters moved on ports {moved:?}").into())
            }
        }
    }

    fn counters(&mut self, watch: &Watch) -> Result<Counters, RigError> {
        let dp = self.0;
        let mut c = Counters::empty(watch);
        for (i, cell) in c.drops.iter_mut().enumerate() {
            *cell = dp.counter(CounterId::Drop, i as u32)?.packets;
        }
        for (i, cell) in c.events.iter_mut().enumerate() {
            *cell = dp.counter(CounterId::LbEvent, i as u32)?.packets;
        }
        for (id, cell) in c.services.iter_mut() {
            *cell = dp.counter(CounterId::Service, u32::from(*id))?;
        }
        for id in &watch.backends {
            // Only backends with an entry have a direct counter.
            if let Ok(p) = dp.backend_counter(*id) {
                c.backends.insert(*id, p);
            }
        }
        let ports = dp.port_stats()?;
        let ingress = ports
            .iter()
            .find(|p| p.port == INGRESS_PORT)
            .ok_or("no ingress port")?;
        let mut drops = vec![0; c.drops.len()];
        for (reason, count) in &ingress.drops {
            drops[usize::from(reason.code())] = count.packets;
        }
        c.ingress_drops = Some(drops);
        Ok(c)
    }
}

fn run(suite: &Suite) {
    let sw = TestSwitch::new("scen", suite.ports);
    let outcomes = scenarios::run(&mut TestRun(sw.dp()), suite)
        .unwrap_or_else(|e| panic!("{}: {e}", suite.name));
    assert!(!outcomes.is_empty(), "{}: no scenario ran", suite.name);
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| format!("{}: {o}", o.scenario))
        .collect();
    assert!(
        failed.is_empty(),
        "{}: {} of {} scenarios failed:\n{}",
        suite.name,
        failed.len(),
        outcomes.len(),
        failed.join("\n")
    );
}

fn suite(name: &str) -> Suite {
    scenarios::suites()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no suite {name}"))
}

#[test]
fn every_suite_has_a_test_here() {
    let here = ["tables", "pool change", "port without interface"];
    let all: Vec<&str> = scenarios::suites().iter().map(|s| s.name).collect();
    assert_eq!(all, here);
}

#[test]
fn packet_scenarios() {
    require!(LOADS_BPF);
    run(&suite("tables"));
}

#[test]
fn cookie_survives_pool_change() {
    require!(LOADS_BPF);
    run(&suite("pool change"));
}

#[test]
fn egress_port_without_interface_loses_the_packet_uncounted() {
    require!(LOADS_BPF);
    run(&suite("port without interface"));
}
