//! The admin API (jsonrpsee, JSON-RPC 2.0 over HTTP) and the `control-node-status` tables.

use super::fabric::{Binding, VirtualNetwork};
use super::server::ControlNodeHandle;
use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::server::{Server, ServerHandle};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::RpcModule;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;

fn err(e: impl std::fmt::Display) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(-32000, e.to_string(), None::<()>)
}

fn parse<'a, T: Deserialize<'a>>(p: &'a Params<'a>) -> Result<T, ErrorObjectOwned> {
    p.parse::<T>()
}

#[derive(Deserialize, Default)]
struct VrfFilter {
    #[serde(default)]
    vrf: Option<String>,
}

#[derive(Deserialize)]
struct SetVni {
    virtual_network: String,
    vni: u32,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct BindingRef {
    physical_router: String,
    interface: String,
    vlan: u16,
}

/// The methods, all prefixed `cn_`.
pub fn rpc_module(cn: ControlNodeHandle) -> RpcModule<ControlNodeHandle> {
    let mut m = RpcModule::new(cn);
    let reg =
        |m: &mut RpcModule<ControlNodeHandle>,
         name: &'static str,
         f: fn(&Params, &ControlNodeHandle) -> Result<Value, ErrorObjectOwned>| {
            // Names are unique constants below, so registration cannot clash.
            let _ = m.register_method(name, move |p, cn, _| f(&p, cn));
        };
    reg(&mut m, "cn_status", |_, cn| {
        Ok(json!({
            "hostname": cn.hostname(),
            "xmpp_listen": cn.local_addr().to_string(),
            "agents": cn.agents(),
            "counters": cn.counters(),
        }))
    });
    reg(&mut m, "cn_routes", |p, cn| {
        let f: VrfFilter = if p.as_str().is_some() {
            parse(p)?
        } else {
            VrfFilter::default()
        };
        Ok(json!({
            "paths": cn.paths(f.vrf.as_deref()),
            "best": cn.best_routes(f.vrf.as_deref()),
        }))
    });
    reg(&mut m, "cn_fabric", |_, cn| {
        serde_json::to_value(cn.fabric()).map_err(err)
    });
    reg(&mut m, "cn_reload", |_, cn| {
        cn.reload().map(|_| json!("ok")).map_err(err)
    });
    reg(&mut m, "cn_set_vni", |p, cn| {
        let a: SetVni = parse(p)?;
        cn.update_fabric(|f| f.set_vni(&a.virtual_network, a.vni))
            .map(|_| json!("ok"))
            .map_err(err)
    });
    reg(&mut m, "cn_add_virtual_network", |p, cn| {
        let vn: VirtualNetwork = parse(p)?;
        cn.update_fabric(|f| f.add_virtual_network(vn))
            .map(|_| json!("ok"))
            .map_err(err)
    });
    reg(&mut m, "cn_remove_virtual_network", |p, cn| {
        let a: Named = parse(p)?;
        cn.update_fabric(|f| f.remove_virtual_network(&a.name))
            .map(|_| json!("ok"))
            .map_err(err)
    });
    reg(&mut m, "cn_add_binding", |p, cn| {
        let b: Binding = parse(p)?;
        cn.update_fabric(|f| f.add_binding(b))
            .map(|_| json!("ok"))
            .map_err(err)
    });
    reg(&mut m, "cn_remove_binding", |p, cn| {
        let b: BindingRef = parse(p)?;
        cn.update_fabric(|f| f.remove_binding(&b.physical_router, &b.interface, b.vlan))
            .map(|_| json!("ok"))
            .map_err(err)
    });
    reg(&mut m, "cn_disconnect_agent", |p, cn| {
        let a: Named = parse(p)?;
        Ok(json!(cn.disconnect_agent(&a.name)))
    });
    m
}

/// Starts the admin server; returns its bound address and handle.
pub async fn serve(
    addr: SocketAddr,
    cn: ControlNodeHandle,
) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let server = Server::builder().build(addr).await?;
    let local = server.local_addr()?;
    Ok((local, server.start(rpc_module(cn))))
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

/// Left-aligned text table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let width = w.get(i).copied().unwrap_or(0);
            s.push_str(c);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(width.saturating_sub(c.chars().count()) + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn ago(unix: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(unix);
    let d = now.saturating_sub(unix);
    if d < 120 {
        format!("{d}s")
    } else if d < 7200 {
        format!("{}m", d / 60)
    } else {
        format!("{}h", d / 3600)
    }
}

fn key_str(k: &Value) -> String {
    let tag = k["ethernet_tag"].as_u64().unwrap_or(0);
    format!("{tag}-{},{}", s(&k["mac"]), s(&k["address"]))
}

/// Renders `cn_status` and `cn_routes` results as the operator's tables.
pub fn render_status(status: &Value, routes: &Value) -> String {
    let mut out = format!(
        "control node {}  xmpp {}\n\nAGENTS\n",
        s(&status["hostname"]),
        s(&status["xmpp_listen"])
    );
    let empty = Vec::new();
    let agents: Vec<Vec<String>> = status["agents"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|a| {
            let vrfs = a["vrfs"].as_array().unwrap_or(&empty);
            let pending = vrfs.iter().filter(|v| v[1] == Value::Bool(false)).count();
            vec![
                s(&a["name"]),
                s(&a["remote_ip"]),
                ago(a["connected_since_unix"].as_u64().unwrap_or(0)),
                if a["config_subscription"].is_null() {
                    "no".into()
                } else {
                    format!("yes ({} objs)", a["config_objects_pushed"])
                },
                if pending > 0 {
                    format!("{} ({pending} pending)", vrfs.len())
                } else {
                    vrfs.len().to_string()
                },
                s(&a["paths"]),
                s(&a["routes_published"]),
                format!(
                    "{}/{}",
                    if a["eor_sent"] == Value::Bool(true) {
                        "sent"
                    } else {
                        "-"
                    },
                    if a["eor_received"] == Value::Bool(true) {
                        "rcvd"
                    } else {
                        "-"
                    }
                ),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "AGENT",
            "REMOTE",
            "UP",
            "CONFIG",
            "VRFS",
            "PATHS",
            "PUBLISHED",
            "EOR TX/RX",
        ],
        &agents,
    ));
    out.push_str("\nBEST ROUTES\n");
    let best: Vec<Vec<String>> = routes["best"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|b| {
            let join = |v: &Value| {
                v.as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                    .unwrap_or_default()
            };
            vec![
                s(&b["vrf"]),
                key_str(&b["key"]),
                join(&b["next_hops"]),
                s(&b["local_preference"]),
                s(&b["sequence"]),
                join(&b["agents"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &["VRF", "ROUTE", "NEXT-HOPS", "PREF", "SEQ", "FROM"],
        &best,
    ));
    out.push_str("\nPATHS\n");
    let paths: Vec<Vec<String>> = routes["paths"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|p| {
            vec![
                s(&p["vrf"]),
                key_str(&p["key"]),
                s(&p["agent"]),
                s(&p["next_hop"]),
                s(&p["local_preference"]),
                s(&p["sequence"]),
                if p["best"] == Value::Bool(true) {
                    "*".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    out.push_str(&table(
        &["VRF", "ROUTE", "AGENT", "NEXT-HOP", "PREF", "SEQ", "BEST"],
        &paths,
    ));
    out.push_str("\nCOUNTERS\n");
    if let Some(c) = status["counters"].as_object() {
        let rows: Vec<Vec<String>> = c.iter().map(|(k, v)| vec![k.clone(), s(v)]).collect();
        out.push_str(&table(&["COUNTER", "VALUE"], &rows));
    }
    out
}
