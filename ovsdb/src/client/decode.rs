//! Single-pass decoding of incoming messages on the client.
//!
//! `rpc::Message::parse` keeps `result` and `params` as raw JSON, which
//! costs a validating pass over them before they are parsed again. For the
//! messages that can be huge — monitor replies (a 100k-MAC dump is 26 MB)
//! and update notifications — that doubles the work. ovsdb-server writes
//! `id` before `result` and `method` before `params`, so by the time the
//! payload arrives we know what it is and decode it straight into typed
//! table updates. Anything else, or members in another order, falls back to
//! raw JSON.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::schema::DatabaseSchema;
use crate::value::seed::{TableUpdates, TableUpdatesSeed, UpdateFormat};

/// How to decode a monitor reply whose id is pending.
#[derive(Clone)]
pub(crate) struct MonitorReplyKind {
    pub schema: std::sync::Arc<DatabaseSchema>,
    pub format: UpdateFormat,
    pub since: bool,
}

/// How to decode an update notification for a known monitor.
#[derive(Clone)]
pub(crate) struct UpdateTarget {
    pub database: String,
    pub schema: std::sync::Arc<DatabaseSchema>,
    pub format: UpdateFormat,
}

/// What the session knows while a message is being decoded.
pub(crate) trait Context {
    /// The decoding of the reply to request `id`, if it is a monitor.
    fn monitor_reply(&self, id: &RawValue) -> Option<MonitorReplyKind>;
    /// The database and format of monitor `id`.
    fn update_target(&self, monitor_id: &Value) -> Option<UpdateTarget>;
}

pub(crate) enum Payload<'a> {
    Raw(&'a RawValue),
    /// A decoded monitor reply: (found, updates).
    MonitorReply(bool, TableUpdates),
    /// Decoded update params: `None` for a monitor we do not know.
    Updates(Option<(String, TableUpdates)>),
}

pub(crate) struct Incoming<'a> {
    pub id: Option<&'a RawValue>,
    pub method: Option<String>,
    pub params: Option<Payload<'a>>,
    pub result: Option<Payload<'a>>,
    pub error: Option<Value>,
}

#[derive(Clone, Copy)]
enum Key {
    Id,
    Method,
    Params,
    Result,
    Error,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON-RPC member")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                match v {
                    "id" => Ok(Key::Id),
                    "method" => Ok(Key::Method),
                    "params" => Ok(Key::Params),
                    "result" => Ok(Key::Result),
                    "error" => Ok(Key::Error),
                    other => Err(E::custom(format!(
                        "message has unexpected member \"{other}\""
                    ))),
                }
            }
        }
        d.deserialize_str(V)
    }
}

struct EnvelopeSeed<'c, C: Context>(&'c C);

impl<'de, C: Context> DeserializeSeed<'de> for EnvelopeSeed<'_, C> {
    type Value = Incoming<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Incoming<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, C: Context> Visitor<'de> for EnvelopeSeed<'_, C> {
    type Value = Incoming<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC message object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Incoming<'de>, A::Error> {
        let mut msg = Incoming {
            id: None,
            method: None,
            params: None,
            result: None,
            error: None,
        };
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Id => {
                    let id: &RawValue = map.next_value()?;
                    msg.id = (id.get() != "null").then_some(id);
                }
                Key::Method => msg.method = Some(map.next_value()?),
                Key::Params => {
                    let three = msg.method.as_deref() == Some("update3");
                    let is_update = matches!(
                        msg.method.as_deref(),
                        Some("update" | "update2" | "update3")
                    );
                    msg.params = Some(if is_update {
                        Payload::Updates(
                            map.next_value_seed(UpdateParamsSeed { ctx: self.0, three })?,
                        )
                    } else {
                        Payload::Raw(map.next_value()?)
                    });
                }
                Key::Result => {
                    let kind = msg.id.and_then(|id| self.0.monitor_reply(id));
                    msg.result = Some(match kind {
                        Some(k) if k.since => {
                            let (found, u) = map.next_value_seed(SinceReplySeed(&k.schema))?;
                            Payload::MonitorReply(found, u)
                        }
                        Some(k) => Payload::MonitorReply(
                            false,
                            map.next_value_seed(TableUpdatesSeed {
                                schema: &k.schema,
                                format: k.format,
                            })?,
                        ),
                        None => Payload::Raw(map.next_value()?),
                    });
                }
                Key::Error => msg.error = map.next_value()?,
            }
        }
        Ok(msg)
    }
}

