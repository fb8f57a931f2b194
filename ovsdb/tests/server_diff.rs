//! Differential tests: every script under `tests/diff/` runs against the real
//! ovsdb-server 3.1 (fresh `ovsdb-tool create` hardware_vtep database, unix
//! socket in a temporary directory) and against our server, over raw
//! JSON-RPC; the transcripts (replies and every notification, in order)
//! must be equal once UUIDs are replaced by names in order of appearance.
//!
//! Script format: `{"steps": [step…]}`; a step is `{"method", "params"}`
//! (optionally `"session": n` for a second connection, `"nowait": true` to
//! not wait for the reply), `{"raw": "text"}` (sent as is, then read until
//! the server closes), or `{"sleep_ms": n}`.

mod server_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ovsdb::server::Server;
use ovsdb::testing::RealSwitch;
use serde_json::{json, Value};
use server_common::{Normalizer, RawConn};

fn scripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diff");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

/// One step's observations, in the order they are normalized.
struct Record {
    session: u64,
    primary: Vec<Value>,
    rest: Vec<Value>,
    others: BTreeMap<u64, Vec<Value>>,
}

async fn flush_others(
    sessions: &mut BTreeMap<u64, RawConn>,
    except: u64,
) -> BTreeMap<u64, Vec<Value>> {
    let mut others = BTreeMap::new();
    for (s, conn) in sessions.iter_mut() {
        if *s == except {
            continue;
        }
        let mut msgs = conn.request("echo", json!(["flush"])).await;
        msgs.pop();
        if !msgs.is_empty() {
            others.insert(*s, msgs);
        }
    }
    others
}

async fn run_script(script: &Value, sock: &Path) -> Value {
    let mut sessions: BTreeMap<u64, RawConn> = BTreeMap::new();
    let mut records: Vec<Record> = Vec::new();
    for step in script["steps"].as_array().expect("steps") {
        if let Some(ms) = step.get("sleep_ms").and_then(Value::as_u64) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            continue;
        }
        let s = step.get("session").and_then(Value::as_u64).unwrap_or(1);
        let conn = match sessions.entry(s) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(RawConn::connect(sock).await),
        };
        if let Some(raw) = step.get("raw").and_then(Value::as_str) {
            conn.send_raw(raw.as_bytes()).await;
            let mut got = Vec::new();
            while let Some(m) = conn.recv().await {
                got.push(m);
            }
            got.push(json!("EOF"));
            sessions.remove(&s);
            records.push(Record {
                session: s,
                primary: Vec::new(),
                rest: got,
                others: BTreeMap::new(),
            });
            continue;
        }
        let method = step["method"].as_str().expect("method");
        let params = step["params"].clone();
        if step.get("nowait").and_then(Value::as_bool) == Some(true) {
            conn.request_nowait(method, params).await;
            continue;
        }
        let mut msgs = conn.request(method, params).await;
        let reply = msgs.pop().unwrap();
        let others = if sessions.len() > 1 {
            flush_others(&mut sessions, s).await
        } else {
            BTreeMap::new()
        };
        records.push(Record {
            session: s,
            primary: vec![reply],
            rest: msgs,
            others,
        });
    }
    // Anything still to come (updates after the last reply, late triggers).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let trailing = flush_others(&mut sessions, 0).await;
    records.push(Record {
        session: 0,
        primary: Vec::new(),
        rest: Vec::new(),
        others: trailing,
    });

    let mut n = Normalizer::default();
    let mut out = Vec::new();
    for r in &records {
        // Replies first: notifications about a transaction reach its client
        // before the reply, but the reply names the rows deterministically.
        let primary: Vec<Value> = r.primary.iter().map(|v| n.value(v)).collect();
        let rest: Vec<Value> = r.rest.iter().map(|v| n.value(v)).collect();
        let others: BTreeMap<String, Vec<Value>> = r
            .others
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|x| n.value(x)).collect()))
            .collect();
        out.push(json!({"session": r.session, "reply": primary, "before": rest, "others": others}));
    }
    Value::Array(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_and_ours_agree_on_every_script() {
    let scripts = scripts();
    assert!(
        scripts.len() >= 40,
        "expected at least 40 scripts, found {}",
        scripts.len()
    );
    let mut failures = Vec::new();
    for path in &scripts {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let script: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        eprintln!("script {name}");

        let real = RealSwitch::start(false, None).expect("real ovsdb-server");
        let real_sock = PathBuf::from(real.unix_target.trim_start_matches("unix:"));
        let real_out = run_script(&script, &real_sock).await;
        drop(real);

        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ours.sock");
        let server = Server::hardware_vtep();
        let _l = server
            .listen(&format!("punix:{}", sock.display()).parse().unwrap(), None)
            .await
            .unwrap();
        let ours_out = run_script(&script, &sock).await;

        if real_out != ours_out || std::env::var_os("OVSDB_DIFF_DUMP").is_some() {
            let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("server-diff");
            std::fs::create_dir_all(&out_dir).unwrap();
            let base = out_dir.join(name.trim_end_matches(".json"));
            std::fs::write(
                base.with_extension("real.json"),
                serde_json::to_string_pretty(&real_out).unwrap(),
            )
            .unwrap();
            std::fs::write(
                base.with_extension("ours.json"),
                serde_json::to_string_pretty(&ours_out).unwrap(),
            )
            .unwrap();
            failures.push(format!(
                "{name} (see {}.{{real,ours}}.json)",
                base.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scripts differ:\n{}",
        failures.len(),
        scripts.len(),
        failures.join("\n")
    );
}
