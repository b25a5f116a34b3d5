//! What the simulated vendor answers, decided from the vendor-neutral [`SimRequest`], in this order:
//!
//! 1. The last turn hands back tool results: text starting with `Tool said: ` and the results' words (at
//!    most [`TOOL_RESULT_WORDS`]), so a test sees the result made the round trip.
//! 2. The request declares tools (and does not forbid them) and the user spoke last: one call to the first
//!    declared tool (or the named one), with arguments built from its JSON schema.
//! 3. JSON output is asked for ([`SimRequest::schema`]): a value following the schema (required properties,
//!    words for strings), a few characters per token.
//! 4. The user's last turn carries an image: `I see an image.` and then the deterministic words.
//! 5. Otherwise the deterministic words, seeded by the last turn's text and the model.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

use crate::conversation::{SimRequest, SimRole, SimTool, SimToolChoice};
use crate::text;

/// How many words of a tool result the answer repeats.
pub const TOOL_RESULT_WORDS: usize = 20;

/// How an answer ended, in vendor-neutral terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimFinish {
    /// The answer is complete.
    Stop,
    /// The client's token cap cut it.
    Length,
    /// The model called a tool.
    ToolCalls,
}

impl SimFinish {
    /// OpenAI's `finish_reason`.
    pub fn openai(self) -> &'static str {
        match self {
            SimFinish::Stop => "stop",
            SimFinish::Length => "length",
            SimFinish::ToolCalls => "tool_calls",
        }
    }

    /// Anthropic's `stop_reason`.
    pub fn anthropic(self) -> &'static str {
        match self {
            SimFinish::Stop => "end_turn",
            SimFinish::Length => "max_tokens",
            SimFinish::ToolCalls => "tool_use",
        }
    }

    /// Gemini's `finishReason`: a function call ends with `STOP`, as Gemini reports it.
    pub fn gemini(self) -> &'static str {
        match self {
            SimFinish::Stop | SimFinish::ToolCalls => "STOP",
            SimFinish::Length => "MAX_TOKENS",
        }
    }
}

/// The one tool call of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SimToolCall {
    /// The function called.
    pub name: String,
    /// Its arguments, an object built from the tool's schema.
    pub arguments: Value,
    tokens: u64,
}

impl SimToolCall {
    /// The arguments as JSON text, as OpenAI carries them.
    pub fn arguments_json(&self) -> String {
        self.arguments.to_string()
    }

    /// The arguments' JSON text cut into the pieces a stream sends, at character boundaries.
    pub fn argument_pieces(&self) -> Vec<String> {
        const PIECE: usize = 16;
        let json = self.arguments_json();
        let mut pieces = Vec::with_capacity(json.len() / PIECE + 1);
        let mut piece = String::with_capacity(PIECE + 4);
        for c in json.chars() {
            piece.push(c);
            if piece.len() >= PIECE {
                pieces.push(std::mem::take(&mut piece));
            }
        }
        if !piece.is_empty() {
            pieces.push(piece);
        }
        pieces
    }

    /// The tokens the call counts as generated.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }
}

