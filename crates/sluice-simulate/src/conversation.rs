//! A vendor-neutral description of a request: what the simulated vendor's answer depends on.
//!
//! Each HTTP face of the simulator (OpenAI, Anthropic, Gemini) reads its own wire format into a
//! [`SimRequest`], so the three answer the same conversation the same way: the same text, the same tool
//! call, the same reading of a tool result or an image. [`SimRequest::from_openai`] is the OpenAI reading,
//! used by the OpenAI face and by the in-process [`crate::SimulatedAdapter`].

use serde_json::Value;
use sluice_api::{ChatCompletionRequest, MessageContent, Role, ToolChoice};

/// Who speaks in a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimRole {
    /// Instructions (OpenAI `system`/`developer`, Anthropic's top-level `system`, Gemini's
    /// `systemInstruction`).
    System,
    /// The end user.
    #[default]
    User,
    /// The model.
    Assistant,
    /// A tool's result in a turn of its own (OpenAI `tool` messages).
    Tool,
}

/// A tool call the model made in an earlier turn.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SimCallMade {
    /// The function's name.
    pub name: String,
    /// Its arguments as JSON text.
    pub arguments: String,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SimTurn {
    /// Who speaks.
    pub role: SimRole,
    /// The turn's text, its text parts joined.
    pub text: String,
    /// How many images the turn carries.
    pub images: usize,
    /// Tool calls an assistant turn made.
    pub tool_calls: Vec<SimCallMade>,
    /// The text of each tool result the turn carries (a `tool` message, Anthropic `tool_result` blocks,
    /// Gemini `functionResponse` parts).
    pub tool_results: Vec<String>,
}

impl SimTurn {
    /// A turn of `role` saying `text`.
    pub fn text(role: SimRole, text: impl Into<String>) -> Self {
        Self {
            role,
            text: text.into(),
            ..Self::default()
        }
    }

    /// The characters the turn's size is counted from.
    fn chars(&self) -> usize {
        self.text.chars().count()
            + self.tool_results.iter().map(|r| r.chars().count()).sum::<usize>()
            + self
                .tool_calls
                .iter()
                .map(|c| c.name.chars().count() + c.arguments.chars().count())
                .sum::<usize>()
    }

    /// Whether the turn only hands back tool results: the user said nothing of their own.
    pub fn is_tool_result(&self) -> bool {
        !self.tool_results.is_empty() && self.text.is_empty() && self.images == 0
    }
}

/// A tool the request declares.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SimTool {
    /// The function's name.
    pub name: String,
    /// Its parameters' JSON schema, if it has one.
    pub parameters: Option<Value>,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SimToolChoice {
    /// The model decides (the simulator calls the first tool when the user spoke last).
    #[default]
    Auto,
    /// The model must not call tools.
    None,
    /// The model must call some tool.
    Required,
    /// The model must call this tool.
    Named(String),
}

/// How long a prompt cache entry lives: what Anthropic prices a cache write by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimCacheTtl {
    /// Five minutes, the default (billed at 1.25 times the input price).
    #[default]
    FiveMinutes,
    /// One hour (billed at twice the input price).
    OneHour,
}

/// A cache breakpoint (Anthropic's `cache_control`): the prompt up to the end of turn `turns - 1` is
/// cached with lifetime `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimBreakpoint {
    /// How many leading turns the cached prefix holds.
    pub turns: usize,
    /// The lifetime of the cache entry it writes.
    pub ttl: SimCacheTtl,
}

/// How the vendor caches prompts (the rules: [`crate::bill`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SimCaching {
    /// No prompt caching.
    #[default]
    Off,
    /// Automatic prefix caching, as OpenAI does and Gemini does implicitly.
    Automatic,
    /// Explicit breakpoints, as Anthropic's `cache_control` marks them (none: nothing is cached).
    Breakpoints(Vec<SimBreakpoint>),
}

/// A request, whatever the vendor format it came in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SimRequest {
    /// The model id the request names.
    pub model: String,
    /// The conversation, system instructions first.
    pub turns: Vec<SimTurn>,
    /// The tools the model may call.
    pub tools: Vec<SimTool>,
    /// Whether and which tool the model must call.
    pub tool_choice: SimToolChoice,
    /// The completion cap the client set.
    pub max_tokens: Option<u32>,
    /// Whether the answer is streamed: its output is billed as it is sent.
    pub stream: bool,
    /// How the vendor caches the prompt.
    pub caching: SimCaching,
    /// Whether the model reasons before it answers (billed as output, never shown).
    pub reasoning: bool,
    /// JSON output asked for (a JSON schema, or `{"type": "object"}` for any JSON object): the answer is
    /// JSON following it.
    pub schema: Option<Value>,
}

