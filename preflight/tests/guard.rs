//! The test guard's contract, shown on this test binary itself: a test
//! whose precondition is missing is skipped with one line outside CI, and
//! fails under `CI=true`.

use std::process::{Command, Output};
use talaria_preflight::{require, Need};

const ABSENT: Need = Need::Command {
    command: "talaria-absent-tool",
    package: "talaria-absent-package",
};

#[test]
#[ignore = "a probe: the tests below run it in a child process"]
fn probe_needs_an_absent_tool() {
    require!([ABSENT]);
    panic!("the guard let a test run without its precondition");
}

fn run_probe(ci: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "probe_needs_an_absent_tool"])
        .args(["--nocapture", "--test-threads=1"])
        .env("CI", ci)
        .output()
        .unwrap()
}

#[test]
fn outside_ci_a_missing_precondition_skips_with_one_line() {
    let out = run_probe("");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let skips: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("skipped:"))
        .collect();
    assert_eq!(
        skips,
        ["skipped: missing command talaria-absent-tool: not on PATH \
          (fix: apt-get install talaria-absent-package, or run scripts/setup.sh)"]
    );
}

#[test]
fn under_ci_a_missing_precondition_fails_the_test() {
    let out = run_probe("true");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("CI=true and a precondition is missing: missing command talaria-absent-tool"),
        "{text}"
    );
    assert!(!text.contains("the guard let a test run"), "{text}");
}
