//! The top-level `"model"` of a JSON request body, read and swapped without re-serialising the body.
//!
//! A pass-through must send the client's body byte for byte, only the model swapped for the vendor's id:
//! re-serialising would reorder keys, change number formats and escapes, and break what depends on exact
//! bytes (Anthropic's thinking-block signatures, prompt-cache prefixes). So the body is checked to be
//! JSON, then scanned once at the top level: strings are skipped with their escapes, nested objects and
//! arrays by depth, and only the bytes of the model's string value are replaced.
//!
//! Refused as the client's error (a 400 naming `model`): a body that is not a JSON object (or not UTF-8,
//! which JSON text must be), a model that is missing, not a string (a number, `null`, an object), or given
//! twice (parsers disagree on which one counts, so no choice is safe).

use std::ops::Range;

use bytes::Bytes;
use serde::de::IgnoredAny;
use sluice_api::ErrorBody;

use crate::ProviderError;

/// Where the top-level model is in a body, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelField {
    /// The bytes of the model's string token, quotes included.
    span: Range<usize>,
    /// The model, unescaped.
    model: String,
}

impl ModelField {
    /// Finds the top-level `"model"` string of a JSON object body.
    pub fn find(body: &[u8]) -> Result<Self, ProviderError> {
        // JSON text is UTF-8 (RFC 8259), and serde_json does not check the strings it skips.
        let text = std::str::from_utf8(body).map_err(|e| refuse(&format!("the request body is not UTF-8: {e}")))?;
        serde_json::from_str::<IgnoredAny>(text)
            .map_err(|e| refuse(&format!("the request body is not valid JSON: {e}")))?;
        let mut scan = Scanner { body, at: 0 };
        scan.whitespace();
        if scan.peek() != Some(b'{') {
            return Err(refuse("the request body must be a JSON object"));
        }
        scan.at += 1;
        let mut found: Option<ModelField> = None;
        loop {
            scan.whitespace();
            match scan.peek() {
                Some(b'}') => break,
                Some(b',') => {
                    scan.at += 1;
                    continue;
                }
                Some(b'"') => {}
                _ => return Err(refuse("the request body is not a JSON object")),
            }
            let key = scan.string()?;
            scan.whitespace();
            if scan.peek() != Some(b':') {
                return Err(refuse("the request body is not a JSON object"));
            }
            scan.at += 1;
            scan.whitespace();
            if is_model(&body[key.clone()]) {
                if found.is_some() {
                    return Err(refuse("`model` is given more than once"));
                }
                if scan.peek() != Some(b'"') {
                    return Err(refuse("`model` must be a string"));
                }
                let span = scan.string()?;
                let model = serde_json::from_slice::<String>(&body[span.clone()])
                    .map_err(|e| refuse(&format!("`model` is not a valid string: {e}")))?;
                found = Some(ModelField { span, model });
            } else {
                scan.value()?;
            }
        }
        found.ok_or_else(|| refuse("`model` is required"))
    }

    /// The model the body names.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Where the model's string token is in the body, quotes included.
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// `body` (the one this field was found in) with the model's value replaced by `model`, every other
    /// byte as it was.
    pub fn swap(&self, body: &[u8], model: &str) -> Bytes {
        let value = serde_json::Value::String(model.to_owned()).to_string();
        let mut out = Vec::with_capacity(body.len() + value.len());
        out.extend_from_slice(body.get(..self.span.start).unwrap_or_default());
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(body.get(self.span.end..).unwrap_or_default());
        Bytes::from(out)
    }
}

/// `body` with its top-level model replaced by `model`, every other byte as it was.
pub fn swap_model(body: &[u8], model: &str) -> Result<Bytes, ProviderError> {
    Ok(ModelField::find(body)?.swap(body, model))
}

fn refuse(message: &str) -> ProviderError {
    ProviderError::Rejected {
        status: 400,
        error: ErrorBody::new("invalid_request_error", message, Some("model".to_owned()), None),
    }
}

/// Whether a key's string token (quotes included) says `model`, escapes and all.
fn is_model(token: &[u8]) -> bool {
    if token == b"\"model\"" {
        return true;
    }
    token.contains(&b'\\') && serde_json::from_slice::<String>(token).is_ok_and(|key| key == "model")
}