/// Decodes one complete message frame.
pub(crate) fn decode<'a, C: Context>(frame: &'a [u8], ctx: &C) -> Result<Incoming<'a>, String> {
    let text =
        std::str::from_utf8(frame).map_err(|e| format!("received bad JSON-RPC message: {e}"))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let msg = EnvelopeSeed(ctx)
        .deserialize(&mut de)
        .map_err(|e| format!("received bad JSON-RPC message: {e}"))?;
    de.end()
        .map_err(|e| format!("received bad JSON-RPC message: {e}"))?;
    Ok(msg)
}

/// `[found, last-txn-id, <table-updates2>]`.
struct SinceReplySeed<'a>(&'a DatabaseSchema);

impl<'de> DeserializeSeed<'de> for SinceReplySeed<'_> {
    type Value = (bool, TableUpdates);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for SinceReplySeed<'_> {
    type Value = (bool, TableUpdates);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("[found, last-txn-id, updates]")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let found: bool = seq
            .next_element()?
            .ok_or_else(|| A::Error::custom("missing found"))?;
        let _: IgnoredAny = seq
            .next_element()?
            .ok_or_else(|| A::Error::custom("missing last-txn-id"))?;
        let updates = seq
            .next_element_seed(TableUpdatesSeed {
                schema: self.0,
                format: UpdateFormat::V2,
            })?
            .ok_or_else(|| A::Error::custom("missing updates"))?;
        Ok((found, updates))
    }
}

/// `[monitor-id, updates]` (update, update2) or `[monitor-id, last-txn-id,
/// updates2]` (update3).
struct UpdateParamsSeed<'c, C: Context> {
    ctx: &'c C,
    three: bool,
}

impl<'de, C: Context> DeserializeSeed<'de> for UpdateParamsSeed<'_, C> {
    type Value = Option<(String, TableUpdates)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, C: Context> Visitor<'de> for UpdateParamsSeed<'_, C> {
    type Value = Option<(String, TableUpdates)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("update notification params")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let id: Value = seq
            .next_element()?
            .ok_or_else(|| A::Error::custom("missing monitor id"))?;
        if self.three {
            let _: IgnoredAny = seq
                .next_element()?
                .ok_or_else(|| A::Error::custom("missing last-txn-id"))?;
        }
        let Some(target) = self.ctx.update_target(&id) else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(None);
        };
        let updates = seq
            .next_element_seed(TableUpdatesSeed {
                schema: &target.schema,
                format: target.format,
            })?
            .ok_or_else(|| A::Error::custom("missing updates"))?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Some((target.database, updates)))
    }
}

/// Parses a raw monitor reply (when `result` came before `id`).
pub(crate) fn decode_monitor_reply(
    raw: &RawValue,
    kind: &MonitorReplyKind,
) -> Result<(bool, TableUpdates), String> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let r = if kind.since {
        SinceReplySeed(&kind.schema).deserialize(&mut de)
    } else {
        TableUpdatesSeed {
            schema: &kind.schema,
            format: kind.format,
        }
        .deserialize(&mut de)
        .map(|u| (false, u))
    };
    r.map_err(|e| e.to_string())
}

/// Decodes a complete `monitor`/`monitor_cond` reply frame the way a
/// session does (one pass, straight into typed updates). Public for
/// benchmarks and tools that capture dumps.
pub fn decode_monitor_reply_frame(
    frame: &[u8],
    schema: &std::sync::Arc<DatabaseSchema>,
    format: UpdateFormat,
) -> Result<TableUpdates, String> {
    struct AnyIdIsMonitor(MonitorReplyKind);
    impl Context for AnyIdIsMonitor {
        fn monitor_reply(&self, _: &RawValue) -> Option<MonitorReplyKind> {
            Some(self.0.clone())
        }
        fn update_target(&self, _: &Value) -> Option<UpdateTarget> {
            None
        }
    }
    let kind = MonitorReplyKind {
        schema: schema.clone(),
        format,
        since: false,
    };
    let ctx = AnyIdIsMonitor(kind.clone());
    let msg = decode(frame, &ctx)?;
    if let Some(e) = msg.error.filter(|e| !e.is_null()) {
        return Err(format!("error reply: {e}"));
    }
    match msg.result {
        Some(Payload::MonitorReply(_, u)) => Ok(u),
        Some(Payload::Raw(raw)) => decode_monitor_reply(raw, &kind).map(|(_, u)| u),
        _ => Err("not a reply".into()),
    }
}
