//! Strict JSON parsing of request bodies with errors that say where the problem is.

use serde::de::DeserializeOwned;

/// Why a request body could not be read as the expected type.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// The body is not JSON at all; the message carries line and column.
    #[error("the request body is not valid JSON: {message} (line {line}, column {column})")]
    Syntax {
        /// serde_json's description of the problem.
        message: String,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
    },
    /// The JSON is well formed, but a field is missing or has the wrong type.
    #[error("invalid value for `{path}`: {message}")]
    Field {
        /// The field path, like `messages[0].role`; `body` for the top level.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ParseError {
    /// The request field the error is about, for the `param` of an OpenAI error.
    pub fn param(&self) -> Option<&str> {
        match self {
            ParseError::Syntax { .. } => None,
            ParseError::Field { path, .. } => Some(path),
        }
    }
}

/// Parses `body` as `T`, naming the offending field on failure.
///
/// A body is read once without tracking where the parser is, and only a body that fails is read again
/// to find the field's path: tracking it allocates each key and index of the body (about a fifth of the
/// parse's time on a chat request), which an accepted request never needs.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    match from_json_bytes(body) {
        Ok(value) => Ok(value),
        // The same parse fails the same way; `syntax` only if it somehow did not.
        Err(err) => Err(parse_json_traced::<T>(body).err().unwrap_or_else(|| syntax(&err))),
    }
}

/// `serde_json::from_slice`, faster on the bodies that matter: a body that is UTF-8 throughout (as JSON
/// must be) is checked once by simdutf8 and parsed as text, so that serde_json does not check each string
/// of it again (std's check, about 1.6 instructions a byte: 2.9k of the gateway's 137k for the
/// benchmark's 2 KB chat request). Any other body is parsed as bytes, failing as `from_slice` fails.
pub fn from_json_bytes<T: DeserializeOwned>(body: &[u8]) -> serde_json::Result<T> {
    match simdutf8::basic::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
}

/// Parses `body` as `T` tracking the path, for the error of a body that failed.
fn parse_json_traced<T: DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(value) => value,
        Err(err) => return Err(classify(err)),
    };
    // Trailing garbage after the JSON value is a syntax error too.
    de.end().map_err(|e| syntax(&e))?;
    Ok(value)
}

fn classify(err: serde_path_to_error::Error<serde_json::Error>) -> ParseError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => ParseError::Field {
            path: if path == "." { "body".to_owned() } else { path },
            message: strip_position(&inner),
        },
        _ => syntax(&inner),
    }
}

fn syntax(err: &serde_json::Error) -> ParseError {
    ParseError::Syntax {
        message: strip_position(err),
        line: err.line(),
        column: err.column(),
    }
}

/// serde_json appends " at line L column C" to its messages; the position is reported separately.
fn strip_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChatCompletionRequest;

    #[test]
    fn syntax_error_reports_line_and_column() {
        let err = parse_json::<ChatCompletionRequest>(b"{\n  \"model\": \"x\",\n  oops\n}").unwrap_err();
        match err {
            ParseError::Syntax { line, column, .. } => {
                assert_eq!(line, 3);
                assert_eq!(column, 3);
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn missing_field_is_named() {
        let err = parse_json::<ChatCompletionRequest>(br#"{"messages": []}"#).unwrap_err();
        assert_eq!(err.param(), Some("body"));
        assert!(err.to_string().contains("missing field `model`"), "{err}");
    }

    #[test]
    fn mistyped_nested_field_is_named_by_path() {
        let body =
            br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "wizard", "content": "x"}]}"#;
        let err = parse_json::<ChatCompletionRequest>(body).unwrap_err();
        assert_eq!(err.param(), Some("messages[1].role"), "{err}");
        let body = br#"{"model": "m", "messages": [{"role": "user", "content": 42}]}"#;
        let err = parse_json::<ChatCompletionRequest>(body).unwrap_err();
        assert_eq!(err.param(), Some("messages[0].content"), "{err}");
        let body = br#"{"model": "m", "messages": [], "max_tokens": "ten"}"#;
        let err = parse_json::<ChatCompletionRequest>(body).unwrap_err();
        assert_eq!(err.param(), Some("max_tokens"), "{err}");
    }

    #[test]
    fn bytes_parse_as_from_slice_parses_them() {
        let bodies: [&[u8]; 6] = [
            br#"{"a": "plain", "b": ["\u00e9t\u00e9", "\"q\""], "c": 1.5}"#,
            b"{\"a\": \"\xc3\xa9t\xc3\xa9\"}",
            b"{\"a\": \"\xff\"}",
            b"{\"a\": \"\xc3\"}",
            b"\xef\xbb\xbf{}",
            b"{\"a\": 1} \xc3\xa9",
        ];
        for body in bodies {
            let ours = from_json_bytes::<serde_json::Value>(body).map_err(|e| e.to_string());
            let theirs = serde_json::from_slice::<serde_json::Value>(body).map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn trailing_garbage_is_a_syntax_error() {
        let err = parse_json::<ChatCompletionRequest>(br#"{"model": "m", "messages": []} x"#).unwrap_err();
        assert!(matches!(err, ParseError::Syntax { .. }), "{err:?}");
    }
}
