//! One loaded prompt: its declaration, its compiled templates, and rendering into a chat request.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use minijinja::value::Value as JinjaValue;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sluice_api::{ChatCompletionRequest, Role};

use crate::error::RenderError;
use crate::lifecycle::{Access, Lifecycle, Status};

/// Steps a single message template may take before rendering stops (minijinja's fuel: about one per
/// instruction). Ordinary prompts use a few hundred; a loop over a 1,000-item array still fits.
pub const FUEL_PER_MESSAGE: u64 = 50_000;

/// Bound on the rendered text of all messages of one prompt together, in bytes. Rendering stops as soon
/// as it is crossed, so a hostile template cannot build a large output first.
pub const MAX_RENDERED_BYTES: usize = 256 * 1024;

// === impl VarType ===

/// The JSON type of a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VarType {
    /// A JSON string.
    String,
    /// A JSON number without a fraction, within `i64`/`u64`.
    Integer,
    /// Any JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A JSON array of anything.
    Array,
    /// A JSON object of anything.
    Object,
}

impl VarType {
    /// The name used in template files and JSON Schema.
    pub fn as_str(self) -> &'static str {
        match self {
            VarType::String => "string",
            VarType::Integer => "integer",
            VarType::Number => "number",
            VarType::Boolean => "boolean",
            VarType::Array => "array",
            VarType::Object => "object",
        }
    }

    /// Whether `value` is of this type. `null` is of no type.
    pub fn matches(self, value: &Value) -> bool {
        match self {
            VarType::String => value.is_string(),
            VarType::Integer => value.is_i64() || value.is_u64(),
            VarType::Number => value.is_number(),
            VarType::Boolean => value.is_boolean(),
            VarType::Array => value.is_array(),
            VarType::Object => value.is_object(),
        }
    }
}

impl fmt::Display for VarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON type of a value, as error messages name it.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

// === impl Variable ===

/// A variable a prompt declares under `[variables.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    /// The name the template uses.
    pub name: String,
    /// Its JSON type.
    pub kind: VarType,
    /// Whether the caller must give it. A variable with a default is never required; an optional one
    /// without a default is `none` in the template when not given.
    pub required: bool,
    /// The value used when the caller gives none.
    pub default: Option<Value>,
    /// What it is for, shown in the JSON Schema.
    pub description: String,
    /// For strings: the only values accepted.
    pub allowed: Option<Vec<String>>,
}

impl Variable {
    /// This variable's JSON Schema.
    pub fn schema(&self) -> Value {
        let mut schema = Map::new();
        schema.insert("type".into(), self.kind.as_str().into());
        if !self.description.is_empty() {
            schema.insert("description".into(), self.description.clone().into());
        }
        if let Some(allowed) = &self.allowed {
            schema.insert("enum".into(), allowed.clone().into());
        }
        if let Some(default) = &self.default {
            schema.insert("default".into(), default.clone());
        }
        Value::Object(schema)
    }
}

/// One message of a prompt: a role and the template of its content.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageTemplate {
    /// Who speaks.
    pub role: Role,
    /// The minijinja source of the content.
    pub content: String,
}

// === impl Prompt ===

/// A prompt template, one version of it, ready to render.
pub struct Prompt {
    pub(crate) name: String,
    pub(crate) version: u32,
    pub(crate) description: String,
    pub(crate) model: String,
    pub(crate) model_line: usize,
    pub(crate) parameters: Map<String, Value>,
    pub(crate) variables: Vec<Variable>,
    pub(crate) messages: Vec<MessageTemplate>,
    pub(crate) source: PathBuf,
    /// The sandbox holding this prompt's compiled message templates, named `messages[i]`.
    pub(crate) env: Environment<'static>,
    /// Where the version stands, its sunset and its replacement.
    pub(crate) lifecycle: Lifecycle,
    /// Who may call the prompt (the newest version's file decides for the name).
    pub(crate) access: Access,
    /// The line of `replaced_by`, for a replacement that does not exist.
    pub(crate) replaced_by_line: Option<usize>,
}