/// What the answer says.
#[derive(Debug, Clone, PartialEq)]
pub enum SimReply {
    /// Text, one piece per generated token (a word with its leading space).
    Text(Vec<Cow<'static, str>>),
    /// One tool call.
    ToolCall(SimToolCall),
}

impl SimReply {
    /// The tokens generated.
    pub fn completion_tokens(&self) -> u64 {
        match self {
            SimReply::Text(pieces) => pieces.len() as u64,
            SimReply::ToolCall(call) => call.tokens,
        }
    }
}

/// Decides the answer to `request`; `reply_tokens` is the configured length of a text answer.
/// Bytes of JSON per piece (one token each) of a JSON answer.
const JSON_PIECE_BYTES: usize = 4;

pub(crate) fn plan(request: &SimRequest, reply_tokens: u32) -> (SimReply, SimFinish) {
    let cap = request.max_tokens;
    let turns = &request.turns;

    // 1. A tool round trip comes back: echo the results.
    let trailing = turns.iter().rev().take_while(|t| t.is_tool_result()).count();
    if trailing > 0 {
        let results: Vec<&str> = turns[turns.len() - trailing..]
            .iter()
            .flat_map(|t| t.tool_results.iter().map(String::as_str))
            .collect();
        let mut pieces: Vec<Cow<'static, str>> = vec![Cow::Borrowed("Tool"), Cow::Borrowed(" said:")];
        let words = results
            .iter()
            .flat_map(|r| r.split_whitespace())
            .take(TOOL_RESULT_WORDS);
        pieces.extend(words.map(|w| Cow::Owned(format!(" {w}"))));
        let natural = pieces.len();
        return match cap {
            Some(cap) if (cap as usize) < natural => {
                pieces.truncate(cap as usize);
                (SimReply::Text(pieces), SimFinish::Length)
            }
            _ => (SimReply::Text(pieces), SimFinish::Stop),
        };
    }

    let last = turns.iter().rev().find(|t| t.role != SimRole::System);
    let user_last = last.filter(|t| t.role == SimRole::User);

    // 2. The user asked and tools are on offer: call one.
    if user_last.is_some() && request.tool_choice != SimToolChoice::None {
        let tool = match &request.tool_choice {
            SimToolChoice::Named(name) => request.tools.iter().find(|t| &t.name == name),
            _ => None,
        }
        .or_else(|| request.tools.first());
        if let Some(tool) = tool {
            return (
                SimReply::ToolCall(tool_call(tool, request.seed_text())),
                SimFinish::ToolCalls,
            );
        }
    }

    // 3. JSON output asked for: a value following the schema, in pieces of a few characters.
    if let Some(schema) = &request.schema {
        let seed = text::fnv1a(request.seed_text().as_bytes());
        let json = value_for(schema, "", seed, 0).to_string();
        let mut pieces: Vec<Cow<'static, str>> = Vec::new();
        let mut rest = json.as_str();
        while !rest.is_empty() {
            let mut end = rest.len().min(JSON_PIECE_BYTES);
            while !rest.is_char_boundary(end) {
                end += 1;
            }
            pieces.push(Cow::Owned(rest[..end].to_owned()));
            rest = &rest[end..];
        }
        return match cap {
            Some(cap) if (cap as usize) < pieces.len() => {
                pieces.truncate(cap as usize);
                (SimReply::Text(pieces), SimFinish::Length)
            }
            _ => (SimReply::Text(pieces), SimFinish::Stop),
        };
    }

    // 4 and 5. Text: the configured length unless the client caps it lower.
    let count = cap.map_or(reply_tokens, |cap| cap.min(reply_tokens)) as usize;
    let finish = match cap {
        Some(cap) if cap <= reply_tokens => SimFinish::Length,
        _ => SimFinish::Stop,
    };
    let words = text::reply(request.seed_text(), &request.model, count);
    let pieces: Vec<Cow<'static, str>> = if user_last.is_some_and(|t| t.images > 0) {
        const SEEN: [&str; 4] = ["I", " see", " an", " image."];
        let mut pieces: Vec<Cow<'static, str>> = SEEN.iter().map(|w| Cow::Borrowed(*w)).collect();
        // The first word was capitalised to start the answer; after the sentence it needs its space.
        pieces.extend(words.iter().enumerate().map(|(i, w)| {
            if i == 0 {
                Cow::Owned(format!(" {w}"))
            } else {
                Cow::Borrowed(*w)
            }
        }));
        pieces.truncate(count);
        pieces
    } else {
        words.into_iter().map(Cow::Borrowed).collect()
    };
    (SimReply::Text(pieces), finish)
}

