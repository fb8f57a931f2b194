//! The admin API of `testbed switch` (jsonrpsee, JSON-RPC 2.0 over HTTP on
//! loopback), so a scenario can drive switches in another process:
//! learn, move, unlearn, age, set the aging time, flap, list.
//!
//! Every method takes an object; `switch` names the switch and may be left
//! out when the process runs only one. Methods (all prefixed `sw_`):
//!
//! | method | params | result |
//! |---|---|---|
//! | `sw_switches` | – | per switch: name, listen targets, managers, counters |
//! | `sw_macs` | `switch?` | hosts: mac, port, vlan, logical_switch, logical_switch_name, row, population |
//! | `sw_learn` | `switch?`, `mac`, `port`, `vlan` | the host |
//! | `sw_move` | `switch?`, `mac`, `port`, `vlan` | the host (error if unknown) |
//! | `sw_unlearn` | `switch?`, `mac` | `"ok"` |
//! | `sw_age` | `switch?`, `mac?` | number aged out (every learnt MAC without `mac`) |
//! | `sw_set_aging` | `switch?`, `seconds` (0 = off) | `"ok"` |
//! | `sw_flap` | `switch?`, `mac`, `port`, `vlan`, `to_port?`, `to_vlan?`, `moves`, `interval_ms` | `"ok"` |

use std::net::SocketAddr;
use std::time::Duration;

use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::server::{Server, ServerHandle};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::RpcModule;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{FlapSpec, Mac, SimSwitchHandle, SwitchFleet};

fn err(e: impl std::fmt::Display) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(-32000, e.to_string(), None::<()>)
}

fn parse<T: for<'a> Deserialize<'a> + Default>(p: &Params<'_>) -> Result<T, ErrorObjectOwned> {
    if p.as_str().is_some() {
        p.parse::<T>()
    } else {
        Ok(T::default())
    }
}

fn parse_required<T: for<'a> Deserialize<'a>>(p: &Params<'_>) -> Result<T, ErrorObjectOwned> {
    p.parse::<T>()
}