impl fmt::Debug for Prompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prompt")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("model", &self.model)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Prompt {
    /// The name it is published under: `POST /v1/prompts/{name}`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its version (1 or more).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// What it does.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The configured model name it calls (checked by the caller, see
    /// [`PromptRegistry::check_models`](crate::PromptRegistry::check_models)).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The chat-completion fields it sets (`temperature`, `max_tokens`, `response_format`...).
    pub fn parameters(&self) -> &Map<String, Value> {
        &self.parameters
    }

    /// Its variables, sorted by name.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// Its message templates, in order.
    pub fn messages(&self) -> &[MessageTemplate] {
        &self.messages
    }

    /// Where this version stands, its sunset and its replacement.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// This version's status.
    pub fn status(&self) -> Status {
        self.lifecycle.status
    }

    /// Who may call the prompt, as this version's file says (the registry reports the newest version's
    /// for the name: [`PromptRegistry::access`](crate::PromptRegistry::access)).
    pub fn access(&self) -> Access {
        self.access
    }

    /// The file it was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Its variables as a JSON Schema object: types, descriptions, defaults, enums, which are required,
    /// and no other properties allowed.
    pub fn variables_schema(&self) -> Value {
        let properties: Map<String, Value> = self.variables.iter().map(|v| (v.name.clone(), v.schema())).collect();
        let required: Vec<&str> = self
            .variables
            .iter()
            .filter(|v| v.required)
            .map(|v| v.name.as_str())
            .collect();
        json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        })
    }

    /// Renders the prompt with the caller's `variables` into a chat request for [`Prompt::model`] with
    /// the prompt's parameters. `stream` is left unset for the caller.
    ///
    /// The variables are validated first: every declared one present or defaulted, none unknown, each of
    /// its type (a `null` counts as not given). Each message's rendered content loses its trailing
    /// whitespace and leading blank lines; a message left empty is dropped, so a message can be made
    /// optional with `{% if %}`.
    pub fn render(&self, variables: &Map<String, Value>) -> Result<ChatCompletionRequest, RenderError> {
        let context = self.context(variables)?;
        let mut budget = MAX_RENDERED_BYTES;
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, message) in self.messages.iter().enumerate() {
            let rendered = self.render_message(i, &context, &mut budget)?;
            // TOML's multi-line strings start and end with line breaks the author did not mean to send.
            let content = rendered.trim_end().trim_start_matches(['\n', '\r']);
            if content.is_empty() {
                continue;
            }
            messages.push(json!({"role": message.role, "content": content}));
        }
        if messages.is_empty() {
            return Err(RenderError::Render {
                message: "every message rendered empty".to_owned(),
            });
        }
        let mut body = self.parameters.clone();
        body.insert("model".into(), self.model.clone().into());
        body.insert("messages".into(), Value::Array(messages));
        serde_json::from_value(Value::Object(body)).map_err(|err| RenderError::Render {
            message: format!("the rendered request is not a valid chat completion request: {err}"),
        })
    }

    /// Validates the caller's variables and builds the template context: every declared variable,
    /// given, defaulted, or `none`.
    fn context(&self, given: &Map<String, Value>) -> Result<JinjaValue, RenderError> {
        if let Some(name) = given
            .keys()
            .find(|name| !self.variables.iter().any(|v| &v.name == *name))
        {
            return Err(RenderError::Unknown { name: name.clone() });
        }
        let mut context = BTreeMap::new();
        for variable in &self.variables {
            let value = match given.get(&variable.name).filter(|v| !v.is_null()) {
                Some(value) => {
                    check_value(variable, value)?;
                    value
                }
                None if variable.required => {
                    return match given.get(&variable.name) {
                        Some(null) => Err(RenderError::WrongType {
                            name: variable.name.clone(),
                            expected: variable.kind,
                            got: json_type(null),
                        }),
                        None => Err(RenderError::Missing {
                            name: variable.name.clone(),
                        }),
                    };
                }
                None => variable.default.as_ref().unwrap_or(&Value::Null),
            };
            context.insert(variable.name.clone(), to_jinja(value));
        }
        Ok(JinjaValue::from(context))
    }

    fn render_message(&self, index: usize, context: &JinjaValue, budget: &mut usize) -> Result<String, RenderError> {
        let template = self
            .env
            .get_template(&message_template_name(index))
            .map_err(|err| RenderError::Render {
                message: describe_jinja_error(&err),
            })?;
        let mut out = BoundedWriter {
            buf: Vec::new(),
            remaining: *budget,
            exceeded: false,
        };
        let result = template.render_captured_to(context.clone(), &mut out).map(drop);
        if out.exceeded {
            return Err(RenderError::TooLarge {
                limit: MAX_RENDERED_BYTES,
            });
        }
        result.map_err(|err| RenderError::Render {
            message: describe_jinja_error(&err),
        })?;
        *budget = out.remaining;
        String::from_utf8(out.buf).map_err(|_| RenderError::Render {
            message: format!("messages[{index}] rendered invalid UTF-8"),
        })
    }
}

