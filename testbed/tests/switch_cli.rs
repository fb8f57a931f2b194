//! `testbed switch` and `testbed switch-ctl` as processes: flags and the
//! TOML form, the admin API driving learning while `vtep-ctl` watches the
//! database, clean shutdown on SIGTERM and SIGINT, and precise errors.

mod switch_common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switch_common::{lines, vtep_ctl, wait_for, DEADLINE};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_testbed");

/// A running `testbed switch`, with its stdout lines.
struct Running {
    child: Child,
    out: mpsc::UnboundedReceiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("testbed binary");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, out) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, out }
    }

    /// The text after `prefix` in the next line that starts with it.
    async fn line_after(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let line = tokio::time::timeout_at(deadline.into(), self.out.recv())
                .await
                .unwrap_or_else(|_| panic!("no line starting with {prefix}"))
                .expect("testbed switch exited early");
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
    }

    /// Sends a signal and waits for a clean exit.
    async fn stop(mut self, signal: &str) {
        let pid = self.child.id().to_string();
        let st = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(st.success());
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "exit status after {signal}: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "no exit after {signal}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ptcp:PORT:IP` as printed → `tcp:IP:PORT`.
fn tcp(ptcp: &str) -> String {
    let (port, ip) = ptcp.trim_start_matches("ptcp:").split_once(':').unwrap();
    format!("tcp:{ip}:{port}")
}

async fn ctl(admin: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["switch-ctl".to_string(), "--admin".into(), admin.into()];
    all.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || switch_common::run(BIN, &all))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_serves_learns_through_the_admin_api_and_stops_on_sigterm() {
    let mut sw = Running::start(&[
        "switch",
        "--name",
        "cli-sw",
        "--listen",
        "ptcp:0:127.0.0.1",
        "--tunnel-ip",
        "10.2.0.1",
        "--ports",
        "p0,p1",
        "--macs",
        "3",
        "--mac-base",
        "02:00:00:00:05:00",
        "--admin",
        "127.0.0.1:0",
    ]);
    let db = tcp(&sw.line_after("switch cli-sw listening on").await);
    let admin = sw.line_after("admin listening on").await;
    for cmd in [
        vec!["add-ls", "ls0"],
        vec!["bind-ls", "cli-sw", "p0", "10", "ls0"],
    ] {
        vtep_ctl(&db, &cmd).await.unwrap();
    }
    let population = [
        "02:00:00:00:05:00",
        "02:00:00:00:05:01",
        "02:00:00:00:05:02",
    ];
    let local = |db: String| async move { vtep_ctl(&db, &["list-local-macs", "ls0"]).await };
    wait_for("the population in ls0", || {
        let l = local(db.clone());
        async move {
            let out = l.await.ok()?;
            population
                .iter()
                .all(|m| out.contains(&format!("{m} -> vxlan_over_ipv4/10.2.0.1")))
                .then_some(())
        }
    })
    .await;
    let macs = ctl(&admin, &["macs"]).await.unwrap();
    assert_eq!(lines(&macs).len(), 1 + 3, "{macs}");
    assert!(macs
        .lines()
        .skip(1)
        .all(|l| l.contains("ls0") && l.contains("population")));

    // Learn a new host, move a population host away to an unbound VLAN, unlearn one.
    let learnt = ctl(&admin, &["learn", "02:aa:00:00:00:01", "p0", "10"])
        .await
        .unwrap();
    assert!(learnt.contains("02:aa:00:00:00:01"), "{learnt}");
    ctl(&admin, &["move", "02:00:00:00:05:00", "p1", "99"])
        .await
        .unwrap();
    ctl(&admin, &["unlearn", "02:00:00:00:05:01"])
        .await
        .unwrap();
    let out = local(db.clone()).await.unwrap();
    assert!(out.contains("02:aa:00:00:00:01"), "{out}");
    assert!(!out.contains("02:00:00:00:05:00") && !out.contains("02:00:00:00:05:01"));
    assert!(out.contains("02:00:00:00:05:02"));
    // Errors come back as errors.
    let err = ctl(&admin, &["move", "02:bb:00:00:00:01", "p0", "10"])
        .await
        .unwrap_err();
    assert!(err.contains("not in the forwarding database"), "{err}");
    let err = ctl(&admin, &["learn", "02:bb:00:00:00:01", "p9", "10"])
        .await
        .unwrap_err();
    assert!(err.contains("no port named"), "{err}");

    let status = ctl(&admin, &["status"]).await.unwrap();
    assert!(status.starts_with("SWITCH"), "{status}");
    let row = status.lines().nth(1).unwrap();
    assert!(
        row.starts_with("cli-sw") && row.contains("10.2.0.1"),
        "{status}"
    );

    // Aging: every learnt host goes, the unknown-dst row stays.
    ctl(&admin, &["aging", "0.2"]).await.unwrap();
    wait_for("learnt MACs to age out", || {
        let l = local(db.clone());
        async move {
            let out = l.await.ok()?;
            (lines(&out)
                == [
                    "ucast-mac-local",
                    "mcast-mac-local",
                    "  unknown-dst -> vxlan_over_ipv4/10.2.0.1",
                ])
            .then_some(())
        }
    })
    .await;
    sw.stop("-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_runs_numbered_switches_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switches.toml");
    std::fs::write(
        &path,
        r#"
[[switch]]
name = "rack"
count = 3
tunnel_ip = "10.3.0.1"
listen = ["ptcp:0:127.0.0.1"]
macs = 2
[[switch]]
name = "solo"
ports = ["xe-0/0/1"]
placement = "per-port"
listen = ["ptcp:0:127.0.0.1"]
"#,
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let check = switch_common::run(
        BIN,
        &["switch", "--config", p, "--check-config"].map(String::from),
    )
    .unwrap();
    let summary = lines(&check);
    assert_eq!(summary.len(), 5, "{check}");
    assert!(
        summary[0].starts_with("switch rack0: tunnel 10.3.0.1,"),
        "{check}"
    );
    assert!(
        summary[2].starts_with("switch rack2: tunnel 10.3.0.3,"),
        "{check}"
    );
    assert!(
        summary[2].ends_with("2 MACs from 02:00:00:02:00:00 (spread)"),
        "{check}"
    );
    assert!(summary[3].ends_with("(per-port)"), "{check}");
    assert!(summary[3].starts_with("switch solo: tunnel 127.0.0.1, 1 ports"));
    assert_eq!(summary[4], "config ok: 4 switches");

    let mut run = Running::start(&["switch", "--config", p]);
    let mut found = Vec::new();
    for _ in 0..4 {
        let line = run.line_after("switch ").await;
        let (name, target) = line.split_once(" listening on ").unwrap();
        found.push((name.to_string(), tcp(target)));
    }
    found.sort();
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["rack0", "rack1", "rack2", "solo"]);
    for (name, db) in &found {
        assert_eq!(
            vtep_ctl(db, &["list-ps"]).await.unwrap().trim(),
            name.as_str()
        );
    }
    assert_eq!(
        vtep_ctl(&found[3].1, &["list-ports", "solo"])
            .await
            .unwrap(),
        "xe-0/0/1\n"
    );
    run.stop("-INT").await;
}

#[test]
fn bad_options_fail_with_a_precise_message() {
    let fails = |args: &[&str], needle: &str| {
        let out = Command::new(BIN).args(args).output().expect("testbed");
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    fails(
        &[
            "switch",
            "--name",
            "x",
            "--listen",
            "tcp:127.0.0.1:1",
            "--check-config",
        ],
        "is an active target",
    );
    fails(
        &[
            "switch",
            "--name",
            "x",
            "--manager",
            "ssl:127.0.0.1:1",
            "--check-config",
        ],
        "needs a certificate",
    );
    fails(
        &[
            "switch",
            "--name",
            "x",
            "--manager",
            "tcp:127.0.0.1:1",
            "--max-backoff",
            "10",
            "--check-config",
        ],
        "below the schema's minimum",
    );
    fails(
        &[
            "switch",
            "--name",
            "x",
            "--admin",
            "0.0.0.0:0",
            "--check-config",
        ],
        "only listen on loopback",
    );
    fails(
        &[
            "switch",
            "--name",
            "x",
            "--ports",
            "p0,p0",
            "--check-config",
        ],
        "listed twice",
    );
    fails(
        &[
            "switch",
            "--name",
            "x",
            "--listen",
            "ptcp:notaport",
            "--check-config",
        ],
        "invalid target",
    );
    fails(
        &[
            "switch",
            "--config",
            "x.toml",
            "--macs",
            "3",
            "--check-config",
        ],
        "cannot be used with",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[switch]]\nname = \"a\"\nlisten_on = []\n").unwrap();
    fails(
        &[
            "switch",
            "--config",
            path.to_str().unwrap(),
            "--check-config",
        ],
        "unknown field `listen_on`",
    );
}

#[test]
fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/switch.toml");
    let out = switch_common::run(
        BIN,
        &["switch", "--config", example, "--check-config"].map(String::from),
    )
    .unwrap();
    assert!(out.ends_with("config ok: 3 switches\n"), "{out}");
}
