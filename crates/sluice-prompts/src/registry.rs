//! The registry: every prompt of a directory, by name and version, and its OpenAPI description.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::error::{LoadError, Problem};
use crate::file::parse_prompt;
use crate::lifecycle::{Access, Status};
use crate::prompt::Prompt;

/// Template files larger than this are refused: a prompt is text a person maintains.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// How deep subdirectories are searched (also stops symlink loops).
const MAX_DEPTH: usize = 8;

/// One prompt name as `GET /v1/prompts` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromptSummary {
    /// The published name.
    pub name: String,
    /// Every version loaded, ascending.
    pub versions: Vec<u32>,
    /// The newest version.
    pub latest: u32,
    /// The version served when the caller pins none: the newest active one (else the newest
    /// deprecated, else the newest).
    pub default: u32,
    /// The default version's status: `deprecated` when no version is active.
    pub status: Status,
    /// Who may call it (the newest version's file says).
    pub access: Access,
    /// The default version's description.
    pub description: String,
    /// The default version's model.
    pub model: String,
}

// === impl PromptRegistry ===

/// Every prompt loaded from a directory, by name and version. Immutable once loaded; reloading builds
/// a new one (see [`PromptWatcher`](crate::PromptWatcher)).
#[derive(Debug, Default)]
pub struct PromptRegistry {
    prompts: BTreeMap<String, BTreeMap<u32, Prompt>>,
}