/// The JSON output OpenAI's `response_format` asks for: `json_schema`'s schema, or any object for
/// `json_object`.
fn openai_schema(format: Option<&Value>) -> Option<Value> {
    let format = format?;
    match format.get("type").and_then(Value::as_str)? {
        "json_schema" => format.get("json_schema").and_then(|s| s.get("schema")).cloned(),
        "json_object" => Some(serde_json::json!({"type": "object"})),
        _ => None,
    }
}

/// Whether OpenAI's `model` is a reasoning (o-series) model: `o1`, `o3-mini`, `o4-mini`... A vendor prefix
/// (`openai/o3`) is ignored.
pub fn openai_reasons(model: &str) -> bool {
    let name = model.rsplit('/').next().unwrap_or(model).as_bytes();
    name.len() >= 2 && name[0] == b'o' && name[1].is_ascii_digit()
}

impl SimRequest {
    /// The OpenAI reading of a chat completion request.
    pub fn from_openai(request: &ChatCompletionRequest) -> Self {
        let turns = request
            .messages
            .iter()
            .map(|message| {
                let (images, text) = match &message.content {
                    None => (0, String::new()),
                    Some(content @ MessageContent::Text(_)) => (0, content.text().into_owned()),
                    Some(content @ MessageContent::Parts(parts)) => (
                        parts.iter().filter(|p| p.kind == "image_url").count(),
                        content.text().into_owned(),
                    ),
                };
                let tool_calls = message
                    .tool_calls
                    .iter()
                    .flatten()
                    .map(|call| SimCallMade {
                        name: call.function.name.clone(),
                        arguments: call.function.arguments.clone(),
                    })
                    .collect();
                match message.role {
                    Role::Tool | Role::Function => SimTurn {
                        role: SimRole::Tool,
                        tool_results: vec![text],
                        ..SimTurn::default()
                    },
                    role => SimTurn {
                        role: match role {
                            Role::System | Role::Developer => SimRole::System,
                            Role::Assistant => SimRole::Assistant,
                            _ => SimRole::User,
                        },
                        text,
                        images,
                        tool_calls,
                        tool_results: Vec::new(),
                    },
                }
            })
            .collect();
        let tools = request
            .tools
            .iter()
            .flatten()
            .filter(|t| t.kind == "function")
            .map(|t| SimTool {
                name: t.function.name.clone(),
                parameters: t.function.parameters.clone(),
            })
            .collect();
        let tool_choice = match &request.tool_choice {
            None => SimToolChoice::Auto,
            Some(ToolChoice::Mode(mode)) => match mode.as_str() {
                "none" => SimToolChoice::None,
                "required" => SimToolChoice::Required,
                _ => SimToolChoice::Auto,
            },
            Some(ToolChoice::Named(named)) => named
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .map_or(SimToolChoice::Required, |name| SimToolChoice::Named(name.to_owned())),
        };
        Self {
            model: request.model.clone(),
            turns,
            tools,
            tool_choice,
            max_tokens: request.completion_cap(),
            stream: request.is_stream(),
            caching: SimCaching::Automatic,
            reasoning: openai_reasons(&request.model),
            schema: openai_schema(request.response_format.as_ref()),
        }
    }

    /// A rough prompt size: about four characters a token plus a few per turn. The simulated vendor only
    /// needs to be consistent, not exact.
    pub fn prompt_tokens(&self) -> u64 {
        self.prefix_tokens(self.turns.len()) + 3
    }

    /// The size of the prompt's first `turns` turns, counted as [`SimRequest::prompt_tokens`] counts the
    /// whole (which adds 3 for the reply's priming).
    pub fn prefix_tokens(&self, turns: usize) -> u64 {
        let turns = &self.turns[..turns.min(self.turns.len())];
        let chars: usize = turns.iter().map(SimTurn::chars).sum();
        (chars as u64).div_ceil(4) + 4 * turns.len() as u64
    }

    /// A hash of the model and the first `turns` turns: what a prompt cache entry is looked up by.
    pub(crate) fn prefix_hash(&self, turns: usize) -> u64 {
        let mut text = String::with_capacity(256);
        text.push_str(&self.model);
        for turn in &self.turns[..turns.min(self.turns.len())] {
            text.push_str(match turn.role {
                SimRole::System => "\u{1}system",
                SimRole::User => "\u{1}user",
                SimRole::Assistant => "\u{1}assistant",
                SimRole::Tool => "\u{1}tool",
            });
            text.push_str(&turn.text);
            text.push_str(&format!("\u{2}{}", turn.images));
            for call in &turn.tool_calls {
                text.push('\u{3}');
                text.push_str(&call.name);
                text.push_str(&call.arguments);
            }
            for result in &turn.tool_results {
                text.push('\u{4}');
                text.push_str(result);
            }
        }
        crate::text::fnv1a(text.as_bytes())
    }

    /// The text the deterministic words are seeded by: the last turn's.
    pub(crate) fn seed_text(&self) -> &str {
        self.turns.last().map_or("", |t| t.text.as_str())
    }
}
