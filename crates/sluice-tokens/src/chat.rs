//! Chat prompts, counted as OpenAI bills them.
//!
//! The rules are those of OpenAI's cookbook notebook "How to count tokens with tiktoken", whose examples
//! the tests reproduce with the `prompt_tokens` the API reported:
//!
//! - each message costs 3 tokens, plus the tokens of its role, its content and its name, plus 1 when it has
//!   a name; the reply is primed with 3 more;
//! - tools (section 7 of the notebook): each function costs 7 (o200k) or 10 (cl100k), plus the tokens of
//!   `name:description` (one trailing period dropped); a function with properties adds 3, each property 3
//!   plus the tokens of `name:type:description`, and an `enum` adds 3 and the tokens of each value, less 3;
//!   the list of tools adds 12;
//! - images: see [`crate::image`].
//!
//! Where the notebook says nothing the count is an estimate ([`Exactness::Estimate`]): tool calls in
//! assistant messages (name, arguments and 3 tokens each), `tool` and `function` messages, properties that
//! are not a flat `type`/`description`/`enum` (their JSON text is counted), `strict` functions, a
//! `json_schema` response format (its JSON text), a `tool_choice` other than `auto` or `none`, and content
//! parts other than text and images (audio, files: not counted).

use std::fmt::Write as _;

use serde_json::Value;
use sluice_api::{ChatCompletionRequest, ChatMessage, MessageContent, Role, Tool, ToolChoice};

use crate::encoding::{Encoding, EncodingName, Exactness, TokenCount, Vocab, vocab};
use crate::image::image_tokens;

/// Tokens framing each message: `<|start|>`, the role's separator, `<|end|>`.
const TOKENS_PER_MESSAGE: u64 = 3;
/// Tokens added by a message's `name`.
const TOKENS_PER_NAME: u64 = 1;
/// `<|start|>assistant<|message|>`, which primes the reply.
const REPLY_PRIMING: u64 = 3;
/// Tokens of each property of a function's parameters.
const PROPERTY_TOKENS: u64 = 3;
/// Tokens opening a function's properties.
const PROPERTIES_TOKENS: u64 = 3;
/// Tokens of each value of an `enum`; the enum itself takes 3 back.
const ENUM_ITEM_TOKENS: u64 = 3;
const ENUM_TOKENS_BACK: u64 = 3;
/// Tokens closing the list of tools.
const TOOLS_END_TOKENS: u64 = 12;
/// Tokens framing each tool call of an assistant message (an estimate).
const TOOL_CALL_TOKENS: u64 = 3;

/// Tokens opening each function definition.
fn function_tokens(name: EncodingName) -> u64 {
    match name {
        EncodingName::O200kBase => 7,
        EncodingName::Cl100kBase => 10,
    }
}

/// The prompt tokens of `request`: messages, tools and images, as OpenAI counts them.
pub fn count_chat(request: &ChatCompletionRequest, encoding: impl Into<Encoding>) -> TokenCount {
    let encoding = encoding.into();
    let vocab = vocab(encoding.name);
    let mut walk = Walk::new(encoding, u64::MAX, |text: &str, _left: u64| Some(vocab.count(text)));
    // No limit (the total saturates) and a measure that always answers: the walk cannot stop early.
    let _complete = walk.request(request);
    walk.count()
}

/// Like [`count_chat`], but stops as soon as the count exceeds `limit` and then answers `None`.
pub fn count_chat_with_limit(
    request: &ChatCompletionRequest,
    encoding: impl Into<Encoding>,
    limit: u64,
) -> Option<TokenCount> {
    let encoding = encoding.into();
    let vocab: &Vocab = vocab(encoding.name);
    let mut walk = Walk::new(encoding, limit, |text: &str, left: u64| vocab.count_till(text, left));
    walk.request(request)?;
    Some(walk.count())
}

/// Whether the prompt of `request` has at most `limit` tokens. Answers from [`upper_bound`] without
/// tokenizing when that already fits, else counts and stops once past `limit`.
pub fn fits(request: &ChatCompletionRequest, encoding: impl Into<Encoding>, limit: u64) -> bool {
    let encoding = encoding.into();
    upper_bound(request, encoding) <= limit || count_chat_with_limit(request, encoding, limit).is_some()
}

/// A bound the prompt tokens of `request` never exceed, computed without tokenizing: [`count_chat`] with
/// every text counted as its length in bytes.
///
/// It holds because every token of a byte-level BPE (`o200k_base`, `cl100k_base`) stands for at least one
/// byte, so a text never has more tokens than bytes; everything else in the count (per-message overhead,
/// tools' fixed costs, images) is the same. It costs one pass over the request's fields, not over its text.
pub fn upper_bound(request: &ChatCompletionRequest, encoding: impl Into<Encoding>) -> u64 {
    let mut walk = Walk::new(encoding.into(), u64::MAX, |text: &str, _left: u64| {
        Some(text.len() as u64)
    });
    walk.request(request).map_or(u64::MAX, |()| walk.tokens)
}

