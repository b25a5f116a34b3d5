//! Message content -> Anthropic content blocks: text, images (base64 data URLs and http(s) URLs) and PDF
//! documents, and the block types the request translation builds around them.
//!
//! Shapes from Anthropic's API reference and vision guide: an image block is
//! `{"type": "image", "source": {"type": "base64", "media_type", "data"}}` or
//! `{"type": "image", "source": {"type": "url", "url"}}`; a PDF is a `document` block with the same base64
//! source. `cache_control` on a part is kept; OpenAI's image `detail` has no equivalent and is dropped.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;
use sluice_api::{ContentPart, MessageContent};

use super::request::invalid;
use crate::ProviderError;

/// One Anthropic content block.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Block<'a> {
    Text {
        text: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    Image {
        source: Source<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    Document {
        source: Source<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: Cow<'a, str>,
    },
}

/// Where an image or document comes from.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Source<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

/// The blocks of a message's content. Empty text is left out: Anthropic refuses empty text blocks.
pub(super) fn content_blocks(
    content: Option<&MessageContent>,
    message: usize,
) -> Result<Vec<Block<'_>>, ProviderError> {
    match content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(text)) if text.is_empty() => Ok(Vec::new()),
        Some(MessageContent::Text(text)) => Ok(vec![Block::Text {
            text: Cow::Borrowed(text),
            cache_control: None,
        }]),
        Some(MessageContent::Parts(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                if let Some(block) = part_block(part, message, j)? {
                    blocks.push(block);
                }
            }
            Ok(blocks)
        }
    }
}

fn part_block(part: &ContentPart, message: usize, index: usize) -> Result<Option<Block<'_>>, ProviderError> {
    let param = || format!("messages[{message}].content[{index}]");
    let cache_control = part.extra.get("cache_control").filter(|v| !v.is_null());
    match part.kind.as_str() {
        "text" => Ok(part.text.as_deref().filter(|t| !t.is_empty()).map(|text| Block::Text {
            text: Cow::Borrowed(text),
            cache_control,
        })),
        // An assistant's earlier refusal, replayed as the text it was.
        "refusal" => Ok(part
            .extra
            .get("refusal")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(|text| Block::Text {
                text: Cow::Borrowed(text),
                cache_control,
            })),
        "image_url" => {
            let url = part
                .image_url
                .as_ref()
                .map(|i| i.url.as_str())
                .ok_or_else(|| invalid(format!("{}.image_url", param()), "an image_url part needs a url"))?;
            let source = image_source(url).ok_or_else(|| {
                invalid(
                    format!("{}.image_url.url", param()),
                    "images must be http(s) URLs or base64 data URLs",
                )
            })?;
            Ok(Some(Block::Image { source, cache_control }))
        }
        "file" => {
            let data_url = part
                .extra
                .get("file")
                .and_then(|f| f.get("file_data"))
                .and_then(Value::as_str);
            match data_url.and_then(parse_data_url) {
                Some(Source::Base64 { media_type, data }) if media_type == "application/pdf" => {
                    Ok(Some(Block::Document {
                        source: Source::Base64 { media_type, data },
                        cache_control,
                    }))
                }
                _ => Err(invalid(
                    format!("{}.file", param()),
                    "Anthropic accepts files only as PDF data in file_data (data:application/pdf;base64,...)",
                )),
            }
        }
        other => Err(invalid(
            format!("{}.type", param()),
            format!("content parts of type '{other}' are not supported by the Anthropic Messages API"),
        )),
    }
}

/// An image URL as an Anthropic source: `data:` URLs as base64, http(s) URLs by reference.
fn image_source(url: &str) -> Option<Source<'_>> {
    if url.starts_with("data:") {
        return parse_data_url(url);
    }
    let lower = url.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    (lower.starts_with("http://") || lower.starts_with("https://")).then_some(Source::Url { url })
}

/// `data:<media type>[;params];base64,<data>`; data URLs that are not base64 are refused.
fn parse_data_url(url: &str) -> Option<Source<'_>> {
    let (header, data) = url.strip_prefix("data:")?.split_once(',')?;
    let media = header.strip_suffix(";base64")?;
    let media_type = media.split(';').next().unwrap_or(media).trim();
    (!media_type.is_empty() && !data.is_empty()).then_some(Source::Base64 { media_type, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn blocks(content: Value) -> Result<Value, ProviderError> {
        let content: MessageContent = serde_json::from_value(content).unwrap();
        content_blocks(Some(&content), 0).map(|b| serde_json::to_value(b).unwrap())
    }

    fn rejected(content: Value) -> String {
        match blocks(content) {
            Err(ProviderError::Rejected { status: 400, error }) => error.error.param.unwrap_or_default(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn images_from_data_and_http_urls() {
        let out = blocks(json!([
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/ant.jpg"}, "cache_control": {"type": "ephemeral"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}}
        ]))
        .unwrap();
        assert_eq!(
            out,
            json!([
                {"type": "text", "text": "What is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/ant.jpg"}, "cache_control": {"type": "ephemeral"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}
            ])
        );
        let image = |url: &str| json!([{"type": "image_url", "image_url": {"url": url}}]);
        assert_eq!(
            rejected(image("data:image/png,rawbytes")),
            "messages[0].content[0].image_url.url"
        );
        assert_eq!(
            rejected(image("ftp://host/a.png")),
            "messages[0].content[0].image_url.url"
        );
        assert_eq!(
            rejected(json!([{"type": "image_url"}])),
            "messages[0].content[0].image_url"
        );
    }

    #[test]
    fn other_parts_and_empty_text() {
        assert_eq!(blocks(json!("")).unwrap(), json!([]));
        assert_eq!(blocks(json!("hi")).unwrap(), json!([{"type": "text", "text": "hi"}]));
        assert_eq!(
            blocks(json!([{"type": "text", "text": ""}, {"type": "refusal", "refusal": "I can't help with that."}]))
                .unwrap(),
            json!([{"type": "text", "text": "I can't help with that."}])
        );
        assert_eq!(
            rejected(json!([{"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}])),
            "messages[0].content[0].type"
        );
        assert_eq!(
            rejected(json!([{"type": "file", "file": {"file_id": "file-abc"}}])),
            "messages[0].content[0].file"
        );
        assert_eq!(
            rejected(json!([{"type": "file", "file": {"file_data": "data:text/plain;base64,aGk="}}])),
            "messages[0].content[0].file"
        );
    }

    #[test]
    fn data_urls_parse() {
        fn media(url: &str) -> Option<(&str, &str)> {
            match parse_data_url(url) {
                Some(Source::Base64 { media_type, data }) => Some((media_type, data)),
                _ => None,
            }
        }
        assert_eq!(
            media("data:image/jpeg;base64,/9j/4AAQ"),
            Some(("image/jpeg", "/9j/4AAQ"))
        );
        assert_eq!(
            media("data:image/webp;name=a.webp;base64,UklGR"),
            Some(("image/webp", "UklGR"))
        );
        assert_eq!(media("data:image/png;base64,"), None);
        assert_eq!(media("data:;base64,AAAA"), None);
        assert!(matches!(
            image_source("HTTPS://Example.com/a.gif"),
            Some(Source::Url { .. })
        ));
        assert!(image_source("file:///etc/passwd").is_none());
    }
}