impl PromptRegistry {
    /// A registry with no prompts.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Loads every `*.toml` file under `dir`, subdirectories included (names starting with `.` are
    /// skipped). Any problem in any file fails the whole load, and the error lists them all.
    ///
    /// A missing `dir` is an empty registry, not an error, so a gateway without prompts needs no
    /// directory; callers that want a missing directory to be loud can check for it first. A `dir`
    /// that is not a directory is an error.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        let files = match template_files(dir) {
            Ok(files) => files,
            Err(problems) => return Err(LoadError::new(problems)),
        };
        let mut problems = Vec::new();
        let mut prompts: BTreeMap<String, BTreeMap<u32, Prompt>> = BTreeMap::new();
        for file in files {
            let text = match read_template(&file.path) {
                Ok(text) => text,
                Err(problem) => {
                    problems.push(problem);
                    continue;
                }
            };
            let prompt = match parse_prompt(&file.path, &text) {
                Ok(prompt) => prompt,
                Err(found) => {
                    problems.extend(found);
                    continue;
                }
            };
            let versions = prompts.entry(prompt.name.clone()).or_default();
            if let Some(first) = versions.get(&prompt.version) {
                let line = version_line(&text);
                problems.push(Problem::new(
                    &file.path,
                    line,
                    format!(
                        "prompt `{}` version {} is already defined in {}",
                        prompt.name,
                        prompt.version,
                        first.source.display()
                    ),
                ));
                continue;
            }
            versions.insert(prompt.version, prompt);
        }
        let registry = Self { prompts };
        problems.extend(registry.check_replacements());
        if problems.is_empty() {
            Ok(registry)
        } else {
            Err(LoadError::new(problems))
        }
    }

    /// Every `replaced_by` names a prompt (and version) that is loaded and not retired.
    fn check_replacements(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for prompt in self.iter() {
            let Some(replacement) = &prompt.lifecycle.replaced_by else {
                continue;
            };
            let found = self.get(&replacement.name, replacement.version);
            let problem = match found {
                None => Some(format!(
                    "prompt `{}` version {} is replaced by {replacement}, which is not loaded",
                    prompt.name, prompt.version
                )),
                Some(target) if target.status() == Status::Retired => Some(format!(
                    "prompt `{}` version {} is replaced by {replacement}, which is retired",
                    prompt.name, prompt.version
                )),
                Some(_) => None,
            };
            if let Some(message) = problem {
                problems.push(Problem::new(&prompt.source, prompt.replaced_by_line, message));
            }
        }
        problems
    }

    /// Whether no prompt is loaded.
    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// How many prompt names are loaded (versions of one name count once).
    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    /// Every prompt name with its versions, sorted by name.
    pub fn list(&self) -> Vec<PromptSummary> {
        self.prompts
            .iter()
            .filter_map(|(name, versions)| {
                let (latest, newest) = versions.last_key_value()?;
                let default = default_of(versions)?;
                Some(PromptSummary {
                    name: name.clone(),
                    versions: versions.keys().copied().collect(),
                    latest: *latest,
                    default: default.version,
                    status: default.status(),
                    access: newest.access,
                    description: default.description.clone(),
                    model: default.model.clone(),
                })
            })
            .collect()
    }

    /// The prompt `name` at `version`, or its default version when `version` is `None`: the newest
    /// active one, else the newest deprecated, else the newest (retired: the caller answers 410).
    pub fn get(&self, name: &str, version: Option<u32>) -> Option<&Prompt> {
        let versions = self.prompts.get(name)?;
        match version {
            Some(version) => versions.get(&version),
            None => default_of(versions),
        }
    }

    /// Who may call the prompt `name`: its newest version's `access`; `None` for an unknown name.
    pub fn access(&self, name: &str) -> Option<Access> {
        let versions = self.prompts.get(name)?;
        versions.last_key_value().map(|(_, p)| p.access)
    }

    /// Every version of `name`, oldest first.
    pub fn versions(&self, name: &str) -> impl Iterator<Item = &Prompt> {
        self.prompts.get(name).into_iter().flat_map(BTreeMap::values)
    }

    /// Every loaded prompt, every version, by name then version.
    pub fn iter(&self) -> impl Iterator<Item = &Prompt> {
        self.prompts.values().flat_map(BTreeMap::values)
    }

    /// The model names the prompts call, for the caller to check against its configuration.
    pub fn models(&self) -> BTreeSet<&str> {
        self.iter().map(|p| p.model.as_str()).collect()
    }

    /// Checks every prompt's model with `is_known`, reporting each unknown one at its file and line.
    pub fn check_models(&self, is_known: impl Fn(&str) -> bool) -> Result<(), LoadError> {
        let problems: Vec<Problem> = self
            .iter()
            .filter(|p| !is_known(&p.model))
            .map(|p| {
                Problem::new(
                    &p.source,
                    Some(p.model_line),
                    format!(
                        "prompt `{}` version {} calls model `{}`, which is not configured",
                        p.name, p.version, p.model
                    ),
                )
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LoadError::new(problems))
        }
    }

    /// An OpenAPI 3.1 document with one `POST /v1/prompts/{name}` operation per prompt name: its request
    /// body carries the newest version's variables as a JSON Schema, the versions that may be pinned,
    /// and `stream`; it answers a chat completion, or its server-sent event stream. `server_url`, when
    /// known, becomes the document's server.
    pub fn openapi(&self, server_url: Option<&str>) -> Value {
        self.openapi_of(server_url, |_| true)
    }

    /// [`Self::openapi`] with only the prompts whose name `include` accepts (those a caller may use).
    pub fn openapi_of(&self, server_url: Option<&str>, include: impl Fn(&str) -> bool) -> Value {
        let mut paths = Map::new();
        for summary in self.list().into_iter().filter(|p| include(&p.name)) {
            let Some(prompt) = self.get(&summary.name, None) else {
                continue;
            };
            // A retired version answers 410: it is not one a client may pin.
            let servable: Vec<u32> = self
                .versions(&summary.name)
                .filter(|p| p.status() != Status::Retired)
                .map(Prompt::version)
                .collect();
            paths.insert(
                format!("/v1/prompts/{}", summary.name),
                json!({ "post": operation(prompt, &summary, &servable) }),
            );
        }
        let mut doc = json!({
            "openapi": "3.1.0",
            "info": {
                "title": "Sluice prompts",
                "version": "1",
                "description": "Prompt templates published by this Sluice gateway. Each operation renders \
                    its prompt with the given variables and answers as POST /v1/chat/completions does.",
            },
            "paths": paths,
            "components": {
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer", "description": "A Sluice virtual key (sk-...)."}
                },
                "schemas": {
                    "ChatCompletion": chat_completion_schema(),
                    "Error": error_schema(),
                },
            },
            "security": [{"bearer": []}],
        });
        if let (Some(url), Some(obj)) = (server_url, doc.as_object_mut()) {
            obj.insert("servers".into(), json!([{"url": url}]));
        }
        doc
    }
}

/// The version served when none is pinned: the newest active, else the newest deprecated, else the
/// newest.
fn default_of(versions: &BTreeMap<u32, Prompt>) -> Option<&Prompt> {
    let newest = |status: Status| versions.values().rev().find(|p| p.status() == status);
    newest(Status::Active)
        .or_else(|| newest(Status::Deprecated))
        .or_else(|| versions.last_key_value().map(|(_, p)| p))
}