/// One pass over a request, measuring each text with `measure(text, tokens left before the limit)`;
/// `None` once the total exceeds `limit`. Every step adds a non-negative amount, so the total only grows
/// and stopping early is sound.
struct Walk<M> {
    encoding: Encoding,
    limit: u64,
    measure: M,
    tokens: u64,
    exactness: Exactness,
    /// Reused for the lines the tool rules build.
    line: String,
}

impl<M: FnMut(&str, u64) -> Option<u64>> Walk<M> {
    fn new(encoding: Encoding, limit: u64, measure: M) -> Self {
        Walk {
            encoding,
            limit,
            measure,
            tokens: 0,
            exactness: encoding.exactness,
            line: String::new(),
        }
    }

    fn count(&self) -> TokenCount {
        TokenCount {
            tokens: self.tokens,
            exactness: self.exactness,
        }
    }

    fn add(&mut self, tokens: u64) -> Option<()> {
        self.tokens = self.tokens.saturating_add(tokens);
        (self.tokens <= self.limit).then_some(())
    }

    fn text(&mut self, text: &str) -> Option<()> {
        let tokens = (self.measure)(text, self.limit - self.tokens)?;
        self.add(tokens)
    }

    /// Measures `self.line`, which the caller has just written.
    fn line(&mut self) -> Option<()> {
        let line = std::mem::take(&mut self.line);
        let result = self.text(&line);
        self.line = line;
        result
    }

    fn estimate(&mut self) {
        self.exactness = Exactness::Estimate;
    }

    fn request(&mut self, request: &ChatCompletionRequest) -> Option<()> {
        for message in &request.messages {
            self.message(message)?;
        }
        if let Some(tools) = request.tools.as_deref().filter(|tools| !tools.is_empty()) {
            for tool in tools {
                self.tool(tool)?;
            }
            self.add(TOOLS_END_TOKENS)?;
        }
        match &request.tool_choice {
            None => {}
            Some(ToolChoice::Mode(mode)) if mode == "auto" || mode == "none" => {}
            Some(_) => self.estimate(),
        }
        if let Some(format) = &request.response_format
            && format.get("type").and_then(Value::as_str) == Some("json_schema")
        {
            self.estimate();
            self.json(format.get("json_schema").unwrap_or(&Value::Null))?;
        }
        self.add(REPLY_PRIMING)
    }

    fn message(&mut self, message: &ChatMessage) -> Option<()> {
        self.add(TOKENS_PER_MESSAGE)?;
        self.text(role_name(message.role))?;
        match &message.content {
            None => {}
            Some(MessageContent::Text(text)) => self.text(text)?,
            Some(MessageContent::Parts(parts)) => {
                for part in parts {
                    match (part.kind.as_str(), &part.text, &part.image_url) {
                        ("text", Some(text), _) => self.text(text)?,
                        ("image_url", _, Some(image)) => {
                            let (tokens, exactness) = image_tokens(image);
                            self.exactness = self.exactness.and(exactness);
                            self.add(tokens)?;
                        }
                        _ => self.estimate(),
                    }
                }
            }
        }
        if let Some(name) = &message.name {
            self.text(name)?;
            self.add(TOKENS_PER_NAME)?;
        }
        if matches!(message.role, Role::Tool | Role::Function) {
            self.estimate();
        }
        for call in message.tool_calls.iter().flatten() {
            self.estimate();
            self.add(TOOL_CALL_TOKENS)?;
            self.text(&call.function.name)?;
            self.text(&call.function.arguments)?;
        }
        Some(())
    }

    fn tool(&mut self, tool: &Tool) -> Option<()> {
        let function = &tool.function;
        if function.strict == Some(true) {
            self.estimate();
        }
        self.add(function_tokens(self.encoding.name))?;
        self.line.clear();
        self.line.push_str(&function.name);
        self.line.push(':');
        self.line
            .push_str(without_period(function.description.as_deref().unwrap_or("")));
        self.line()?;
        let properties = function
            .parameters
            .as_ref()
            .and_then(|parameters| parameters.get("properties"))
            .and_then(Value::as_object);
        let Some(properties) = properties.filter(|properties| !properties.is_empty()) else {
            return Some(());
        };
        self.add(PROPERTIES_TOKENS)?;
        for (name, property) in properties {
            self.property(name, property)?;
        }
        Some(())
    }

