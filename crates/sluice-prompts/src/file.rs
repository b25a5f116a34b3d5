//! One template file: the raw TOML shape, and its validation into a [`Prompt`] with every problem
//! cited by line.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_api::{ChatCompletionRequest, ParseError, Role};
use toml::Spanned;

use crate::error::Problem;
use crate::lifecycle::{Access, Lifecycle, Replacement, Status, toml_instant};
use crate::prompt::{MessageTemplate, Prompt, VarType, Variable, check_value, message_template_name, sandbox};

/// Chat-completion fields a prompt may not set: the model and messages are the prompt's own, and
/// whether to stream is the caller's choice.
const RESERVED_PARAMETERS: &[&str] = &["model", "messages", "stream"];

/// Longest prompt name; names are URL path segments.
const MAX_NAME_LEN: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrompt {
    name: Spanned<String>,
    version: Spanned<i64>,
    description: String,
    model: Spanned<String>,
    #[serde(default)]
    parameters: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    variables: BTreeMap<String, Spanned<RawVariable>>,
    messages: Spanned<Vec<RawMessage>>,
    #[serde(default)]
    status: Status,
    #[serde(default)]
    sunset: Option<Spanned<toml::value::Datetime>>,
    #[serde(default)]
    deprecated_since: Option<Spanned<toml::value::Datetime>>,
    #[serde(default)]
    replaced_by: Option<Spanned<toml::Value>>,
    #[serde(default)]
    access: Access,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariable {
    #[serde(rename = "type")]
    kind: VarType,
    required: Option<bool>,
    default: Option<Spanned<toml::Value>>,
    #[serde(default)]
    description: String,
    #[serde(rename = "enum")]
    allowed: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    role: Spanned<Role>,
    content: Spanned<String>,
}

/// Where a problem is: the file's text, to turn byte offsets into lines.
struct Cite<'a> {
    file: &'a Path,
    text: &'a str,
    problems: Vec<Problem>,
}

impl Cite<'_> {
    fn line(&self, offset: usize) -> usize {
        line_of(self.text, offset)
    }

    fn at(&mut self, offset: usize, message: impl Into<String>) {
        let line = self.line(offset);
        self.problems.push(Problem::new(self.file, Some(line), message));
    }

    fn at_line(&mut self, line: usize, message: impl Into<String>) {
        self.problems.push(Problem::new(self.file, Some(line), message));
    }
}

/// The 1-based line of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