/// Checks a given, non-null value against its declaration.
pub(crate) fn check_value(variable: &Variable, value: &Value) -> Result<(), RenderError> {
    if !variable.kind.matches(value) {
        return Err(RenderError::WrongType {
            name: variable.name.clone(),
            expected: variable.kind,
            got: json_type(value),
        });
    }
    if let (Some(allowed), Some(text)) = (&variable.allowed, value.as_str())
        && !allowed.iter().any(|a| a == text)
    {
        return Err(RenderError::NotAllowed {
            name: variable.name.clone(),
            allowed: allowed.clone(),
        });
    }
    Ok(())
}

/// The name of message `index`'s template in its prompt's environment; minijinja errors cite it.
pub(crate) fn message_template_name(index: usize) -> String {
    format!("messages[{index}]")
}

/// A minijinja error as one line: what, and where in which message template.
pub(crate) fn describe_jinja_error(err: &minijinja::Error) -> String {
    let what = match err.kind() {
        ErrorKind::OutOfFuel => "the template took too many steps (fuel exhausted)".to_owned(),
        kind => match err.detail() {
            Some(detail) => format!("{kind}: {detail}"),
            None => kind.to_string(),
        },
    };
    match (err.name(), err.line()) {
        (Some(name), Some(line)) => format!("{what} (in {name}, line {line} of the template)"),
        (Some(name), None) => format!("{what} (in {name})"),
        _ => what,
    }
}

/// The sandbox every prompt renders in.
///
/// - no loader, and `multi_template` is compiled out, so no `include`/`import`/`extends`: templates
///   cannot read files, and minijinja has no function reading the environment;
/// - undefined variables are errors everywhere (`Strict`), declared ones are always defined;
/// - no auto-escaping: prompts are text, not HTML;
/// - each message template has [`FUEL_PER_MESSAGE`] steps, and [`MAX_RENDERED_BYTES`] bounds the output.
///
/// Variable values are passed as data in the context and never parsed as templates, so a value holding
/// `{{ ... }}` comes out as written.
pub(crate) fn sandbox() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(FUEL_PER_MESSAGE));
    // Block tags on their own lines leave no blank lines behind, as prompt authors expect.
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env
}

/// A JSON value as a template value.
pub(crate) fn to_jinja(value: &Value) -> JinjaValue {
    match value {
        Value::Null => JinjaValue::from(()),
        Value::Bool(b) => JinjaValue::from(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                JinjaValue::from(i)
            } else if let Some(u) = n.as_u64() {
                JinjaValue::from(u)
            } else {
                JinjaValue::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => JinjaValue::from(s.as_str()),
        Value::Array(items) => JinjaValue::from(items.iter().map(to_jinja).collect::<Vec<_>>()),
        Value::Object(map) => JinjaValue::from(
            map.iter()
                .map(|(k, v)| (k.clone(), to_jinja(v)))
                .collect::<BTreeMap<String, JinjaValue>>(),
        ),
    }
}

/// Collects rendered output up to a byte budget and fails the write that would cross it, which stops
/// the template at once.
struct BoundedWriter {
    buf: Vec<u8>,
    remaining: usize,
    exceeded: bool,
}

impl io::Write for BoundedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.len() > self.remaining {
            self.exceeded = true;
            return Err(io::Error::other("rendered output bound exceeded"));
        }
        self.remaining -= data.len();
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