    fn property(&mut self, name: &str, property: &Value) -> Option<()> {
        let enumeration = property.get("enum").and_then(Value::as_array);
        // The enum's 3 tokens back are taken with the property's 3, so that no step subtracts.
        self.add(if enumeration.is_some() {
            PROPERTY_TOKENS - ENUM_TOKENS_BACK
        } else {
            PROPERTY_TOKENS
        })?;
        for item in enumeration.into_iter().flatten() {
            self.add(ENUM_ITEM_TOKENS)?;
            match item {
                Value::String(item) => self.text(item)?,
                other => {
                    self.estimate();
                    self.json(other)?;
                }
            }
        }
        let kind = property.get("type");
        let description = property.get("description").and_then(Value::as_str).unwrap_or("");
        self.line.clear();
        self.line.push_str(name);
        self.line.push(':');
        match kind {
            Some(Value::String(kind)) => self.line.push_str(kind),
            Some(other) => {
                // A list of types, or a schema: the notebook does not say; its JSON text.
                let _ = write!(self.line, "{other}");
            }
            None => {}
        }
        self.line.push(':');
        self.line.push_str(without_period(description));
        self.line()?;
        let flat = matches!(kind, Some(Value::String(_)))
            && property.as_object().is_some_and(|fields| {
                fields
                    .keys()
                    .all(|key| matches!(key.as_str(), "type" | "description" | "enum"))
            });
        if !flat {
            // Nested objects, arrays of objects, `anyOf`...: the notebook's rule ignores them, which would
            // undercount; count the property's JSON text instead, as an estimate.
            self.estimate();
            self.json(property)?;
        }
        Some(())
    }

    fn json(&mut self, value: &Value) -> Option<()> {
        self.line.clear();
        let _ = write!(self.line, "{value}");
        self.line()
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::Developer => "developer",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
        Role::Function => "function",
    }
}

