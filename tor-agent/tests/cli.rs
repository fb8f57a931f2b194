//! The `tor-agent` binary: `check-config` exits non-zero with a precise
//! message, the example configuration documents valid keys, `status` prints
//! the tables of a running agent, and SIGTERM stops it cleanly.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tor-agent");

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    p
}

fn free_port() -> u16 {
    ovsdb::testing::free_port().unwrap()
}

#[test]
fn check_config_reports_the_first_problem_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "good.toml",
        "[agent]\nname = \"a1\"\ntsn_ip = \"192.0.2.1\"\n[southbound]\nlisten = \"ptcp:6640\"\n[northbound]\ncontrol_nodes = [\"127.0.0.1\"]\n",
    );
    let out = Command::new(BIN)
        .args(["--config"])
        .arg(&good)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (text, want) in [
        ("[agent]\nname = \"a1\"\n", "tsn_ip"),
        ("[agent]\nname = \"a1-bgp-peer\"\ntsn_ip = \"192.0.2.1\"\n[northbound]\ncontrol_nodes = [\"127.0.0.1\"]\n", "agent.name"),
        ("[agent]\nname = \"a1\"\ntsn_ip = \"192.0.2.1\"\n[southbound]\nlisten = \"pssl:6640\"\n[northbound]\ncontrol_nodes = [\"127.0.0.1\"]\n", "southbound.tls"),
        ("[agent]\nname = \"a1\"\ntsn_ip = \"192.0.2.1\"\n[southbound]\nlisten = \"ptcp:6640\"\n[northbound]\ncontrol_nodes = [\"127.0.0.1\"]\n[admin]\nlisten = \"0.0.0.0:8085\"\n", "token_file"),
        ("not toml at all [", "invalid configuration"),
    ] {
        let p = write(dir.path(), "bad.toml", text);
        let out = Command::new(BIN).arg("--config").arg(&p).arg("check-config").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err} should mention {want}");
    }
    let missing = Command::new(BIN)
        .args(["--config", "/nonexistent.toml", "check-config"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn the_example_configuration_is_complete_and_valid_once_tls_is_given() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/tor-agent.toml"
    ))
    .unwrap();
    // Every key of the example parses (unknown keys would be errors).
    let parsed: Result<tor_agent::config::AgentConfig, _> = toml::from_str(&example);
    assert!(parsed.is_ok(), "{parsed:?}");
    // With a plain listener it validates as is.
    let c: tor_agent::config::AgentConfig =
        toml::from_str(&example.replace("listen = \"pssl:6640\"", "listen = \"ptcp:6640\""))
            .unwrap();
    c.validate().unwrap();
}

#[test]
fn status_prints_tables_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let cfg = write(
        dir.path(),
        "agent.toml",
        &format!(
            "[agent]\nname = \"a1\"\ntsn_ip = \"192.0.2.1\"\n[southbound]\nlisten = \"ptcp:0:127.0.0.1\"\n[northbound]\ncontrol_nodes = [\"127.0.0.1:1\"]\n[admin]\nlisten = \"127.0.0.1:{admin}\"\nreadiness_listen = \"127.0.0.1:0\"\n"
        ),
    );
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .arg("status")
            .output()
            .unwrap();
        if out.status.success() {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "status never answered: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("agent a1  readiness drain"), "{text}");
    assert!(text.contains("CONTROL NODE"), "{text}");
    assert!(
        text.contains("down"),
        "the control node is unreachable: {text}"
    );
    let json = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["readiness"], "drain");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "exit status {st}");
            break;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
