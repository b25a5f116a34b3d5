//! Message content as Gemini `parts`.
//!
//! - `text` (and an assistant's `refusal`) as `text`;
//! - `image_url` as `inlineData` from a `data:` URL, or as `fileData` from an http(s) URL, which Gemini fetches
//!   itself ("External URLs" in its file input guide; the MIME type comes from the extension when it tells);
//! - `input_audio` (wav, mp3) and `file` with `file_data` as `inlineData`.
//!
//! Base64 data is borrowed from the request, never copied. Anything else is refused with a 400 naming the
//! part, such as `messages[2].content[1].image_url`.

use std::borrow::Cow;

use serde_json::Value;
use sluice_api::{ChatMessage, ContentPart, MessageContent};

use super::request::{Blob, FileData, Part, invalid};
use crate::ProviderError;

/// A text part borrowing its text.
pub(super) fn text_part(text: &str) -> Part<'_> {
    Part {
        text: Some(Cow::Borrowed(text)),
        ..Part::default()
    }
}

/// The parts of a system or developer message: text only.
pub(super) fn system_parts(message: &ChatMessage, i: usize) -> Result<Vec<Part<'_>>, ProviderError> {
    match &message.content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(text)) if text.is_empty() => Ok(Vec::new()),
        Some(MessageContent::Text(text)) => Ok(vec![text_part(text)]),
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.text.as_deref().is_none_or(|t| !t.is_empty()))
            .map(|(j, part)| match (part.kind.as_str(), &part.text) {
                ("text", Some(text)) => Ok(text_part(text)),
                _ => Err(invalid(
                    format!("messages[{i}].content[{j}].type"),
                    "Gemini takes only text in system instructions",
                )),
            })
            .collect(),
    }
}

/// The parts of a user or assistant message's content; `i` is the message's index, for errors.
pub(super) fn content_parts(content: Option<&MessageContent>, i: usize) -> Result<Vec<Part<'_>>, ProviderError> {
    match content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(text)) if text.is_empty() => Ok(Vec::new()),
        Some(MessageContent::Text(text)) => Ok(vec![text_part(text)]),
        Some(MessageContent::Parts(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                if let Some(part) = content_part(part, i, j)? {
                    out.push(part);
                }
            }
            Ok(out)
        }
    }
}

fn content_part(part: &ContentPart, i: usize, j: usize) -> Result<Option<Part<'_>>, ProviderError> {
    let field = |name: &str| format!("messages[{i}].content[{j}].{name}");
    match part.kind.as_str() {
        // An assistant's refusal part is text it said.
        "text" | "refusal" => {
            let text = part
                .text
                .as_deref()
                .or_else(|| part.extra.get("refusal").and_then(Value::as_str))
                .unwrap_or_default();
            Ok((!text.is_empty()).then(|| text_part(text)))
        }
        "image_url" => {
            let Some(image) = &part.image_url else {
                return Err(invalid(field("image_url"), "an image_url part needs an image_url"));
            };
            let url = image.url.as_str();
            if url.starts_with("data:") {
                let (mime_type, data) = parse_data_url(url).ok_or_else(|| {
                    invalid(
                        field("image_url"),
                        "the image data URL must look like data:<mime type>;base64,<data>",
                    )
                })?;
                return Ok(Some(Part {
                    inline_data: Some(Blob { mime_type, data }),
                    ..Part::default()
                }));
            }
            if url.starts_with("https://") || url.starts_with("http://") {
                // Gemini fetches public and signed URLs itself ("External URLs" in its file input guide).
                return Ok(Some(Part {
                    file_data: Some(FileData {
                        mime_type: image_mime_type(url),
                        file_uri: url,
                    }),
                    ..Part::default()
                }));
            }
            Err(invalid(
                field("image_url"),
                "Gemini takes images as data: URLs or http(s) URLs",
            ))
        }
        "input_audio" => {
            let audio = part.extra.get("input_audio");
            let data = audio.and_then(|a| a.get("data")).and_then(Value::as_str);
            let mime_type = match audio.and_then(|a| a.get("format")).and_then(Value::as_str) {
                Some("wav") => Some("audio/wav"),
                Some("mp3") => Some("audio/mp3"),
                _ => None,
            };
            match (data, mime_type) {
                (Some(data), Some(mime_type)) => Ok(Some(Part {
                    inline_data: Some(Blob { mime_type, data }),
                    ..Part::default()
                })),
                _ => Err(invalid(
                    field("input_audio"),
                    "input_audio needs base64 data and a format of wav or mp3",
                )),
            }
        }
        "file" => {
            let file_data = part
                .extra
                .get("file")
                .and_then(|f| f.get("file_data"))
                .and_then(Value::as_str);
            let Some((mime_type, data)) = file_data.and_then(parse_data_url) else {
                return Err(invalid(
                    field("file"),
                    "Gemini takes files as file_data data: URLs; OpenAI file ids are not available to it",
                ));
            };
            Ok(Some(Part {
                inline_data: Some(Blob { mime_type, data }),
                ..Part::default()
            }))
        }
        other => Err(invalid(
            field("type"),
            format!("content parts of type `{other}` cannot be sent to Gemini"),
        )),
    }
}