/// The named switch, or the only one.
fn pick(fleet: &SwitchFleet, name: Option<&str>) -> Result<SimSwitchHandle, ErrorObjectOwned> {
    match name {
        Some(n) => fleet.switch(n).cloned().map_err(err),
        None if fleet.len() == 1 => fleet.iter().next().cloned().ok_or_else(|| err("no switch")),
        None => Err(err(format!(
            "this process runs {} switches: name one with \"switch\"",
            fleet.len()
        ))),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Which {
    #[serde(default)]
    switch: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Place {
    #[serde(default)]
    switch: Option<String>,
    mac: Mac,
    port: String,
    vlan: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OneMac {
    #[serde(default)]
    switch: Option<String>,
    mac: Mac,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AgeParams {
    #[serde(default)]
    switch: Option<String>,
    #[serde(default)]
    mac: Option<Mac>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgingParams {
    #[serde(default)]
    switch: Option<String>,
    seconds: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlapParams {
    #[serde(default)]
    switch: Option<String>,
    mac: Mac,
    port: String,
    vlan: u16,
    #[serde(default)]
    to_port: Option<String>,
    #[serde(default)]
    to_vlan: Option<u16>,
    moves: u32,
    interval_ms: u64,
}

async fn macs_json(sw: &SimSwitchHandle) -> Result<Value, ErrorObjectOwned> {
    let macs = sw.macs().await.map_err(err)?;
    let names = sw.db().read(|d| {
        macs.iter()
            .map(|m| {
                m.logical_switch
                    .and_then(|ls| super::vtep_db::logical_switch_name(d, &ls))
            })
            .collect::<Vec<_>>()
    });
    let rows: Vec<Value> = macs
        .iter()
        .zip(names)
        .map(|(m, name)| {
            let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert("logical_switch_name".into(), json!(name));
            }
            v
        })
        .collect();
    Ok(Value::Array(rows))
}

async fn switch_json(sw: &SimSwitchHandle) -> Result<Value, ErrorObjectOwned> {
    let stats = sw.stats().await.map_err(err)?;
    Ok(json!({
        "name": sw.name(),
        "tunnel_ip": sw.spec().tunnel_ip.to_string(),
        "listen": sw.listen_targets().iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "managers": sw.managers(),
        "stats": stats,
    }))
}

/// The methods, all prefixed `sw_`.
pub fn rpc_module(fleet: SwitchFleet) -> RpcModule<SwitchFleet> {
    let mut m = RpcModule::new(fleet);
    // Names are unique constants, so registration cannot clash.
    let _ = m.register_async_method("sw_switches", |_, f, _| async move {
        let mut out = Vec::new();
        for sw in f.iter() {
            out.push(switch_json(sw).await?);
        }
        Ok::<Value, ErrorObjectOwned>(Value::Array(out))
    });
    let _ = m.register_async_method("sw_macs", |p, f, _| async move {
        let w: Which = parse(&p)?;
        macs_json(&pick(&f, w.switch.as_deref())?).await
    });
    let _ = m.register_async_method("sw_learn", |p, f, _| async move {
        let a: Place = parse_required(&p)?;
        let sw = pick(&f, a.switch.as_deref())?;
        let v = sw.learn(a.mac, &a.port, a.vlan).await.map_err(err)?;
        serde_json::to_value(v).map_err(err)
    });
    let _ = m.register_async_method("sw_move", |p, f, _| async move {
        let a: Place = parse_required(&p)?;
        let sw = pick(&f, a.switch.as_deref())?;
        let v = sw.move_mac(a.mac, &a.port, a.vlan).await.map_err(err)?;
        serde_json::to_value(v).map_err(err)
    });
    let _ = m.register_async_method("sw_unlearn", |p, f, _| async move {
        let a: OneMac = parse_required(&p)?;
        let sw = pick(&f, a.switch.as_deref())?;
        sw.unlearn(a.mac).await.map_err(err)?;
        Ok::<Value, ErrorObjectOwned>(json!("ok"))
    });
    let _ = m.register_async_method("sw_age", |p, f, _| async move {
        let a: AgeParams = parse(&p)?;
        let sw = pick(&f, a.switch.as_deref())?;
        let n = sw.age(a.mac).await.map_err(err)?;
        Ok::<Value, ErrorObjectOwned>(json!(n))
    });
    let _ = m.register_async_method("sw_set_aging", |p, f, _| async move {
        let a: AgingParams = parse_required(&p)?;
        if !(a.seconds.is_finite() && a.seconds >= 0.0) {
            return Err(err("seconds must be a non-negative number"));
        }
        let sw = pick(&f, a.switch.as_deref())?;
        sw.set_aging(Some(Duration::from_secs_f64(a.seconds)))
            .await
            .map_err(err)?;
        Ok(json!("ok"))
    });
    let _ = m.register_async_method("sw_flap", |p, f, _| async move {
        let a: FlapParams = parse_required(&p)?;
        let to = match (a.to_port, a.to_vlan) {
            (Some(port), Some(vlan)) => Some((port, vlan)),
            (None, None) => None,
            _ => return Err(err("to_port and to_vlan go together")),
        };
        let sw = pick(&f, a.switch.as_deref())?;
        sw.flap(FlapSpec {
            mac: a.mac,
            port: a.port,
            vlan: a.vlan,
            to,
            moves: a.moves,
            interval: Duration::from_millis(a.interval_ms),
        })
        .await
        .map_err(err)?;
        Ok(json!("ok"))
    });
    m
}

/// Starts the admin server on a loopback address; returns the bound
/// address and the handle (the server stops when the handle is stopped).
pub async fn serve(
    addr: SocketAddr,
    fleet: SwitchFleet,
) -> Result<(SocketAddr, ServerHandle), String> {
    if !addr.ip().is_loopback() {
        return Err(format!(
            "admin {addr}: the admin API has no authentication, so it may only listen on loopback"
        ));
    }
    let server = Server::builder()
        .build(addr)
        .await
        .map_err(|e| format!("admin on {addr}: {e}"))?;
    let local = server
        .local_addr()
        .map_err(|e| format!("admin on {addr}: {e}"))?;
    Ok((local, server.start(rpc_module(fleet))))
}

/// Calls one admin method.
pub async fn call(addr: &str, method: &str, params: ObjectParams) -> Result<Value, String> {
    let url = if addr.starts_with("http") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let client = jsonrpsee::http_client::HttpClientBuilder::default()
        .build(&url)
        .map_err(|e| format!("admin client for {url}: {e}"))?;
    client
        .request(method, params)
        .await
        .map_err(|e| format!("{method} on {url}: {e}"))
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            s.push_str(c);
            if i + 1 < cells.len() {
                let width = w.get(i).copied().unwrap_or(0);
                s.push_str(&" ".repeat(width.saturating_sub(c.chars().count()) + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// `sw_switches` as the operator's table.
pub fn render_switches(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let managers = s["managers"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .map(|m| {
                            format!(
                                "{} {}",
                                cell(&m["target"]),
                                m["state"].as_str().unwrap_or("-")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "-".into());
            let listen = s["listen"]
                .as_array()
                .map(|l| l.iter().map(cell).collect::<Vec<_>>().join(", "))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "-".into());
            let st = &s["stats"];
            vec![
                cell(&s["name"]),
                cell(&s["tunnel_ip"]),
                listen,
                managers,
                cell(&st["fdb"]["hosts"]),
                cell(&st["fdb"]["local_rows"]),
                cell(&st["fdb"]["bound_logical_switches"]),
                cell(&st["transactions"]),
                cell(&st["moved_away"]),
            ]
        })
        .collect();
    table(
        &[
            "SWITCH",
            "TUNNEL IP",
            "LISTEN",
            "MANAGERS",
            "HOSTS",
            "LOCAL ROWS",
            "BOUND LS",
            "TXNS",
            "MOVED AWAY",
        ],
        &rows,
    )
}

/// `sw_macs` as a table.
pub fn render_macs(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|m| {
            vec![
                cell(&m["mac"]),
                cell(&m["port"]),
                cell(&m["vlan"]),
                cell(&m["logical_switch_name"]),
                if m["population"].as_bool() == Some(true) {
                    "population".into()
                } else {
                    "learnt".into()
                },
            ]
        })
        .collect();
    table(&["MAC", "PORT", "VLAN", "LOGICAL SWITCH", "KIND"], &rows)
}
