//! `POST /v1/embeddings`: the request and the response.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::Extra;

/// `POST /v1/embeddings` request body. `input` is kept as JSON (a string, an array of strings, or token
/// arrays) and forwarded as sent to OpenAI-format upstreams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    /// The model name as the client sends it.
    pub model: String,
    /// What to embed.
    pub input: EmbeddingInput,
    /// `float` or `base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// Output dimensions, for models that support shortening.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// An end-user identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every other field, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A view of an embeddings request for an OpenAI-format upstream: the vendor's model id instead of the
/// client's model name; everything else borrowed and forwarded as sent.
#[derive(Debug, Serialize)]
pub struct UpstreamEmbeddingRequest<'a> {
    model: &'a str,
    input: &'a EmbeddingInput,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding_format: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(flatten)]
    extra: &'a Extra,
}

impl<'a> UpstreamEmbeddingRequest<'a> {
    /// Views `request` for the upstream model `model`.
    pub fn new(request: &'a EmbeddingRequest, model: &'a str) -> Self {
        Self {
            model,
            input: &request.input,
            encoding_format: request.encoding_format.as_deref(),
            dimensions: request.dimensions,
            user: request.user.as_deref(),
            extra: &request.extra,
        }
    }
}

/// The `input` of an embeddings request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// Token ids, one list or several (passed through to OpenAI-format upstreams only).
    Tokens(Value),
}

impl EmbeddingInput {
    /// The texts to embed, when the input is text.
    pub fn texts(&self) -> Option<Vec<&str>> {
        match self {
            EmbeddingInput::Text(text) => Some(vec![text.as_str()]),
            EmbeddingInput::Texts(texts) => Some(texts.iter().map(String::as_str).collect()),
            EmbeddingInput::Tokens(_) => None,
        }
    }

    /// The total length of the texts in bytes, for sizing budget reservations.
    pub fn text_bytes(&self) -> usize {
        match self {
            EmbeddingInput::Text(text) => text.len(),
            EmbeddingInput::Texts(texts) => texts.iter().map(String::len).sum(),
            EmbeddingInput::Tokens(tokens) => tokens.to_string().len(),
        }
    }

    /// How many inputs there are (texts, or lists of token ids).
    pub fn len(&self) -> usize {
        match self {
            EmbeddingInput::Text(_) => 1,
            EmbeddingInput::Texts(texts) => texts.len(),
            EmbeddingInput::Tokens(tokens) => match tokens.as_array() {
                Some(items) if items.iter().all(serde_json::Value::is_array) => items.len(),
                _ => 1,
            },
        }
    }

    /// Whether there is nothing to embed.
    pub fn is_empty(&self) -> bool {
        match self {
            EmbeddingInput::Text(text) => text.is_empty(),
            EmbeddingInput::Texts(texts) => texts.is_empty() || texts.iter().any(String::is_empty),
            EmbeddingInput::Tokens(tokens) => tokens.as_array().is_none_or(Vec::is_empty),
        }
    }
}

/// The `POST /v1/embeddings` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    /// Always `list`.
    pub object: String,
    /// One embedding per input, in input order.
    pub data: Vec<Embedding>,
    /// The model that answered.
    pub model: String,
    /// Tokens read.
    pub usage: EmbeddingUsage,
}

/// One embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// Always `embedding`.
    pub object: String,
    /// Position of its input.
    pub index: u32,
    /// The vector (or its base64 form when `encoding_format` was `base64`).
    pub embedding: Value,
}

/// Usage of an embeddings call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    /// Tokens read.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// The same, as OpenAI reports it.
    #[serde(default)]
    pub total_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_of_every_shape_round_trip() {
        for input in [json!("one"), json!(["a", "b"]), json!([1, 2, 3]), json!([[1, 2], [3]])] {
            let body = json!({"model": "e", "input": input, "dimensions": 256, "x_extra": true});
            let request: EmbeddingRequest = serde_json::from_value(body.clone()).unwrap();
            assert_eq!(serde_json::to_value(&request).unwrap(), body);
        }
        let body = json!({"model": "e", "input": ["a", "bc"], "encoding_format": "float", "x": 1});
        let request: EmbeddingRequest = serde_json::from_value(body.clone()).unwrap();
        let mut expected = body;
        expected["model"] = json!("vendor");
        assert_eq!(
            serde_json::to_value(UpstreamEmbeddingRequest::new(&request, "vendor")).unwrap(),
            expected
        );
        assert_eq!(request.input.texts(), Some(vec!["a", "bc"]));
        assert_eq!(request.input.text_bytes(), 3);
    }
}
