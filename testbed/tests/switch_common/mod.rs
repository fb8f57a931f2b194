//! Helpers shared by the simulated-switch tests: running the real OVS tools
//! (a missing tool is a failure, never a skip), waiting for a condition with
//! a generous deadline (no timed asserts), and addressing a switch.

#![allow(dead_code)]

use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use ovsdb::transport::Target;
use testbed::switch::SimSwitchHandle;

/// Long enough for a loaded 2-core CI machine; only bounds a hang.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Runs a tool to completion; its stdout, or an error with its stderr.
pub fn run(tool: &str, args: &[String]) -> Result<String, String> {
    let out = Command::new(tool).args(args).output().map_err(|e| {
        format!("{tool}: {e} (install Debian's openvswitch-vtep; scripts/test.sh does it)")
    })?;
    if !out.status.success() {
        return Err(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `run` off the async runtime.
pub async fn tool(tool: &'static str, args: &[&str]) -> Result<String, String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || run(tool, &args))
        .await
        .map_err(|e| e.to_string())?
}

/// `vtep-ctl --db=DB ARGS…`.
pub async fn vtep_ctl(db: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec![format!("--db={db}"), "--timeout=20".to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || run("vtep-ctl", &all))
        .await
        .map_err(|e| e.to_string())?
}

/// Polls `check` until it returns `Some`, failing with `what` after `DEADLINE`.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `tcp:127.0.0.1:PORT` of a switch's first `ptcp:` listener.
pub fn tcp_of(sw: &SimSwitchHandle) -> String {
    match sw.listen_targets().first() {
        Some(Target::PTcp(a)) => format!("tcp:{a}"),
        other => panic!("switch has no ptcp: listener: {other:?}"),
    }
}

pub fn ptcp0() -> Target {
    "ptcp:0:127.0.0.1".parse().unwrap()
}

/// The lines of `vtep-ctl list-local-macs` (or remote) for comparison.
pub fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}
