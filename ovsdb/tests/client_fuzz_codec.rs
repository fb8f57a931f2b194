//! Bounded fuzzing (proptest) of everything that reads peer bytes on the
//! client side: the stream framer, the message parser, the value parser and
//! the schema-guided update decoder. Garbage must give errors, never panics,
//! and valid data must survive any split into reads.

use bytes::BytesMut;
use ovsdb::client::Replica;
use ovsdb::rpc::{JsonFramer, Message};
use ovsdb::schema::{hardware_vtep, ColumnType};
use ovsdb::value::seed::{parse_table_updates, UpdateFormat};
use ovsdb::{Atom, Datum};
use proptest::prelude::*;
use serde_json::{json, Value};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[a-z\"\\\\{}\\[\\] ]{0,12}".prop_map(Value::String),
        Just(json!(["uuid", "3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a55"])),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,6}", inner.clone(), 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| json!(["set", v])),
            prop::collection::vec((inner.clone(), inner), 0..4).prop_map(|v| json!([
                "map",
                v.into_iter()
                    .map(|(a, b)| json!([a, b]))
                    .collect::<Vec<_>>()
            ])),
        ]
    })
}

fn column_type() -> impl Strategy<Value = ColumnType> {
    let base = prop_oneof![
        Just("integer"),
        Just("real"),
        Just("boolean"),
        Just("string"),
        Just("uuid")
    ];
    (
        base.clone(),
        prop::option::of(base),
        0u8..2,
        prop_oneof![Just(json!(1)), Just(json!(3)), Just(json!("unlimited"))],
    )
        .prop_map(|(k, v, min, max)| {
            let mut t = json!({"key": k, "min": min, "max": max});
            if let Some(v) = v {
                t["value"] = json!(v);
            }
            ColumnType::from_json(&t).unwrap()
        })
}

fn atom_of(ty: &str) -> BoxedStrategy<Atom> {
    match ty {
        "integer" => any::<i64>().prop_map(Atom::Integer).boxed(),
        "real" => (-1e6f64..1e6).prop_map(Atom::Real).boxed(),
        "boolean" => any::<bool>().prop_map(Atom::Boolean).boxed(),
        "string" => "[ -~]{0,10}".prop_map(Atom::from).boxed(),
        _ => any::<u128>()
            .prop_map(|n| Atom::Uuid(uuid::Uuid::from_u128(n)))
            .boxed(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any sequence of messages, split into reads anywhere, frames back to
    /// exactly those messages.
    #[test]
    fn framing_survives_any_split(msgs in prop::collection::vec(json_value(), 1..6), cuts in prop::collection::vec(0usize..4096, 0..8)) {
        let objects: Vec<Value> = msgs.into_iter().map(|v| json!({"id": 1, "result": v, "error": null})).collect();
        let mut wire = Vec::new();
        for o in &objects {
            wire.extend_from_slice(serde_json::to_string(o).unwrap().as_bytes());
            wire.extend_from_slice(b" \n");
        }
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
        cuts.sort();
        let mut framer = JsonFramer::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut start = 0;
        for end in cuts.into_iter().chain(std::iter::once(wire.len())) {
            buf.extend_from_slice(&wire[start..end]);
            start = end;
            while let Some(f) = framer.next_frame(&mut buf).unwrap() {
                got.push(serde_json::from_slice::<Value>(&f).unwrap());
            }
        }
        prop_assert_eq!(got, objects);
    }

    /// Random bytes never panic the framer or the message parser.
    #[test]
    fn garbage_bytes_never_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8)) {
        let mut framer = JsonFramer::new(256);
        let mut buf = BytesMut::new();
        'outer: for c in chunks {
            buf.extend_from_slice(&c);
            loop {
                match framer.next_frame(&mut buf) {
                    Ok(Some(f)) => { let _ = Message::parse(&f); }
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
        }
    }

    /// Random JSON never panics the value parser, whatever the column type.
    #[test]
    fn value_parser_never_panics(v in json_value(), ty in column_type()) {
        let _ = Datum::from_json(&v, &ty);
        let _ = Datum::from_json_untyped(&v);
    }

    /// A well-typed value survives encoding and decoding, through both the
    /// Value path and the streaming seed path.
    #[test]
    fn typed_values_round_trip(ty in column_type(), seed in any::<u64>()) {
        let key = ty.key.atomic.name();
        let runner_atoms = {
            use proptest::strategy::ValueTree;
            use proptest::test_runner::{Config, TestRunner, RngAlgorithm, TestRng};
            let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &{
                let mut s = [0u8; 32];
                s[..8].copy_from_slice(&seed.to_le_bytes());
                s
            }));
            let n = if ty.max == 1 { 1 } else { 3 };
            let keys: Vec<Atom> = (0..n).map(|_| atom_of(key).new_tree(&mut runner).unwrap().current()).collect();
            let vals: Vec<Atom> = match &ty.value {
                Some(vt) => (0..n).map(|_| atom_of(vt.atomic.name()).new_tree(&mut runner).unwrap().current()).collect(),
                None => vec![],
            };
            (keys, vals)
        };
        let (keys, vals) = runner_atoms;
        let d = if ty.value.is_some() { Datum::map(keys.into_iter().zip(vals)) } else { Datum::set(keys) };
        let j = d.to_json();
        prop_assert_eq!(&Datum::from_json(&j, &ty).unwrap(), &d);
        use serde::de::DeserializeSeed;
        let text = serde_json::to_string(&j).unwrap();
        let mut de = serde_json::Deserializer::from_str(&text);
        prop_assert_eq!(ovsdb::value::seed::DatumSeed(&ty).deserialize(&mut de).unwrap(), d);
    }

    /// Random update documents never panic the decoder or the replica.
    #[test]
    fn update_decoder_never_panics(tables in prop::collection::btree_map(
        prop_oneof![Just("Logical_Switch".to_string()), Just("Physical_Port".to_string()), Just("Nope".to_string())],
        prop::collection::btree_map(
            prop_oneof![Just("3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a55".to_string()), "[0-9a-f-]{0,36}"],
            json_value(), 0..4),
        0..3)) {
        let s = hardware_vtep();
        let doc = serde_json::to_string(&tables).unwrap();
        for format in [UpdateFormat::V1, UpdateFormat::V2] {
            if let Ok(u) = parse_table_updates(&doc, &s, format) {
                let mut r = Replica::new(s.clone());
                let _ = r.apply(u);
            }
        }
    }
}
