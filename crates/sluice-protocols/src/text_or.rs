//! A field both protocols allow as a plain string or as a list (`input`, message `content`, a tool
//! result's `content`, Anthropic's `system`).
//!
//! A hand-written visitor rather than `#[serde(untagged)]`: untagged buffers the value and, when a list
//! element is wrong, reports only that no variant matched, losing the path of the element at fault.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// A string, or a list of `T`.
#[derive(Debug)]
pub(crate) enum TextOr<T> {
    /// The plain-string form.
    Text(String),
    /// The list form.
    List(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for TextOr<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextOrVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for TextOrVisitor<T> {
            type Value = TextOr<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextOr::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(TextOr::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // Bounded: the hint comes from the input.
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(TextOr::List(items))
            }
        }
        deserializer.deserialize_any(TextOrVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Part {
        #[expect(dead_code, reason = "read to check the path of a type error")]
        kind: u32,
    }

    #[derive(Debug, Deserialize)]
    struct Holder {
        content: TextOr<Part>,
    }

    #[test]
    fn errors_in_list_elements_keep_their_path() {
        let err = sluice_api::parse_json::<Holder>(br#"{"content": [{"kind": 1}, {"kind": "x"}]}"#).unwrap_err();
        assert_eq!(err.param(), Some("content[1].kind"), "{err}");
        let err = sluice_api::parse_json::<Holder>(br#"{"content": 7}"#).unwrap_err();
        assert_eq!(err.param(), Some("content"));
        assert!(err.to_string().contains("a string or an array"), "{err}");
        assert!(matches!(
            sluice_api::parse_json::<Holder>(br#"{"content": "hi"}"#).unwrap().content,
            TextOr::Text(t) if t == "hi"
        ));
    }
}
