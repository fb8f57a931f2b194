//! The simulated switch dialling its managers (`Global.managers`) over
//! `tcp:` and `ssl:`, and serving `pssl:`, checked with the real tools: a
//! passive `ovsdb-client monitor` plays the manager, `vtep-ctl` reads the
//! `Manager` rows, and a real `ovsdb-server` configured the same way gives
//! the reference.

mod switch_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ovsdb::testing::{free_port, RealSwitch, TestPki};
use ovsdb::transport::TlsFiles;
use switch_common::{vtep_ctl, wait_for, DEADLINE};
use testbed::switch::{SimSwitch, SwitchSpec};
use tokio::sync::mpsc;

/// A passive `ovsdb-client monitor` (the manager side): its output lines.
struct PassiveMonitor {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl PassiveMonitor {
    fn start(tls: &[String], listen: &str, table: &str, columns: &str) -> PassiveMonitor {
        let mut child = Command::new("ovsdb-client")
            .args(tls)
            .args(["monitor", listen, "hardware_vtep", table, columns])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ovsdb-client (install Debian's openvswitch-vtep)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        PassiveMonitor {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing every one of `parts`.
    async fn expect(&mut self, parts: &[&str]) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(l) = self
                .seen
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return l.clone();
            }
            let line = tokio::time::timeout_at(deadline.into(), self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no line with {parts:?}; got {:?}", self.seen))
                .expect("ovsdb-client exited");
            self.seen.push(line);
        }
    }
}

impl Drop for PassiveMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_args(cert: &Path, key: &Path, ca: &Path) -> Vec<String> {
    vec![
        format!("--private-key={}", key.display()),
        format!("--certificate={}", cert.display()),
        format!("--ca-cert={}", ca.display()),
    ]
}

/// Waits until the `Manager` rows of `db` say connected; returns their
/// `max_backoff`, `inactivity_probe` and `is_connected` as vtep-ctl prints them.
async fn connected_manager(db: &str) -> String {
    wait_for("the Manager row to say connected", || {
        let db = db.to_string();
        async move {
            let out = vtep_ctl(
                &db,
                &[
                    "--columns=max_backoff,inactivity_probe,is_connected",
                    "list",
                    "Manager",
                ],
            )
            .await
            .ok()?;
            out.contains("is_connected        : true").then_some(out)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_a_tcp_manager_like_a_real_switch() {
    // Ours.
    let port = free_port().unwrap();
    let mut manager = PassiveMonitor::start(
        &[],
        &format!("ptcp:{port}:127.0.0.1"),
        "Physical_Switch",
        "name,tunnel_ips",
    );
    let target = format!("tcp:127.0.0.1:{port}");
    let sw = SimSwitch::start(
        SwitchSpec::new("tor-dial")
            .tunnel_ip("10.1.1.1".parse().unwrap())
            .listen(switch_common::ptcp0())
            .manager(target.parse().unwrap())
            .max_backoff(Duration::from_millis(2000))
            .inactivity_probe(Duration::from_millis(3000)),
    )
    .await
    .unwrap();
    // The manager sees the switch's row over the switch's own connection.
    manager.expect(&["tor-dial", "10.1.1.1"]).await;
    let ours_db = switch_common::tcp_of(&sw);
    let ours = connected_manager(&ours_db).await;
    assert_eq!(
        vtep_ctl(&ours_db, &["get-manager"]).await.unwrap().trim(),
        target
    );
    let state = sw.managers();
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].state.as_deref(), Some("ACTIVE"));

    // The real switch, configured as an operator does.
    let real = RealSwitch::start(false, None).expect("real ovsdb-server");
    let rdb = real.unix_target.clone();
    vtep_ctl(&rdb, &["add-ps", "tor-dial"]).await.unwrap();
    vtep_ctl(
        &rdb,
        &["set", "Physical_Switch", "tor-dial", "tunnel_ips=10.1.1.1"],
    )
    .await
    .unwrap();
    let rport = free_port().unwrap();
    let mut rmanager = PassiveMonitor::start(
        &[],
        &format!("ptcp:{rport}:127.0.0.1"),
        "Physical_Switch",
        "name,tunnel_ips",
    );
    let rtarget = format!("tcp:127.0.0.1:{rport}");
    vtep_ctl(&rdb, &["--inactivity-probe=3000", "set-manager", &rtarget])
        .await
        .unwrap();
    vtep_ctl(&rdb, &["set", "Manager", &rtarget, "max_backoff=2000"])
        .await
        .unwrap();
    let real_line = rmanager.expect(&["tor-dial", "10.1.1.1"]).await;
    let real_state = connected_manager(&rdb).await;
    assert_eq!(ours, real_state, "Manager row: ours (left) vs real (right)");
    // Both monitors printed the same row (the UUID column aside).
    let ours_line = manager.expect(&["tor-dial"]).await;
    let strip = |l: &str| {
        l.split_whitespace()
            .filter(|w| w.len() != 36)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(strip(&ours_line), strip(&real_line));
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_an_ssl_manager_with_mutual_tls_and_refuses_a_foreign_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path()).unwrap();
    let (mcert, mkey) = pki.issue("manager").unwrap();
    let (scert, skey) = pki.issue("switch").unwrap();
    let port = free_port().unwrap();
    let mut manager = PassiveMonitor::start(
        &tls_args(&mcert, &mkey, &pki.ca_path()),
        &format!("pssl:{port}:127.0.0.1"),
        "Physical_Switch",
        "name",
    );
    let sw = SimSwitch::start(
        SwitchSpec::new("tor-ssl")
            .manager(format!("ssl:127.0.0.1:{port}").parse().unwrap())
            .tls(TlsFiles {
                cert: scert.clone(),
                key: skey.clone(),
                ca: pki.ca_path(),
            }),
    )
    .await
    .unwrap();
    manager.expect(&["tor-ssl"]).await;
    let up = wait_for("the ssl manager to be connected", || {
        let s = sw.managers();
        async move { s.first().filter(|m| m.is_connected).cloned() }
    })
    .await;
    assert_eq!(up.state.as_deref(), Some("ACTIVE"));
    sw.shutdown().await;

    // A switch whose certificate another CA signed never gets in.
    let other_dir = tempfile::tempdir().unwrap();
    let other = TestPki::new(other_dir.path()).unwrap();
    let (ocert, okey) = other.issue("intruder").unwrap();
    let port = free_port().unwrap();
    let _manager = PassiveMonitor::start(
        &tls_args(&mcert, &mkey, &pki.ca_path()),
        &format!("pssl:{port}:127.0.0.1"),
        "Physical_Switch",
        "name",
    );
    let bad = SimSwitch::start(
        SwitchSpec::new("tor-bad")
            .manager(format!("ssl:127.0.0.1:{port}").parse().unwrap())
            .tls(TlsFiles {
                cert: ocert,
                key: okey,
                ca: other.ca_path(),
            }),
    )
    .await
    .unwrap();
    let down = wait_for("the failed handshake to be recorded", || {
        let s = bad.managers();
        async move { s.first().filter(|m| m.last_error.is_some()).cloned() }
    })
    .await;
    assert!(!down.is_connected, "{down:?}");
    assert_ne!(down.state.as_deref(), Some("ACTIVE"));
    bad.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_pssl_to_vtep_ctl_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path()).unwrap();
    let (scert, skey) = pki.issue("switch").unwrap();
    let (ccert, ckey) = pki.issue("agent").unwrap();
    let sw = SimSwitch::start(
        SwitchSpec::new("tor-pssl")
            .listen("pssl:0:127.0.0.1".parse().unwrap())
            .tls(TlsFiles {
                cert: scert,
                key: skey,
                ca: pki.ca_path(),
            }),
    )
    .await
    .unwrap();
    let port = match sw.listen_targets().first() {
        Some(ovsdb::transport::Target::PSsl(a)) => a.port(),
        other => panic!("unexpected {other:?}"),
    };
    let mut args = tls_args(&ccert, &ckey, &pki.ca_path());
    args.push(format!("--db=ssl:127.0.0.1:{port}"));
    args.push("--timeout=20".into());
    args.push("list-ps".into());
    let out = tokio::task::spawn_blocking(move || switch_common::run("vtep-ctl", &args))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, "tor-pssl\n");
    sw.shutdown().await;
}