/// A cursor over a body already known to be valid JSON; every read is bounds-checked all the same.
struct Scanner<'a> {
    body: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.body.get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Skips the string starting at the cursor, returning its span, quotes included.
    fn string(&mut self) -> Result<Range<usize>, ProviderError> {
        let start = self.at;
        self.at += 1;
        loop {
            match self.peek() {
                None => return Err(refuse("the request body ends inside a string")),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(start..self.at);
                }
                // The escaped byte cannot end the string (`\"`, `\\`, `\u0022`...).
                Some(b'\\') => self.at += 2,
                Some(_) => self.at += 1,
            }
        }
    }

    /// Skips the value starting at the cursor.
    fn value(&mut self) -> Result<(), ProviderError> {
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                loop {
                    match self.peek() {
                        None => return Err(refuse("the request body ends inside a value")),
                        Some(b'"') => {
                            self.string()?;
                            continue;
                        }
                        Some(b'{' | b'[') => depth += 1,
                        Some(b'}' | b']') => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                self.at += 1;
                                return Ok(());
                            }
                        }
                        Some(_) => {}
                    }
                    self.at += 1;
                }
            }
            // A number, `true`, `false` or `null`: up to the next delimiter.
            _ => {
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.at += 1;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(err: ProviderError) -> (u16, Option<String>, String) {
        match err {
            ProviderError::Rejected { status, error } => (status, error.error.param, error.error.message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_the_top_level_model_value_changes() {
        let body = concat!(
            "{\n  \"metadata\": {\"model\": \"not me\", \"a\": [1, {\"model\": 2}, \"}\\\"]\"]},\n",
            "  \"messages\": [{\"role\": \"user\", \"content\": \"say \\\"model\\\": \\\"x\\\" \\u00e9\"}],\n",
            "  \"model\" :   \"claude-sonnet-4-5\" ,\n",
            "  \"max_tokens\": 1.50e3, \"stream\": true, \"x\": null\n}\n"
        );
        let field = ModelField::find(body.as_bytes()).unwrap();
        assert_eq!(field.model(), "claude-sonnet-4-5");
        let swapped = field.swap(body.as_bytes(), "claude-\"vendor\"-id");
        let expected = body.replace("\"claude-sonnet-4-5\"", "\"claude-\\\"vendor\\\"-id\"");
        assert_eq!(std::str::from_utf8(&swapped).unwrap(), expected);
        let parsed: serde_json::Value = serde_json::from_slice(&swapped).unwrap();
        assert_eq!(parsed["model"], "claude-\"vendor\"-id");
        assert_eq!(parsed["metadata"]["model"], "not me");
    }

    #[test]
    fn escaped_keys_and_values_are_read_as_json_reads_them() {
        let body = br#"{"mod\u0065l": "claude-\u0073onnet", "max_tokens": 5}"#;
        let field = ModelField::find(body).unwrap();
        assert_eq!(field.model(), "claude-sonnet");
        assert_eq!(
            &swap_model(body, "v").unwrap()[..],
            br#"{"mod\u0065l": "v", "max_tokens": 5}"#
        );
        // A key that only looks like `model` once its escape is misread.
        let body = br#"{"model\\": 1, "model": "m"}"#;
        assert_eq!(ModelField::find(body).unwrap().model(), "m");
    }

    #[test]
    fn bodies_without_one_plain_top_level_model_string_are_refused() {
        for (body, mention) in [
            (&b"{\"model\": 3}"[..], "must be a string"),
            (b"{\"model\": null}", "must be a string"),
            (b"{\"model\": {\"id\": \"m\"}}", "must be a string"),
            (b"{\"messages\": [], \"metadata\": {\"model\": \"m\"}}", "required"),
            (b"{\"model\": \"a\", \"model\": \"b\"}", "more than once"),
            (b"[\"model\", \"m\"]", "JSON object"),
            (b"{\"model\": \"m\"", "not valid JSON"),
            (b"{\"model\": \"m\"} trailing", "not valid JSON"),
            (b"", "not valid JSON"),
            (b"\"model\"", "JSON object"),
            // A fuzzing regression (`fuzz/corpus/model_swap/regression-invalid-utf8`): serde_json skips the
            // strings it ignores without checking their UTF-8, so a body with invalid UTF-8 in a nested key
            // was accepted and forwarded.
            (b"{\"model\": \"m\", \"tools\": [{\"in\xf0ut\": 1}]}", "not UTF-8"),
        ] {
            let (status, param, message) = param(ModelField::find(body).unwrap_err());
            assert_eq!(status, 400);
            assert_eq!(param.as_deref(), Some("model"));
            assert!(
                message.contains(mention),
                "{}: {message}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