/// For each line of a TOML string's value, the line of the file it comes from, given the span of the
/// string token. Follows what the decoder does: a multi-line string's opening line break is dropped,
/// `\n` escapes start a new value line on the same file line, and a line-ending backslash joins file
/// lines into one value line.
fn value_line_map(text: &str, span: std::ops::Range<usize>) -> Vec<usize> {
    let token = text.get(span.clone()).unwrap_or("");
    let mut line = line_of(text, span.start);
    let (body, escapes, multiline) = if let Some(rest) = token.strip_prefix("\"\"\"") {
        (rest, true, true)
    } else if let Some(rest) = token.strip_prefix("'''") {
        (rest, false, true)
    } else {
        (token.get(1..).unwrap_or(""), token.starts_with('"'), false)
    };
    let body = if multiline {
        match body.strip_prefix('\n').or_else(|| body.strip_prefix("\r\n")) {
            Some(rest) => {
                line += 1;
                rest
            }
            None => body,
        }
    } else {
        body
    };
    let mut map = vec![line];
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                line += 1;
                map.push(line);
            }
            '\\' if escapes => match chars.next() {
                Some('n') => map.push(line),
                Some(w) if multiline && w.is_whitespace() => {
                    if w == '\n' {
                        line += 1;
                    }
                    while let Some(&w) = chars.peek().filter(|w| w.is_whitespace()) {
                        if w == '\n' {
                            line += 1;
                        }
                        chars.next();
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
    map
}

/// The file line of 0-based line `index` of a string's value.
fn file_line(map: &[usize], index: usize) -> usize {
    map.get(index).or(map.last()).copied().unwrap_or(1)
}

/// Parses and validates one template file, returning the prompt or every problem found in it.
pub(crate) fn parse_prompt(file: &Path, text: &str) -> Result<Prompt, Vec<Problem>> {
    let raw: RawPrompt = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(err) => {
            let line = err.span().map(|span| line_of(text, span.start));
            return Err(vec![Problem::new(file, line, err.message().trim().to_owned())]);
        }
    };
    let mut cite = Cite {
        file,
        text,
        problems: Vec::new(),
    };

    let name = raw.name.get_ref().clone();
    check_name(&mut cite, &raw.name);
    let version = match u32::try_from(*raw.version.get_ref()) {
        Ok(version) if version >= 1 => version,
        _ => {
            cite.at(raw.version.span().start, "`version` must be an integer of 1 or more");
            0
        }
    };
    if raw.model.get_ref().trim().is_empty() {
        cite.at(raw.model.span().start, "`model` must name a configured model");
    }
    let model_line = cite.line(raw.model.span().start);

    let lifecycle = check_lifecycle(&mut cite, &name, version, &raw);
    let variables = check_variables(&mut cite, raw.variables);
    let parameters = check_parameters(&mut cite, &raw.model, raw.parameters);

    let mut env = sandbox();
    // Builtin globals (`range`, `dict`, `namespace`) are as declared as the variables.
    let declared: HashSet<String> = variables
        .iter()
        .map(|v| v.name.clone())
        .chain(env.globals().map(|(name, _)| name.to_owned()))
        .collect();
    let messages_at = raw.messages.span().start;
    let raw_messages = raw.messages.into_inner();
    if raw_messages.is_empty() {
        cite.at(messages_at, "a prompt needs at least one `[[messages]]`");
    }
    let mut messages = Vec::with_capacity(raw_messages.len());
    for (i, message) in raw_messages.into_iter().enumerate() {
        let role = *message.role.get_ref();
        if matches!(role, Role::Tool | Role::Function) {
            cite.at(
                message.role.span().start,
                format!(
                    "messages[{i}]: role `{}` needs a tool call to answer; use system, developer, user or assistant",
                    role_name(role)
                ),
            );
        }
        let lines = value_line_map(text, message.content.span());
        let content = message.content.into_inner();
        let template_name = message_template_name(i);
        match env.add_template_owned(template_name.clone(), content.clone()) {
            Ok(()) => {}
            Err(err) => {
                let line = file_line(&lines, err.line().unwrap_or(1).saturating_sub(1));
                let what = err.detail().map_or_else(|| err.kind().to_string(), str::to_owned);
                cite.at_line(line, format!("{template_name}.content does not parse: {what}"));
                messages.push(MessageTemplate { role, content });
                continue;
            }
        }
        if let Ok(template) = env.get_template(&template_name) {
            let mut undeclared: Vec<String> = template
                .undeclared_variables(false)
                .into_iter()
                .filter(|name| !declared.contains(name))
                .collect();
            undeclared.sort();
            for variable in undeclared {
                let line = file_line(&lines, line_in_template(&content, &variable));
                cite.at_line(
                    line,
                    format!("{template_name}.content uses `{variable}`, which is not declared under [variables]"),
                );
            }
        }
        messages.push(MessageTemplate { role, content });
    }

    if !cite.problems.is_empty() {
        let mut problems = cite.problems;
        problems.sort_by_key(|p| p.line);
        return Err(problems);
    }
    Ok(Prompt {
        name,
        version,
        description: raw.description,
        model: raw.model.into_inner(),
        model_line,
        parameters,
        variables,
        messages,
        source: file.to_path_buf(),
        env,
        lifecycle,
        access: raw.access,
        replaced_by_line: replaced_by_line(text),
    })
}

/// Reads `status`, `sunset`, `deprecated_since` and `replaced_by`; whether the replacement exists is
/// checked once every file is loaded.
fn check_lifecycle(cite: &mut Cite<'_>, name: &str, version: u32, raw: &RawPrompt) -> Lifecycle {
    let mut instant = |field: &Option<Spanned<toml::value::Datetime>>, key: &str| {
        let spanned = field.as_ref()?;
        match toml_instant(spanned.get_ref()) {
            Ok(t) => Some(t),
            Err(message) => {
                cite.at(spanned.span().start, format!("`{key}`: {message}"));
                None
            }
        }
    };
    let sunset = instant(&raw.sunset, "sunset");
    let since = instant(&raw.deprecated_since, "deprecated_since");
    let replaced_by = raw
        .replaced_by
        .as_ref()
        .and_then(|spanned| match Replacement::parse(name, spanned.get_ref()) {
            Ok(r) if r.name == name && r.version == Some(version) => {
                cite.at(spanned.span().start, "`replaced_by` names this very version");
                None
            }
            Ok(r) => Some(r),
            Err(message) => {
                cite.at(spanned.span().start, message);
                None
            }
        });
    // Absent a date, a version was deprecated when its file last changed: that is when it was marked.
    let deprecated_since = match raw.status {
        Status::Active => since,
        _ => since.or_else(|| {
            std::fs::metadata(cite.file)
                .and_then(|m| m.modified())
                .ok()
                .map(chrono::DateTime::<chrono::Utc>::from)
        }),
    };
    Lifecycle {
        status: raw.status,
        sunset,
        replaced_by,
        deprecated_since,
    }
}

/// The line of the top-level `replaced_by` key, for a replacement that does not exist.
fn replaced_by_line(text: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.trim_start()
                .strip_prefix("replaced_by")
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

fn role_name(role: Role) -> String {
    serde_json::to_value(role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Names are URL path segments and operation ids: letters, digits, `-` and `_`, starting with a letter
/// or digit.
fn check_name(cite: &mut Cite<'_>, name: &Spanned<String>) {
    let text = name.get_ref();
    let valid = !text.is_empty()
        && text.len() <= MAX_NAME_LEN
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && text.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        cite.at(
            name.span().start,
            format!(
                "`name` must be 1 to {MAX_NAME_LEN} letters, digits, `-` or `_`, starting with a letter or digit (got {text:?})"
            ),
        );
    }
}

/// The 0-based line of `template` where `variable` first appears as a whole word, else 0.
fn line_in_template(template: &str, variable: &str) -> usize {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for (i, line) in template.lines().enumerate() {
        let mut search = 0;
        while let Some(found) = line[search..].find(variable) {
            let start = search + found;
            let end = start + variable.len();
            let before = line[..start].chars().next_back();
            let after = line[end..].chars().next();
            if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
                return i;
            }
            search = end;
        }
    }
    0
}

fn is_identifier(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_variables(cite: &mut Cite<'_>, raw: BTreeMap<String, Spanned<RawVariable>>) -> Vec<Variable> {
    let mut variables = Vec::with_capacity(raw.len());
    for (name, spanned) in raw {
        let at = spanned.span().start;
        let raw = spanned.into_inner();
        if !is_identifier(&name) {
            cite.at(
                at,
                format!("variable `{name}`: names must be letters, digits and `_`, not starting with a digit"),
            );
        }
        let allowed = match raw.allowed {
            Some(allowed) if raw.kind != VarType::String => {
                cite.at(
                    allowed.span().start,
                    format!("variable `{name}`: `enum` is only for strings"),
                );
                None
            }
            Some(allowed) if allowed.get_ref().is_empty() => {
                cite.at(allowed.span().start, format!("variable `{name}`: `enum` is empty"));
                None
            }
            Some(allowed) => Some(allowed.into_inner()),
            None => None,
        };
        let mut variable = Variable {
            name: name.clone(),
            kind: raw.kind,
            required: raw.required.unwrap_or(raw.default.is_none()),
            default: None,
            description: raw.description,
            allowed,
        };
        if let Some(default) = raw.default {
            let at = default.span().start;
            if raw.required == Some(true) {
                cite.at(
                    at,
                    format!("variable `{name}`: a variable with a default cannot be required"),
                );
            }
            match toml_to_json(default.get_ref()) {
                Ok(value) => match check_value(&variable, &value) {
                    Ok(()) => variable.default = Some(value),
                    Err(err) => cite.at(at, format!("invalid default: {err}")),
                },
                Err(message) => cite.at(at, format!("invalid default for variable `{name}`: {message}")),
            }
        }
        variables.push(variable);
    }
    variables
}

/// Converts the parameters to JSON and checks them as the fields of a chat completion request, so a
/// mistyped `temperature` fails at load, at its line.
fn check_parameters(
    cite: &mut Cite<'_>,
    model: &Spanned<String>,
    raw: BTreeMap<String, Spanned<toml::Value>>,
) -> Map<String, Value> {
    let mut parameters = Map::new();
    let mut lines = BTreeMap::new();
    for (key, value) in raw {
        let at = value.span().start;
        lines.insert(key.clone(), cite.line(at));
        if RESERVED_PARAMETERS.contains(&key.as_str()) {
            cite.at(
                at,
                format!("parameter `{key}` cannot be set by a prompt (model and messages are the prompt's own, stream is the caller's)"),
            );
            continue;
        }
        match toml_to_json(value.get_ref()) {
            Ok(json) => {
                parameters.insert(key, json);
            }
            Err(message) => cite.at(at, format!("parameter `{key}`: {message}")),
        }
    }
    // The same check the request will get: a trial request with one message.
    let mut trial = parameters.clone();
    trial.insert("model".into(), model.get_ref().clone().into());
    trial.insert("messages".into(), serde_json::json!([{"role": "user", "content": ""}]));
    let bytes = serde_json::to_vec(&Value::Object(trial)).unwrap_or_default();
    if let Err(err) = sluice_api::parse_json::<ChatCompletionRequest>(&bytes) {
        let (key, message) = match &err {
            ParseError::Field { path, message } => {
                let key = path.split(['.', '[']).next().unwrap_or(path).to_owned();
                (key, message.clone())
            }
            ParseError::Syntax { message, .. } => (String::new(), message.clone()),
        };
        match lines.get(&key) {
            Some(line) => cite.at_line(*line, format!("parameter `{key}`: {message}")),
            None => cite.at(0, format!("invalid parameters: {err}")),
        }
    }
    parameters
}

/// A TOML value as JSON. Datetimes have no JSON form and NaN or infinite floats no JSON number.
pub(crate) fn toml_to_json(value: &toml::Value) -> Result<Value, String> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} has no JSON representation"))?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => return Err(format!("datetime {d} is not supported; quote it as a string")),
        toml::Value::Array(items) => Value::Array(items.iter().map(toml_to_json).collect::<Result<_, _>>()?),
        toml::Value::Table(table) => Value::Object(
            table
                .iter()
                .map(|(k, v)| Ok((k.clone(), toml_to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}