fn tool_call(tool: &SimTool, seed_text: &str) -> SimToolCall {
    let seed = text::fnv1a(seed_text.as_bytes());
    let arguments = match &tool.parameters {
        Some(schema) => match value_for(schema, "", seed, 0) {
            object @ Value::Object(_) => object,
            _ => Value::Object(Map::new()),
        },
        None => Value::Object(Map::new()),
    };
    let tokens = (tool.name.len() + arguments.to_string().len()).div_ceil(4).max(1) as u64;
    SimToolCall {
        name: tool.name.clone(),
        arguments,
        tokens,
    }
}

/// A value satisfying `schema`, deterministic in the property `name` and `seed`: required string
/// properties get a word, numbers 1, booleans true, arrays one item, objects their required properties.
fn value_for(schema: &Value, name: &str, seed: u64, depth: usize) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    if let Some(constant) = schema.get("const") {
        return constant.clone();
    }
    if let Some(first) = ["anyOf", "oneOf", "allOf"]
        .iter()
        .find_map(|k| schema.get(*k).and_then(Value::as_array).and_then(|v| v.first()))
    {
        return value_for(first, name, seed, depth + 1);
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ if schema.get("items").is_some() => "array",
        _ => "string",
    };
    // Gemini's OpenAPI-style schemas write types in capitals.
    match kind.to_ascii_lowercase().as_str() {
        "number" | "integer" => json!(1),
        "boolean" => json!(true),
        "null" => Value::Null,
        "array" => match schema.get("items") {
            Some(items) => json!([value_for(items, name, seed, depth + 1)]),
            None => json!([]),
        },
        "object" => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let mut object = Map::new();
            for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                let Some(key) = required.as_str() else { continue };
                let property = properties.and_then(|p| p.get(key)).unwrap_or(&Value::Null);
                object.insert(key.to_owned(), value_for(property, key, seed, depth + 1));
            }
            Value::Object(object)
        }
        _ => Value::String(text::word(seed ^ text::fnv1a(name.as_bytes())).to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::SimTurn;

    fn user(text: &str) -> SimTurn {
        SimTurn::text(SimRole::User, text)
    }

    fn weather_tool() -> SimTool {
        SimTool {
            name: "get_weather".to_owned(),
            parameters: Some(json!({
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "metric": {"type": "boolean"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "note": {"type": "string"}
                },
                "required": ["city", "days", "metric", "unit", "tags"]
            })),
        }
    }

    fn text_of(reply: &SimReply) -> String {
        match reply {
            SimReply::Text(pieces) => pieces.concat(),
            SimReply::ToolCall(call) => panic!("a tool call: {call:?}"),
        }
    }

    #[test]
    fn tools_and_a_user_turn_make_one_call_from_the_schema() {
        let request = SimRequest {
            model: "m".to_owned(),
            turns: vec![SimTurn::text(SimRole::System, "be brief"), user("Weather in Paris?")],
            tools: vec![weather_tool(), SimTool::default()],
            ..SimRequest::default()
        };
        let (reply, finish) = plan(&request, 16);
        assert_eq!(finish, SimFinish::ToolCalls);
        let SimReply::ToolCall(call) = &reply else {
            panic!("{reply:?}")
        };
        assert_eq!(call.name, "get_weather");
        let args = call.arguments.as_object().unwrap();
        assert!(args["city"].as_str().is_some_and(|c| !c.is_empty()), "{args:?}");
        assert_eq!(args["days"], json!(1));
        assert_eq!(args["metric"], json!(true));
        assert_eq!(args["unit"], json!("celsius"));
        assert_eq!(args["tags"].as_array().unwrap().len(), 1);
        assert!(!args.contains_key("note"), "only required properties");
        assert_eq!(call.argument_pieces().concat(), call.arguments_json());
        assert_eq!(reply.completion_tokens(), call.tokens());
        // Deterministic.
        assert_eq!(plan(&request, 16).0, reply);
        // `none` forbids it; a named choice picks its tool.
        let none = SimRequest {
            tool_choice: SimToolChoice::None,
            ..request.clone()
        };
        assert!(matches!(plan(&none, 16).0, SimReply::Text(_)));
        let named = SimRequest {
            tool_choice: SimToolChoice::Named(String::new()),
            ..request
        };
        let SimReply::ToolCall(call) = plan(&named, 16).0 else {
            panic!()
        };
        assert_eq!(call.name, "");
        assert_eq!(call.arguments, json!({}));
    }

    #[test]
    fn tool_results_are_echoed_and_capped() {
        let result = SimTurn {
            role: SimRole::Tool,
            tool_results: vec!["18C and sunny".to_owned()],
            ..SimTurn::default()
        };
        let request = SimRequest {
            model: "m".to_owned(),
            turns: vec![user("Weather?"), SimTurn::text(SimRole::Assistant, ""), result.clone()],
            tools: vec![weather_tool()],
            ..SimRequest::default()
        };
        let (reply, finish) = plan(&request, 16);
        assert_eq!(text_of(&reply), "Tool said: 18C and sunny");
        assert_eq!(finish, SimFinish::Stop);
        assert_eq!(reply.completion_tokens(), 5);
        let long = SimTurn {
            tool_results: vec!["word ".repeat(50)],
            ..result
        };
        let request = SimRequest {
            turns: vec![user("x"), long],
            ..request
        };
        let (reply, _) = plan(&request, 16);
        assert_eq!(reply.completion_tokens(), 2 + TOOL_RESULT_WORDS as u64);
        let capped = SimRequest {
            max_tokens: Some(3),
            ..request
        };
        let (reply, finish) = plan(&capped, 16);
        assert_eq!(
            (text_of(&reply).as_str(), finish),
            ("Tool said: word", SimFinish::Length)
        );
    }

    #[test]
    fn images_are_seen_and_text_stays_deterministic() {
        let mut turn = user("What is this?");
        let plain = SimRequest {
            model: "m".to_owned(),
            turns: vec![turn.clone()],
            ..SimRequest::default()
        };
        turn.images = 1;
        let image = SimRequest {
            turns: vec![turn],
            ..plain.clone()
        };
        let (seen, finish) = plan(&image, 16);
        let seen = text_of(&seen);
        assert!(seen.starts_with("I see an image. "), "{seen}");
        assert_eq!(finish, SimFinish::Stop);
        let words = text::reply("What is this?", "m", 16);
        assert_eq!(text_of(&plan(&plain, 16).0), words.concat());
        assert_eq!(seen, format!("I see an image. {}", words[..12].concat()));
        let (capped, finish) = plan(
            &SimRequest {
                max_tokens: Some(4),
                ..plain
            },
            16,
        );
        assert_eq!((capped.completion_tokens(), finish), (4, SimFinish::Length));
    }

    #[test]
    fn json_output_follows_the_schema_in_pieces() {
        let schema = json!({"type": "object", "properties": {
            "name": {"type": "string"}, "participants": {"type": "array", "items": {"type": "string"}}},
            "required": ["name", "participants"]});
        let request = SimRequest {
            model: "m".to_owned(),
            turns: vec![user("Alice and Bob go to a fair.")],
            schema: Some(schema),
            ..SimRequest::default()
        };
        let (reply, finish) = plan(&request, 12);
        assert_eq!(finish, SimFinish::Stop);
        let value: Value = serde_json::from_str(&text_of(&reply)).unwrap();
        assert!(
            value["name"].is_string() && value["participants"][0].is_string(),
            "{value}"
        );
        assert!(reply.completion_tokens() > 1);
        // A cap cuts it short, as a length finish.
        let capped = SimRequest {
            max_tokens: Some(2),
            ..request
        };
        assert_eq!(plan(&capped, 12).1, SimFinish::Length);
    }
}
