//! Packet parity: every suite of switch-agent's packet scenarios
//! (`talaria_switch_dataplane::testing::scenarios`, also run through
//! BPF_PROG_TEST_RUN in `switch-agent/dataplane/tests/scenarios.rs`) runs
//! through real ports on bmv2 and on the switch-agent binary, with the same
//! expected output bytes and counter deltas, read over P4Runtime on both.
//! Prints the parity table (scenario | switch-agent | bmv2); passes only
//! when both pass every scenario.
//!
//! Root, p4c and bmv2 needed: skipped without them, failed under `CI=true`.

use talaria_bmv2_testbed::{SwitchKind, Testbed};
use talaria_preflight::require;
use talaria_switch_dataplane::testing::scenarios::{self, Outcome};

#[test]
fn packet_scenarios_agree_on_switch_agent_and_bmv2() {
    let mut needs = Vec::new();
    for n in SwitchKind::ALL.iter().flat_map(|k| k.needs()) {
        if !needs.contains(&n) {
            needs.push(n);
        }
    }
    require!(needs);
    if !SwitchKind::ALL.iter().all(|k| k.built()) {
        return;
    }

    // (suite, outcomes on switch-agent, outcomes on bmv2)
    let mut results: Vec<(&'static str, Vec<Outcome>, Vec<Outcome>)> = Vec::new();
    for suite in scenarios::suites() {
        let mut per_switch = SwitchKind::ALL.iter().map(|&kind| {
            let mut tb = Testbed::start(kind, suite.ports)
                .unwrap_or_else(|e| panic!("{kind}: starting the testbed: {e}"));
            scenarios::run(&mut tb, &suite).unwrap_or_else(|e| {
                panic!("{kind}: {e}\n--- {kind} output ---\n{}", tb.switch_output())
            })
        });
        let (agent, bmv2) = (per_switch.next().unwrap(), per_switch.next().unwrap());
        assert_eq!(agent.len(), suite.scenarios().count(), "{}", suite.name);
        results.push((suite.name, agent, bmv2));
    }

    println!("\n| suite | scenario | switch-agent | bmv2 |\n|---|---|---|---|");
    let mut failed = Vec::new();
    let mut total = 0;
    for (suite, agent, bmv2) in &results {
        for (a, b) in agent.iter().zip(bmv2) {
            total += 1;
            println!("| {suite} | {} | {a} | {b} |", a.scenario);
            if !a.passed() || !b.passed() || a.observed != b.observed {
                failed.push(format!("{suite}: {}", a.scenario));
            }
        }
    }
    println!(
        "\n{} of {total} scenarios equal and as expected on switch-agent and bmv2",
        total - failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} scenarios differ or fail:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