fn without_period(text: &str) -> &str {
    text.strip_suffix('.').unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::for_model;
    use serde_json::json;

    fn request(body: Value) -> ChatCompletionRequest {
        serde_json::from_value(body).unwrap()
    }

    /// Section 6 of the notebook: the messages and the `prompt_tokens` the API reported for each model.
    fn cookbook_messages() -> Value {
        json!([
            {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
            {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
            {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
            {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
            {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
            {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."}
        ])
    }

    #[test]
    fn cookbook_messages_count_what_the_api_reported() {
        let reported = [
            ("gpt-3.5-turbo", 129),
            ("gpt-4-0613", 129),
            ("gpt-4", 129),
            ("gpt-4o", 124),
            ("gpt-4o-mini", 124),
        ];
        for (model, prompt_tokens) in reported {
            let request = request(json!({"model": model, "messages": cookbook_messages()}));
            let count = count_chat(&request, for_model(model, EncodingName::O200kBase));
            assert_eq!(
                count,
                TokenCount {
                    tokens: prompt_tokens,
                    exactness: Exactness::Exact
                },
                "{model}"
            );
        }
    }

    #[test]
    fn cookbook_tools_count_what_the_api_reported() {
        let body = |model: &str| {
            json!({
                "model": model,
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
                    {"role": "user", "content": "What's the weather like in San Francisco?"}
                ],
                "tools": [{
                    "type": "function",
                    "function": {
                        "name": "get_current_weather",
                        "description": "Get the current weather in a given location",
                        "parameters": {
                            "type": "object",
                            "properties": {
                                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                                "unit": {"type": "string", "description": "The unit of temperature to return", "enum": ["celsius", "fahrenheit"]}
                            },
                            "required": ["location"]
                        }
                    }
                }]
            })
        };
        let reported = [
            ("gpt-3.5-turbo", 105),
            ("gpt-4", 105),
            ("gpt-4o", 101),
            ("gpt-4o-mini", 101),
        ];
        for (model, prompt_tokens) in reported {
            let count = count_chat(&request(body(model)), for_model(model, EncodingName::O200kBase));
            assert_eq!(
                count,
                TokenCount {
                    tokens: prompt_tokens,
                    exactness: Exactness::Exact
                },
                "{model}"
            );
        }
    }

    #[test]
    fn other_vendors_are_estimates() {
        let request = request(json!({"model": "claude", "messages": cookbook_messages()}));
        let count = count_chat(&request, for_model("claude-sonnet-4-5", EncodingName::O200kBase));
        assert_eq!(
            count,
            TokenCount {
                tokens: 124,
                exactness: Exactness::Estimate
            }
        );
    }

    #[test]
    fn images_count_by_detail_and_size() {
        let body = |detail: Option<&str>, url: &str| {
            let mut image = json!({"url": url});
            if let Some(detail) = detail {
                image["detail"] = json!(detail);
            }
            request(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": image}
            ]}]}))
        };
        let text_only = count_chat(
            &request(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "What is in this image?"}]})),
            EncodingName::O200kBase,
        );
        // A 2 x 1 PNG header: high detail is one tile.
        let png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAIAAAABCAYAAAD0In+KAAAAC0lEQVR42mNgAAIAAAUAAen63NgAAAAASUVORK5CYII=";
        let cases = [
            (Some("low"), "https://example.com/a.png", 85, Exactness::Exact),
            (Some("high"), png, 255, Exactness::Exact),
            (None, png, 255, Exactness::Exact),
            (Some("auto"), "https://example.com/a.png", 765, Exactness::Estimate),
        ];
        for (detail, url, tokens, exactness) in cases {
            let count = count_chat(&body(detail, url), EncodingName::O200kBase);
            assert_eq!(count.tokens, text_only.tokens + tokens, "{detail:?} {url}");
            assert_eq!(count.exactness, exactness, "{detail:?} {url}");
        }
    }

    #[test]
    fn uncovered_shapes_are_estimates_and_still_counted() {
        let base = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
        let base_tokens = count_chat(&request(base.clone()), EncodingName::O200kBase).tokens;
        let with = |patch: Value| {
            let mut body = base.clone();
            for (key, value) in patch.as_object().unwrap() {
                body[key] = value.clone();
            }
            count_chat(&request(body), EncodingName::O200kBase)
        };
        let nested = with(
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
                "type": "object",
                "properties": {"filter": {"type": "object", "properties": {"field": {"type": "string"}}}}
            }}}]}),
        );
        assert!(nested.is_estimate());
        assert!(nested.tokens > base_tokens + 7 + 12 + 3 + 3, "{nested:?}");

        let schema = with(json!({"response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": {"type": "object", "properties": {"answer": {"type": "string"}}}
        }}}));
        assert!(schema.is_estimate());
        assert!(schema.tokens > base_tokens + 10, "{schema:?}");

        let calls = request(json!({"model": "gpt-4o", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
        ]}));
        let count = count_chat(&calls, EncodingName::O200kBase);
        assert!(count.is_estimate());
        assert!(count.tokens > 3 * 3 + 3 + 10, "{count:?}");

        let audio = with(json!({"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
        ]}]}));
        assert!(audio.is_estimate());
        assert_eq!(with(json!({"tool_choice": "auto"})).exactness, Exactness::Exact);
        assert!(with(json!({"tool_choice": "required"})).is_estimate());
    }

    /// Requests with hostile and ordinary text, tools and images, for the bound and limit checks.
    fn sample_requests() -> Vec<ChatCompletionRequest> {
        let mut requests = vec![
            request(json!({"model": "m", "messages": cookbook_messages()})),
            request(json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(5000)}]})),
            request(json!({"model": "m", "messages": [{"role": "user", "content": " ".repeat(3000)}]})),
            request(
                json!({"model": "m", "messages": [{"role": "user", "content": "日本語のテキスト 😀".repeat(200)}]}),
            ),
            request(json!({"model": "m", "messages": [{"role": "user", "content": ""}]})),
            request(json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
            ]}]})),
        ];
        let mut tools = request(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        tools.tools = Some(vec![
            serde_json::from_value(json!({"type": "function", "function": {
                "name": "lookup", "description": "Look it up.",
                "parameters": {"type": "object", "properties": {
                    "kind": {"type": "string", "description": "What.", "enum": ["a", "b", "c"]},
                    "deep": {"type": "object", "properties": {"x": {"type": ["string", "null"]}}}
                }}
            }}))
            .unwrap(),
        ]);
        requests.push(tools);
        requests
    }

    #[test]
    fn the_byte_bound_is_never_below_the_count() {
        for request in sample_requests() {
            for name in EncodingName::ALL {
                let count = count_chat(&request, name).tokens;
                let bound = upper_bound(&request, name);
                assert!(count <= bound, "{count} > {bound}");
            }
        }
    }

    #[test]
    fn limits_agree_with_the_full_count() {
        for request in sample_requests() {
            for name in EncodingName::ALL {
                let count = count_chat(&request, name);
                assert_eq!(count_chat_with_limit(&request, name, count.tokens), Some(count));
                assert_eq!(count_chat_with_limit(&request, name, count.tokens - 1), None);
                assert!(fits(&request, name, count.tokens));
                assert!(!fits(&request, name, count.tokens - 1));
                assert!(fits(&request, name, upper_bound(&request, name)));
            }
        }
    }
}
