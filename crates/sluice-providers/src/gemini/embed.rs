//! Embeddings through Gemini's `batchEmbedContents`: one request per input text, answered in OpenAI's
//! `list` of `embedding`s.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_api::{Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, ErrorBody, TokenUsage};

use crate::ProviderError;

#[derive(Serialize)]
struct BatchRequest<'a> {
    requests: Vec<EmbedRequest<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EmbedRequest<'a> {
    model: &'a str,
    content: Content<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimensionality: Option<u32>,
}

#[derive(Serialize)]
struct Content<'a> {
    parts: [Part<'a>; 1],
}

#[derive(Serialize)]
struct Part<'a> {
    text: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchResponse {
    #[serde(default)]
    embeddings: Vec<ContentEmbedding>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
}

#[derive(Deserialize)]
struct ContentEmbedding {
    values: Vec<f32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
}

/// The `batchEmbedContents` body for `request` on `model` (`models/...` form).
pub(crate) fn translate(request: &EmbeddingRequest, model: &str) -> Result<Vec<u8>, ProviderError> {
    let texts = request.input.texts().ok_or_else(|| ProviderError::Rejected {
        status: 400,
        error: ErrorBody::new(
            "invalid_request_error",
            "Gemini embeds text only: `input` must be a string or an array of strings, not token ids.",
            Some("input".to_owned()),
            Some("unsupported_input".to_owned()),
        ),
    })?;
    if request.encoding_format.as_deref().is_some_and(|f| f != "float") {
        return Err(ProviderError::Rejected {
            status: 400,
            error: ErrorBody::new(
                "invalid_request_error",
                "Gemini returns float embeddings only: `encoding_format` must be `float`.",
                Some("encoding_format".to_owned()),
                Some("unsupported_value".to_owned()),
            ),
        });
    }
    let batch = BatchRequest {
        requests: texts
            .into_iter()
            .map(|text| EmbedRequest {
                model,
                content: Content { parts: [Part { text }] },
                output_dimensionality: request.dimensions,
            })
            .collect(),
    };
    crate::transport::json_body(&batch)
}

/// The OpenAI answer for a `batchEmbedContents` response. Gemini reports no token count on older
/// models; then the usage is left for the gateway to estimate.
pub(crate) fn response(body: &[u8], model: &str) -> Result<(Bytes, Option<TokenUsage>), ProviderError> {
    let batch: BatchResponse = serde_json::from_slice(body).map_err(|e| ProviderError::Protocol {
        detail: format!("the batchEmbedContents response is malformed: {e}"),
    })?;
    let usage = batch.usage_metadata.map(|u| TokenUsage::new(u.prompt_token_count, 0));
    let answer = EmbeddingResponse {
        object: "list".to_owned(),
        data: batch
            .embeddings
            .into_iter()
            .enumerate()
            .map(|(index, e)| Embedding {
                object: "embedding".to_owned(),
                index: index as u32,
                embedding: Value::from(e.values),
            })
            .collect(),
        model: model.to_owned(),
        usage: EmbeddingUsage {
            prompt_tokens: usage.map_or(0, |u| u.prompt_tokens()),
            total_tokens: usage.map_or(0, |u| u.total()),
        },
    };
    let body = serde_json::to_vec(&answer).map_err(|e| ProviderError::Protocol { detail: e.to_string() })?;
    Ok((Bytes::from(body), usage))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn texts_become_one_request_each_and_vectors_come_back_in_order() {
        let request: EmbeddingRequest =
            serde_json::from_value(json!({"model": "e", "input": ["a", "b"], "dimensions": 8})).unwrap();
        let body: Value = serde_json::from_slice(&translate(&request, "models/gemini-embedding-001").unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 8},
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8}
            ]})
        );
        let (answer, usage) = response(
            br#"{"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 2.0]}]}"#,
            "gemini-embedding-001",
        )
        .unwrap();
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["object"], "list");
        assert_eq!(answer["data"][1]["index"], 1);
        assert_eq!(answer["data"][1]["embedding"], json!([0.25, 2.0]));
        assert_eq!(usage, None);
    }

    #[test]
    fn token_ids_and_base64_are_refused_naming_the_field() {
        let tokens: EmbeddingRequest = serde_json::from_value(json!({"model": "e", "input": [1, 2]})).unwrap();
        match translate(&tokens, "models/x") {
            Err(ProviderError::Rejected { error, .. }) => assert_eq!(error.error.param.as_deref(), Some("input")),
            other => panic!("{other:?}"),
        }
        let base64: EmbeddingRequest =
            serde_json::from_value(json!({"model": "e", "input": "a", "encoding_format": "base64"})).unwrap();
        assert!(matches!(
            translate(&base64, "models/x"),
            Err(ProviderError::Rejected { .. })
        ));
    }
}
