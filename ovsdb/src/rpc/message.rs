//! JSON-RPC 1.0 messages as OVSDB uses them (RFC 7047 §4).
//!
//! Incoming messages are parsed lazily: `params` and `result` stay raw JSON
//! borrowed from the frame, so the receiver parses them with the schema in
//! hand (see `value::seed`). Outgoing messages never carry a `"jsonrpc"`
//! member: ovsdb-server drops a connection that sends one.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("received bad JSON-RPC message: {0}")]
    BadMessage(String),
}

/// The members a JSON-RPC 1.0 message may have. Unknown members make the
/// message invalid, as in ovsdb-server.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<Value>,
}

/// One received message, borrowing its raw parts from the frame.
#[derive(Debug)]
pub enum Message<'a> {
    Request {
        id: &'a RawValue,
        method: String,
        /// Absent `params` (allowed by ovsdb-server for some methods) is `None`.
        params: Option<&'a RawValue>,
    },
    Notification {
        method: String,
        params: Option<&'a RawValue>,
    },
    Response {
        id: &'a RawValue,
        /// `Ok(result)` or `Err(error)`; the real server omits `result` on errors.
        outcome: Result<&'a RawValue, Value>,
    },
}

impl<'a> Message<'a> {
    pub fn parse(frame: &'a [u8]) -> Result<Message<'a>, MessageError> {
        let w: Wire<'a> =
            serde_json::from_slice(frame).map_err(|e| MessageError::BadMessage(e.to_string()))?;
        let id = w.id.filter(|id| id.get() != "null");
        match (w.method, id) {
            (Some(method), Some(id)) => {
                if w.result.is_some() || w.error.is_some() {
                    return Err(MessageError::BadMessage(
                        "request has unexpected member \"result\" or \"error\"".into(),
                    ));
                }
                Ok(Message::Request {
                    id,
                    method,
                    params: w.params,
                })
            }
            (Some(method), None) => Ok(Message::Notification {
                method,
                params: w.params,
            }),
            (None, Some(id)) => {
                if w.params.is_some() {
                    return Err(MessageError::BadMessage(
                        "reply has unexpected member \"params\"".into(),
                    ));
                }
                match (w.result, w.error) {
                    (_, Some(e)) if !e.is_null() => Ok(Message::Response {
                        id,
                        outcome: Err(e),
                    }),
                    (Some(r), _) => Ok(Message::Response { id, outcome: Ok(r) }),
                    (None, _) => Err(MessageError::BadMessage(
                        "reply has neither \"result\" nor \"error\"".into(),
                    )),
                }
            }
            (None, None) => Err(MessageError::BadMessage(
                "message has neither \"method\" nor \"id\"".into(),
            )),
        }
    }
}

/// Serializes a request `{"id":…,"method":…,"params":…}`.
pub fn request<P: Serialize + ?Sized>(id: &Value, method: &str, params: &P) -> Bytes {
    #[derive(Serialize)]
    struct Req<'a, P: ?Sized> {
        id: &'a Value,
        method: &'a str,
        params: &'a P,
    }
    to_bytes(&Req { id, method, params })
}

/// Serializes a notification (a request with a null id).
pub fn notification<P: Serialize + ?Sized>(method: &str, params: &P) -> Bytes {
    request(&Value::Null, method, params)
}

/// Serializes a successful reply the way ovsdb-server does:
/// `{"id":…,"result":…,"error":null}`.
pub fn response<R: Serialize + ?Sized>(id: &RawValue, result: &R) -> Bytes {
    #[derive(Serialize)]
    struct Resp<'a, R: ?Sized> {
        id: &'a RawValue,
        result: &'a R,
        error: (),
    }
    to_bytes(&Resp {
        id,
        result,
        error: (),
    })
}

/// Serializes an error reply the way ovsdb-server does: `{"id":…,"error":…}`.
pub fn error_response(id: &RawValue, error: &Value) -> Bytes {
    #[derive(Serialize)]
    struct Err<'a> {
        id: &'a RawValue,
        error: &'a Value,
    }
    to_bytes(&Err { id, error })
}

fn to_bytes<T: Serialize>(v: &T) -> Bytes {
    // Serializing our own plain data to a Vec cannot fail.
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_messages() {
        match Message::parse(br#"{"id":"echo","method":"echo","params":[]}"#).unwrap() {
            Message::Request { id, method, .. } => {
                assert_eq!(id.get(), "\"echo\"");
                assert_eq!(method, "echo");
            }
            m => panic!("{m:?}"),
        }
        assert!(matches!(
            Message::parse(br#"{"id":null,"method":"update2","params":["m",{}]}"#).unwrap(),
            Message::Notification { .. }
        ));
        match Message::parse(br#"{"id":9,"error":"unknown method"}"#).unwrap() {
            Message::Response {
                outcome: Err(e), ..
            } => assert_eq!(e, json!("unknown method")),
            m => panic!("{m:?}"),
        }
        match Message::parse(br#"{"id":3,"result":["hardware_vtep"],"error":null}"#).unwrap() {
            Message::Response { outcome: Ok(r), .. } => assert_eq!(r.get(), r#"["hardware_vtep"]"#),
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn rejects_jsonrpc_member_and_nonsense() {
        assert!(
            Message::parse(br#"{"jsonrpc":"2.0","id":1,"method":"echo","params":[]}"#).is_err()
        );
        assert!(Message::parse(br#"{"id":1}"#).is_err());
        assert!(Message::parse(br#"[1,2]"#).is_err());
        assert!(Message::parse(br#"{}"#).is_err());
    }

    #[test]
    fn serializes_without_jsonrpc_member() {
        let r = request(&json!(1), "echo", &json!([]));
        assert_eq!(&r[..], br#"{"id":1,"method":"echo","params":[]}"#);
        let id: &RawValue = serde_json::from_str("\"echo\"").unwrap();
        assert_eq!(
            &response(id, &json!([]))[..],
            br#"{"id":"echo","result":[],"error":null}"#
        );
        assert_eq!(
            &error_response(id, &json!("unknown method"))[..],
            br#"{"id":"echo","error":"unknown method"}"#
        );
    }
}
