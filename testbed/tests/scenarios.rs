//! Every scenario file in `testbed/scenarios/` runs through the library runner with the real
//! `tor-agent` and `tor-proxy` code as child processes (the `testbed` binary's `run-agent` /
//! `run-proxy` subcommands) and must pass: every invariant after every fault window, every
//! planned window run. On top of the verdict, the reports are checked for what each fault
//! must have done (a crash or a hang moves switches and is detected; a window converges).
//!
//! The `bench-*.toml` files are the failover figures' workloads (10 switches x 10k MACs,
//! 1,000 switches): too heavy for a debug test run, so they are only validated here and
//! run by hand in release (see `testbed/BENCHMARKS-failover.md`).
//!
//! `real-switches.toml` needs Debian's `ovsdb-server` and `vtep-ctl` (openvswitch-vtep): a
//! machine without them fails this test, it does not skip it.

use std::path::{Path, PathBuf};
use std::process::Command;

use testbed::scenario::{self, Launcher, RunOptions, Scenario, ScenarioReport};

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn scenario_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(scenarios_dir())
        .expect("testbed/scenarios exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

fn is_bench(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("bench-"))
}

/// `testbed scenario --check FILE`.
fn check_file(path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(["scenario", "--check"])
        .arg(path)
        .output()
        .expect("run testbed")
}

fn run_file(rt: &tokio::runtime::Runtime, path: &Path) -> ScenarioReport {
    let s = Scenario::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let launcher = Launcher::Subcommand(PathBuf::from(env!("CARGO_BIN_EXE_testbed")));
    rt.block_on(scenario::run(
        s,
        RunOptions {
            launcher,
            progress: true,
            keep_dir: false,
        },
    ))
    .unwrap_or_else(|e| panic!("{}: the topology did not start: {e}", path.display()))
}

/// What every report must show beyond `passed`.
fn check_report(name: &str, r: &ScenarioReport) -> Vec<String> {
    let mut bad = Vec::new();
    if !r.passed {
        bad.push(format!("{name}: FAILED: {:?}", r.failures));
    }
    if r.windows.len() != r.windows_planned || r.windows.is_empty() {
        bad.push(format!(
            "{name}: {} windows ran, {} planned",
            r.windows.len(),
            r.windows_planned
        ));
    }
    if r.setup.converged_ms.is_none() {
        bad.push(format!("{name}: setup did not converge"));
    }
    for w in &r.windows {
        let what = format!("{name} window {} ({})", w.window, w.label);
        if w.converged_ms.is_none() {
            bad.push(format!("{what}: no convergence time"));
        }
        // A fault that takes an agent away from its switches must be seen and must move
        // them: a window that "passes" without either did not test the failover.
        let takes_agent = w.faults.iter().any(|f| {
            f.starts_with("agent_crash")
                || f.starts_with("agent_hang")
                || (f.starts_with("partition") && f.ends_with(".south"))
        });
        if takes_agent {
            if w.switches_reconnected.is_empty() {
                bad.push(format!("{what}: no switch moved to another agent"));
            }
            if w.detection_ms.is_none() || w.detection_by.is_none() {
                bad.push(format!("{what}: no detection time"));
            }
            if w.reconnect_last_ms.is_none() || w.audit_max_ms.is_none() {
                bad.push(format!("{what}: no reconnect or audit time"));
            }
            if let (Some(d), Some(c)) = (w.detection_ms, w.converged_ms) {
                if !(0..=c).contains(&d) {
                    bad.push(format!("{what}: detection {d} ms not within 0..{c} ms"));
                }
            }
            // The surviving agent's memory was measured.
            if !w
                .memory
                .iter()
                .any(|m| m.name.starts_with("agent-") && m.peak_kb.is_some_and(|k| k > 0))
            {
                bad.push(format!("{what}: no agent memory measured"));
            }
        }
    }
    bad
}

