//! The pass-through's model swap: any body, any model. On a body a strict JSON parser reads, the swap must
//! succeed exactly when it is an object with one top-level `model` that is a string; then the output
//! parses, names the new model, and equals the input byte for byte everywhere but the model's value. On
//! any body (lone surrogate escapes, which JSON's grammar allows and strict parsers refuse, included), an
//! accepted body is changed only in the model's string token. Input: `[n] [n % 32 bytes of model] body`.
#![no_main]

use std::fmt;

use libfuzzer_sys::fuzz_target;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use sluice_providers::model_field::ModelField;

/// What a real JSON parser says about the top level: an object? how many `model` keys, and was the last
/// one a string (and which)?
#[derive(Default)]
struct TopLevel {
    object: bool,
    models: usize,
    model: Option<String>,
}

struct TopLevelVisitor;

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut top = TopLevel { object: true, ..TopLevel::default() };
        while let Some(key) = map.next_key::<String>()? {
            if key == "model" {
                top.models += 1;
                top.model = match map.next_value::<Value>()? {
                    Value::String(model) => Some(model),
                    _ => None,
                };
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(top)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TopLevel::default())
    }
    fn visit_bool<E>(self, _: bool) -> Result<TopLevel, E> { Ok(TopLevel::default()) }
    fn visit_i64<E>(self, _: i64) -> Result<TopLevel, E> { Ok(TopLevel::default()) }
    fn visit_u64<E>(self, _: u64) -> Result<TopLevel, E> { Ok(TopLevel::default()) }
    fn visit_f64<E>(self, _: f64) -> Result<TopLevel, E> { Ok(TopLevel::default()) }
    fn visit_str<E>(self, _: &str) -> Result<TopLevel, E> { Ok(TopLevel::default()) }
    fn visit_unit<E>(self) -> Result<TopLevel, E> { Ok(TopLevel::default()) }
}

fn top_level(body: &[u8]) -> Option<TopLevel> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let top = (&mut de).deserialize_any(TopLevelVisitor).ok()?;
    de.end().ok()?;
    Some(top)
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let (model, body) = rest.split_at(usize::from(n % 32).min(rest.len()));
    let model = String::from_utf8_lossy(model);
    let found = ModelField::find(body);
    if let Ok(field) = &found {
        // Only the model's string token changes, whatever the body.
        let span = field.span();
        let token: String = serde_json::from_slice(&body[span.clone()]).expect("the model's token is a string");
        assert_eq!(token, field.model());
        let out = field.swap(body, &model);
        let new = serde_json::to_string(&*model).expect("a string");
        assert_eq!(&out[..span.start], &body[..span.start]);
        assert_eq!(&out[span.start..span.start + new.len()], new.as_bytes());
        assert_eq!(&out[span.start + new.len()..], &body[span.end..]);
        let text = std::str::from_utf8(&out).expect("the output is UTF-8");
        serde_json::from_str::<IgnoredAny>(text).expect("the output is JSON");
    }
    // What a strict parser says, on the bodies it reads.
    if serde_json::from_slice::<IgnoredAny>(body).is_err() || serde_json::from_slice::<Value>(body).is_err() {
        return;
    }
    let expected = top_level(body).filter(|t| t.object && t.models == 1 && t.model.is_some());
    match (found, expected) {
        (Ok(field), Some(top)) => {
            assert_eq!(Some(field.model()), top.model.as_deref());
            let value: Value = serde_json::from_slice(&field.swap(body, &model)).expect("the swapped body parses");
            assert_eq!(value["model"].as_str(), Some(&*model));
        }
        (Err(_), None) => {}
        (Ok(field), None) => panic!("accepted {:?} in {}", field.model(), String::from_utf8_lossy(body)),
        (Err(err), Some(_)) => panic!("refused {}: {err:?}", String::from_utf8_lossy(body)),
    }
});