fn operation(prompt: &Prompt, summary: &PromptSummary, servable: &[u32]) -> Value {
    let mut variables = prompt.variables_schema();
    if let Some(obj) = variables.as_object_mut() {
        obj.insert(
            "description".into(),
            format!(
                "The variables of version {}; a pinned version checks its own.",
                summary.latest
            )
            .into(),
        );
    }
    let any_required = prompt.variables().iter().any(|v| v.required);
    let required: Vec<&str> = if any_required { vec!["variables"] } else { vec![] };
    let versions = summary
        .versions
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let lifecycle = &prompt.lifecycle;
    let deprecated = summary.status != Status::Active;
    let mut notice = String::new();
    if deprecated {
        notice.push_str(" Deprecated: no version is active.");
        if let Some(replacement) = &lifecycle.replaced_by {
            notice.push_str(&format!(" Use {replacement} instead."));
        }
        if let Some(sunset) = lifecycle.sunset {
            notice.push_str(&format!(" Sunset: {}.", sunset.format("%Y-%m-%d")));
        }
    }
    let error = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        })
    };
    json!({
        "operationId": operation_id(&summary.name),
        "summary": prompt.description(),
        "deprecated": deprecated,
        "description": format!(
            "{}\n\nModel: `{}`. Versions: {versions} (default: {}).{notice}",
            prompt.description(),
            prompt.model(),
            summary.default
        ),
        "tags": ["prompts"],
        "requestBody": {
            "required": true,
            "content": {"application/json": {"schema": {
                "type": "object",
                "title": format!("{}Request", operation_id(&summary.name)),
                "properties": {
                    "variables": variables,
                    "version": {
                        "type": "integer",
                        "enum": servable,
                        "description": "Pin a version; the newest active one when absent. A deprecated version answers with `Deprecation`, `Sunset` and `Link` headers; a retired one answers 410.",
                    },
                    "stream": {
                        "type": "boolean",
                        "default": false,
                        "description": "Answer as a server-sent event stream of chat completion chunks.",
                    },
                },
                "required": required,
                "additionalProperties": false,
            }}},
        },
        "responses": {
            "200": {
                "description": "The chat completion, or with `stream`, its chunks as server-sent events ending with `data: [DONE]`.",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            },
            "400": error("A variable is missing, unknown or of the wrong type (the error's `param` names it)."),
            "401": error("The key is missing or unknown."),
            "403": error("The tenant may not call this prompt (a subscription may be pending)."),
            "404": error("No such prompt, or no such version."),
            "410": error("The version is retired; the message names its replacement."),
            "429": error("Rate limited; retry after the `retry-after` header."),
        },
    })
}

/// An operation id from a prompt name: `classify-sentiment` becomes `classify_sentiment`.
fn operation_id(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn chat_completion_schema() -> Value {
    json!({
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "const": "chat.completion"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "message": {"type": "object", "properties": {
                        "role": {"type": "string"},
                        "content": {"type": ["string", "null"]},
                        "refusal": {"type": ["string", "null"]},
                    }},
                    "finish_reason": {"type": ["string", "null"]},
                },
            }},
            "usage": {"type": "object", "properties": {
                "prompt_tokens": {"type": "integer"},
                "completion_tokens": {"type": "integer"},
                "total_tokens": {"type": "integer"},
            }},
        },
    })
}

fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }},
    })
}

/// The line of the top-level `version` key, for the duplicate-version message.
fn version_line(text: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.trim_start()
                .strip_prefix("version")
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

// === template files ===

/// A template file and what it looked like when found, for change detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStamp {
    pub(crate) path: PathBuf,
    pub(crate) modified: Option<SystemTime>,
    pub(crate) len: u64,
}

/// Every `*.toml` file under `dir`, sorted by path, with its stamp. A missing `dir` has none.
pub(crate) fn template_files(dir: &Path) -> Result<Vec<FileStamp>, Vec<Problem>> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(vec![Problem::new(dir, None, "the prompts path is not a directory")]),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(vec![Problem::new(dir, None, format!("cannot read: {err}"))]),
    }
    let mut files = Vec::new();
    let mut problems = Vec::new();
    walk(dir, 0, &mut files, &mut problems);
    if problems.is_empty() {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    } else {
        Err(problems)
    }
}

fn walk(dir: &Path, depth: usize, files: &mut Vec<FileStamp>, problems: &mut Vec<Problem>) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            problems.push(Problem::new(dir, None, format!("cannot read the directory: {err}")));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                problems.push(Problem::new(dir, None, format!("cannot read the directory: {err}")));
                continue;
            }
        };
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // Follows symlinks: a linked file or directory counts like a real one.
        let Ok(meta) = fs::metadata(&path) else {
            continue; // A dangling link, or a file removed while listing.
        };
        if meta.is_dir() {
            if depth + 1 < MAX_DEPTH {
                walk(&path, depth + 1, files, problems);
            }
        } else if path.extension().is_some_and(|ext| ext == "toml") {
            files.push(FileStamp {
                path,
                modified: meta.modified().ok(),
                len: meta.len(),
            });
        }
    }
}

fn read_template(path: &Path) -> Result<String, Problem> {
    let meta = fs::metadata(path).map_err(|err| Problem::new(path, None, format!("cannot read: {err}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(Problem::new(
            path,
            None,
            format!("the file is larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    fs::read_to_string(path).map_err(|err| Problem::new(path, None, format!("cannot read: {err}")))
}
