//! Shared helpers for the server tests: a raw JSON-RPC connection (no client
//! library, so the tests exercise the servers), our server on a temporary
//! unix socket, and UUID normalization for comparing transcripts.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use ovsdb::rpc::JsonFramer;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

/// Any byte stream a test talks JSON-RPC over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Generous bound so a broken server fails the test instead of hanging it.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// A raw JSON-RPC 1.0 connection over a unix socket.
pub struct RawConn {
    stream: Box<dyn Io>,
    framer: JsonFramer,
    buf: BytesMut,
    next_id: u64,
}

impl RawConn {
    pub async fn connect(path: &Path) -> RawConn {
        let mut last = None;
        for _ in 0..200 {
            match UnixStream::connect(path).await {
                Ok(stream) => return RawConn::new(Box::new(stream)),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot connect to {}: {last:?}", path.display());
    }

    pub fn new(stream: Box<dyn Io>) -> RawConn {
        RawConn {
            stream,
            framer: JsonFramer::new(1 << 30),
            buf: BytesMut::new(),
            next_id: 1,
        }
    }

    pub async fn send(&mut self, v: &Value) {
        // A server that closed the connection shows up as EOF on receive.
        let text = serde_json::to_vec(v).unwrap();
        let _ = self.stream.write_all(&text).await;
    }

    pub async fn send_raw(&mut self, text: &[u8]) {
        let _ = self.stream.write_all(text).await;
    }

    /// The next message, or `None` on EOF.
    pub async fn recv(&mut self) -> Option<Value> {
        loop {
            if let Some(frame) = self.framer.next_frame(&mut self.buf).unwrap() {
                return Some(serde_json::from_slice(&frame).unwrap());
            }
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.stream.read(&mut chunk))
                .await
                .expect("timed out waiting for the server")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a request and collects every message up to its reply (the
    /// reply last). Echo probes from the server are answered.
    pub async fn request(&mut self, method: &str, params: Value) -> Vec<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"id": id, "method": method, "params": params}))
            .await;
        self.until_reply(&json!(id)).await
    }

    /// Sends a request without waiting for its reply; returns its id.
    pub async fn request_nowait(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"id": id, "method": method, "params": params}))
            .await;
        json!(id)
    }

    pub async fn until_reply(&mut self, id: &Value) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let Some(m) = self.recv().await else {
                out.push(json!("EOF"));
                return out;
            };
            if m.get("method") == Some(&json!("echo")) && m.get("id") == Some(&json!("echo")) {
                self.send(&json!({"id": "echo", "result": [], "error": null}))
                    .await;
                continue;
            }
            let done = m.get("id") == Some(id) && m.get("method").is_none();
            out.push(m);
            if done {
                return out;
            }
        }
    }
}

fn is_uuid_at(b: &[u8], i: usize) -> bool {
    if i + 36 > b.len() {
        return false;
    }
    b[i..i + 36].iter().enumerate().all(|(k, c)| match k {
        8 | 13 | 18 | 23 => *c == b'-',
        _ => c.is_ascii_hexdigit(),
    })
}

const ZERO: &str = "00000000-0000-0000-0000-000000000000";

/// Replaces UUIDs with `<0>`, `<1>`… in order of first appearance, so two
/// servers' transcripts compare equal when they behave the same.
#[derive(Default)]
pub struct Normalizer {
    names: HashMap<String, usize>,
}

impl Normalizer {
    fn name_of(&mut self, u: &str) -> String {
        if u == ZERO {
            return u.to_string();
        }
        let n = self.names.len();
        let i = *self.names.entry(u.to_string()).or_insert(n);
        format!("<{i}>")
    }

    fn known(&self, u: &str) -> Option<usize> {
        self.names.get(u).copied()
    }