#[test]
fn every_scenario_file_passes() {
    let files = scenario_files();
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_stem()?.to_str().map(String::from))
        .collect();
    // The fault matrix of issue 6 (one file per fault) and the real-switch scenario: a file
    // that goes missing must not silently shrink the test.
    for want in [
        "demo",
        "agent-crash",
        "agent-hang",
        "partition-south",
        "partition-north",
        "control-node-restart",
        "proxy-crash",
        "switch-restart",
        "mac-churn-failover",
        "config-change-failover",
        "real-switches",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "testbed/scenarios/{want}.toml is missing"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut bad = Vec::new();
    for path in &files {
        let name = path
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        if is_bench(path) {
            // Too heavy for a debug run: validated only.
            if let Err(e) = Scenario::load(path) {
                bad.push(format!("{name}: {e}"));
            }
            continue;
        }
        eprintln!("=== scenario {name}");
        let r = run_file(&rt, path);
        eprint!("{}", r.render_text());
        let mut problems = check_report(&name, &r);
        match name.as_str() {
            "real-switches" if r.topology.real_switches == 0 => {
                problems.push("real-switches: no real switch in the topology".into());
            }
            "agent-crash" | "demo" => {
                // SIGKILL: the switch sessions die with the agent; routes fall to HA-stale
                // and come back live, none is withdrawn.
                let w = &r.windows[0];
                let withdrawn: usize = w.routes.iter().map(|x| x.withdrawn).sum();
                let to_stale: usize = w.routes.iter().map(|x| x.to_stale).sum();
                if withdrawn != 0 || to_stale == 0 {
                    problems.push(format!(
                        "{name}: crash window: {withdrawn} routes withdrawn, {to_stale} fell to HA-stale"
                    ));
                }
            }
            "agent-hang" => {
                let w = &r.windows[0];
                if !w
                    .detection_by
                    .as_deref()
                    .is_some_and(|b| b.contains("proxy") || b.contains("unreachable"))
                {
                    problems.push(format!(
                        "agent-hang: detected by {:?}, expected the proxy's check",
                        w.detection_by
                    ));
                }
            }
            _ => {}
        }
        // The JSON report is complete and machine-readable.
        let json = serde_json::to_value(&r).expect("report serializes");
        if json["windows"].as_array().map(|a| a.len()) != Some(r.windows.len()) {
            problems.push(format!("{name}: JSON report lost windows"));
        }
        bad.extend(problems);
    }
    assert!(bad.is_empty(), "scenario failures:\n{}", bad.join("\n"));
}

#[test]
fn a_malformed_scenario_file_is_refused_with_a_precise_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "name = \"x\"\n[[step]]\ndo = \"agent_crash\"\nagent = \"agent-q\"\n",
            "step 1 (agent_crash): agent \"agent-q\" is not one of agent-a, agent-b",
        ),
        (
            "name = \"x\"\n[topology]\nswitchs = 3\n[[step]]\ndo = \"converge\"\n",
            "unknown field `switchs`",
        ),
        (
            "name = \"x\"\n[[step]]\ndo = \"partition\"\nlink = \"agent-a\"\n",
            "step 1 (partition): link \"agent-a\" is not \"<agent>.south\" or \"<agent>.north\"",
        ),
        (
            "name = \"x\"\n[[step]]\ndo = \"agent_hang\"\nagent = \"busiest\"\nconverge = false\n",
            "the last step must converge",
        ),
        ("name = \"x\"\n[[step]\n", "scenario TOML"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&p, text).expect("write");
        // The library names the step and the field.
        let e = Scenario::load(&p)
            .expect_err("malformed file accepted")
            .to_string();
        assert!(e.contains(want), "case {i}: {e:?} should contain {want:?}");
        // The binary refuses it before starting anything, non-zero, with the same message.
        let out = check_file(&p);
        assert!(
            !out.status.success(),
            "case {i}: exit status {}",
            out.status
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(want),
            "case {i}: stderr {stderr:?} should contain {want:?}"
        );
    }
    // A missing file names the path.
    let missing = dir.path().join("nope.toml");
    let e = Scenario::load(&missing)
        .expect_err("missing file")
        .to_string();
    assert!(e.contains("nope.toml"), "{e}");
    // Every shipped file is valid (the bench files too).
    for p in scenario_files() {
        let out = check_file(&p);
        assert!(
            out.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