/// `data:<mime>[;params];base64,<data>` into its MIME type and base64 data, borrowed from the URL.
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let (header, data) = url.strip_prefix("data:")?.split_once(',')?;
    let header = header.strip_suffix(";base64")?;
    let mime_type = header.split(';').next().unwrap_or_default().trim();
    (!mime_type.is_empty() && !data.is_empty()).then_some((mime_type, data))
}

/// The MIME type of an image URL by its extension; none when the URL does not tell.
fn image_mime_type(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let extension = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use sluice_api::ChatCompletionRequest;

    use crate::ProviderError;
    use crate::gemini::request::translate;

    fn gemini(body: Value) -> Value {
        let request: ChatCompletionRequest = serde_json::from_value(body).unwrap();
        serde_json::to_value(translate(&request, None).unwrap()).unwrap()
    }

    fn rejected_param(body: Value) -> String {
        let request: ChatCompletionRequest = serde_json::from_value(body).unwrap();
        match translate(&request, None) {
            Err(ProviderError::Rejected { status: 400, error }) => error.error.param.unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn images_audio_and_files() {
        let body = gemini(json!({
            "model": "m",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.JPG?size=large"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/render"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}
            ]}]
        }));
        assert_eq!(
            body["contents"][0]["parts"],
            json!([
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.JPG?size=large"}},
                {"fileData": {"fileUri": "https://example.com/render"}},
                {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}
            ])
        );
    }

    #[test]
    fn unsupported_content_is_refused_by_field() {
        let with_part = |part: Value| {
            json!({"model": "m", "messages": [{"role": "system", "content": "s"},
                {"role": "user", "content": [{"type": "text", "text": "look"}, part]}]})
        };
        let refused = [
            (
                json!({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}),
                "image_url",
            ),
            (
                json!({"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}),
                "image_url",
            ),
            (json!({"type": "file", "file": {"file_id": "file-abc"}}), "file"),
            (
                json!({"type": "input_audio", "input_audio": {"data": "AAA", "format": "flac"}}),
                "input_audio",
            ),
            (json!({"type": "video_url", "video_url": {"url": "https://x"}}), "type"),
        ];
        for (part, field) in refused {
            assert_eq!(
                rejected_param(with_part(part)),
                format!("messages[1].content[1].{field}")
            );
        }
        assert_eq!(
            rejected_param(json!({"model": "m", "messages": [{"role": "system", "content": "only"}]})),
            "messages"
        );
        assert_eq!(
            rejected_param(json!({"model": "m", "messages": [{"role": "system", "content": [
                {"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}, {"role": "user", "content": "x"}]})),
            "messages[0].content[0].type"
        );
        assert_eq!(
            rejected_param(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "xml"}})),
            "response_format.type"
        );
    }
}