    pub fn string(&mut self, s: &str) -> String {
        let b = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        while i < b.len() {
            if is_uuid_at(b, i)
                && (i == 0 || !b[i - 1].is_ascii_hexdigit())
                && (i + 36 == b.len() || !b[i + 36].is_ascii_hexdigit())
            {
                out.push_str(&self.name_of(&s[i..i + 36]));
                i += 36;
            } else {
                let ch = s[i..].chars().next().unwrap();
                out.push(ch);
                i += ch.len_utf8();
            }
        }
        // ovsdb-server orders the two rows of a duplicate-index error by
        // all columns including the random _version: compare them as a set.
        if let (Some(f), Some(sp)) = (
            out.find("  First row, with UUID "),
            out.find("  Second row, with UUID "),
        ) {
            if f < sp {
                let head = out[..f].to_string();
                let first = out[f + 2 + 6..sp].to_string();
                let second = out[sp + 2 + 7..].to_string();
                let (a, b) = if first <= second {
                    (first, second)
                } else {
                    (second, first)
                };
                out = format!("{head}  One{a}  Other{b}");
            }
        }
        // Elapsed times in timed-out waits differ from run to run.
        if let Some(p) = out.find("\"wait\" timed out after ") {
            let head = &out[..p + 23];
            out = format!("{head}<N> ms");
        }
        out
    }

    /// A sort key for a value whose UUIDs may not be named yet.
    fn masked(&self, v: &Value) -> String {
        let mut m = Normalizer {
            names: self.names.clone(),
        };
        // Unknown UUIDs all look alike here.
        let s = v.to_string();
        let b = s.as_bytes();
        let mut out = String::new();
        let mut i = 0;
        while i < b.len() {
            if is_uuid_at(b, i) {
                match m.known(&s[i..i + 36]) {
                    Some(n) => out.push_str(&format!("<{n:08}>")),
                    None => out.push_str("<?>"),
                }
                i += 36;
            } else {
                let ch = s[i..].chars().next().unwrap();
                out.push(ch);
                i += ch.len_utf8();
            }
        }
        m.names.clear();
        out
    }

    pub fn value(&mut self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.string(s)),
            Value::Array(a) => {
                let rowset = !a.is_empty() && a.iter().all(|x| x.get("_uuid").is_some());
                if rowset {
                    // Row order follows UUID order in both servers, which
                    // differs between them: compare row sets.
                    let mut items: Vec<&Value> = a.iter().collect();
                    items.sort_by_key(|x| self.masked(x));
                    let mut out: Vec<Value> = items.into_iter().map(|x| self.value(x)).collect();
                    out.sort_by_key(|x| x.to_string());
                    Value::Array(out)
                } else {
                    Value::Array(a.iter().map(|x| self.value(x)).collect())
                }
            }
            Value::Object(m) => {
                let uuid_keys = !m.is_empty()
                    && m.keys()
                        .all(|k| k.len() == 36 && is_uuid_at(k.as_bytes(), 0));
                let mut entries: Vec<(&String, &Value)> = m.iter().collect();
                if uuid_keys {
                    entries.sort_by_key(|(k, v)| match self.known(k) {
                        Some(n) => format!("0{n:08}"),
                        None => format!("1{}", self.masked(v)),
                    });
                }
                let mut out = Map::new();
                for (k, v) in entries {
                    let k = self.string(k);
                    let v = match (k.as_str(), v) {
                        // Select results: ovsdb-server sorts rows by all
                        // columns in hash order (and the random _version),
                        // so compare them as a multiset.
                        ("rows", Value::Array(a)) => {
                            let mut items: Vec<&Value> = a.iter().collect();
                            items.sort_by_key(|x| self.masked(x));
                            let mut rows: Vec<Value> =
                                items.into_iter().map(|x| self.value(x)).collect();
                            rows.sort_by_key(|x| x.to_string());
                            Value::Array(rows)
                        }
                        _ => self.value(v),
                    };
                    out.insert(k, v);
                }
                Value::Object(out)
            }
            other => other.clone(),
        }
    }
}
