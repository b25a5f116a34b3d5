//! Registry, rendering and reload tests on template directories made under the system temp dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};
use sluice_api::{MessageContent, Role};

use crate::{LoadError, MAX_RENDERED_BYTES, PromptRegistry, PromptWatcher, RenderError, VarType};

// === helpers ===

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("sluice-prompts-test-{}-{label}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn vars(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn load_err(dir: &TempDir) -> LoadError {
    PromptRegistry::load(dir.path()).unwrap_err()
}

fn texts(request: &sluice_api::ChatCompletionRequest) -> Vec<(Role, String)> {
    request
        .messages
        .iter()
        .map(|m| {
            let text = m.content.as_ref().map(MessageContent::text).unwrap_or_default();
            (m.role, text.into_owned())
        })
        .collect()
}

const SUMMARIZE: &str = r#"name = "summarize"
version = 1
description = "Summarize a text."
model = "demo"

[parameters]
temperature = 0.2
max_tokens = 200

[variables.text]
type = "string"
description = "The text."

[variables.sentences]
type = "integer"
default = 3
description = "How many sentences."

[variables.tone]
type = "string"
enum = ["neutral", "casual"]
default = "neutral"

[variables.audience]
type = "string"
required = false

[[messages]]
role = "system"
content = """
You summarize in a {{ tone }} tone.
{% if audience %}
Write for {{ audience }}.
{% endif %}
"""

[[messages]]
role = "user"
content = "Summarize in {{ sentences }} sentences:\n{{ text }}"
"#;

fn summarize_dir() -> TempDir {
    let dir = TempDir::new("summarize");
    dir.write("summarize.toml", SUMMARIZE);
    dir
}

/// A minimal prompt file with one message whose content is `content` (a TOML basic string body).
fn simple(name: &str, version: u32, variables: &str, content: &str) -> String {
    format!(
        "name = \"{name}\"\nversion = {version}\ndescription = \"d\"\nmodel = \"demo\"\n{variables}\n[[messages]]\nrole = \"user\"\ncontent = \"{content}\"\n"
    )
}

// === rendering and validation of variables ===

#[test]
fn renders_messages_parameters_and_defaults() {
    let dir = summarize_dir();
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let prompt = registry.get("summarize", None).unwrap();
    let request = prompt.render(&vars(json!({"text": "The cat sat."}))).unwrap();
    assert_eq!(request.model, "demo");
    assert_eq!(request.temperature, Some(0.2));
    assert_eq!(request.max_tokens, Some(200));
    assert_eq!(request.stream, None, "stream is the caller's to set");
    assert_eq!(
        texts(&request),
        vec![
            (Role::System, "You summarize in a neutral tone.".to_owned()),
            (Role::User, "Summarize in 3 sentences:\nThe cat sat.".to_owned()),
        ]
    );

    // Given values win over defaults; an optional variable without default renders when given.
    let request = prompt
        .render(&vars(
            json!({"text": "t", "sentences": 1, "tone": "casual", "audience": "kids"}),
        ))
        .unwrap();
    assert_eq!(texts(&request)[0].1, "You summarize in a casual tone.\nWrite for kids.");
    assert_eq!(texts(&request)[1].1, "Summarize in 1 sentences:\nt");

    // null means "not given": the default applies.
    let request = prompt.render(&vars(json!({"text": "t", "sentences": null}))).unwrap();
    assert_eq!(texts(&request)[1].1, "Summarize in 3 sentences:\nt");
}

#[test]
fn missing_required_variable_is_named() {
    let dir = summarize_dir();
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let err = registry
        .get("summarize", None)
        .unwrap()
        .render(&vars(json!({"sentences": 2})))
        .unwrap_err();
    assert_eq!(err, RenderError::Missing { name: "text".into() });
    assert_eq!(err.to_string(), "missing required variable `text`");
    assert_eq!(err.variable(), Some("text"));
}

#[test]
fn null_for_a_required_variable_is_a_type_error() {
    let dir = summarize_dir();
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let err = registry
        .get("summarize", None)
        .unwrap()
        .render(&vars(json!({"text": null})))
        .unwrap_err();
    assert_eq!(
        err,
        RenderError::WrongType {
            name: "text".into(),
            expected: VarType::String,
            got: "null"
        }
    );
}

#[test]
fn unknown_variable_is_named() {
    let dir = summarize_dir();
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let err = registry
        .get("summarize", None)
        .unwrap()
        .render(&vars(json!({"text": "t", "lenght": 3})))
        .unwrap_err();
    assert_eq!(err, RenderError::Unknown { name: "lenght".into() });
    assert_eq!(
        err.to_string(),
        "unknown variable `lenght`: this prompt does not declare it"
    );
}

#[test]
fn mistyped_variables_are_named_with_both_types() {
    let dir = summarize_dir();
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let prompt = registry.get("summarize", None).unwrap();
    let err = prompt.render(&vars(json!({"text": 42}))).unwrap_err();
    assert_eq!(
        err,
        RenderError::WrongType {
            name: "text".into(),
            expected: VarType::String,
            got: "integer"
        }
    );
    assert_eq!(err.to_string(), "variable `text` must be of type string, got integer");

    let err = prompt
        .render(&vars(json!({"text": "t", "sentences": 2.5})))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "variable `sentences` must be of type integer, got number"
    );
    let err = prompt
        .render(&vars(json!({"text": "t", "sentences": "3"})))
        .unwrap_err();
    assert_eq!(err.variable(), Some("sentences"));

    let err = prompt.render(&vars(json!({"text": "t", "tone": "angry"}))).unwrap_err();
    assert_eq!(err.to_string(), "variable `tone` must be one of neutral, casual");
}

#[test]
fn every_type_is_checked() {
    let dir = TempDir::new("types");
    dir.write(
        "t.toml",
        &simple(
            "types",
            1,
            "[variables.s]\ntype = \"string\"\n[variables.i]\ntype = \"integer\"\n[variables.n]\ntype = \"number\"\n\
             [variables.b]\ntype = \"boolean\"\n[variables.a]\ntype = \"array\"\n[variables.o]\ntype = \"object\"\n",
            "{{ s }} {{ i }} {{ n }} {{ b }} {{ a | join(',') }} {{ o.k }}",
        ),
    );
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let prompt = registry.get("types", None).unwrap();
    let good = json!({"s": "x", "i": -4, "n": 1.5, "b": true, "a": [1, "y"], "o": {"k": "v"}});
    let request = prompt.render(&vars(good.clone())).unwrap();
    // Booleans print as Jinja prints them.
    assert_eq!(texts(&request)[0].1, "x -4 1.5 True 1,y v");
    // An integer is a number too.
    let mut ok = vars(good.clone());
    ok.insert("n".into(), json!(2));
    prompt.render(&ok).unwrap();

    for (name, bad, expected, got) in [
        ("s", json!(["x"]), VarType::String, "array"),
        ("i", json!(true), VarType::Integer, "boolean"),
        ("n", json!("1"), VarType::Number, "string"),
        ("b", json!(1), VarType::Boolean, "integer"),
        ("a", json!({"0": 1}), VarType::Array, "object"),
        ("o", json!([]), VarType::Object, "array"),
    ] {
        let mut given = vars(good.clone());
        given.insert(name.into(), bad);
        assert_eq!(
            prompt.render(&given).unwrap_err(),
            RenderError::WrongType {
                name: name.into(),
                expected,
                got
            }
        );
    }
}

#[test]
fn a_value_that_looks_like_a_template_stays_literal() {
    let dir = summarize_dir();
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let prompt = registry.get("summarize", None).unwrap();
    let hostile = "{{ 7 * 7 }} {% for x in range(3) %}loop{% endfor %} {# c #} {{ text }} {% raw %}";
    let request = prompt
        .render(&vars(json!({"text": hostile, "audience": "{{ tone }}"})))
        .unwrap();
    let messages = texts(&request);
    assert_eq!(messages[1].1, format!("Summarize in 3 sentences:\n{hostile}"));
    assert!(!messages[1].1.contains("49"));
    assert!(messages[0].1.ends_with("Write for {{ tone }}."), "{}", messages[0].1);
}

#[test]
fn values_are_not_html_escaped() {
    let dir = TempDir::new("escape");
    dir.write(
        "page.html.toml",
        &simple("escape", 1, "[variables.x]\ntype = \"string\"\n", "{{ x }}"),
    );
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let request = registry
        .get("escape", None)
        .unwrap()
        .render(&vars(json!({"x": "<b>&'\""})))
        .unwrap();
    assert_eq!(texts(&request)[0].1, "<b>&'\"");
}

#[test]
fn a_message_rendering_empty_is_left_out() {
    let dir = TempDir::new("optional");
    dir.write(
        "p.toml",
        r#"name = "optional"
version = 1
description = "d"
model = "demo"
[variables.context]
type = "string"
required = false
[variables.q]
type = "string"
[[messages]]
role = "system"
content = "{% if context %}Context: {{ context }}{% endif %}"
[[messages]]
role = "user"
content = "{{ q }}"
"#,
    );
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let prompt = registry.get("optional", None).unwrap();
    let request = prompt.render(&vars(json!({"q": "hi"}))).unwrap();
    assert_eq!(texts(&request), vec![(Role::User, "hi".to_owned())]);
    let request = prompt.render(&vars(json!({"q": "hi", "context": "c"}))).unwrap();
    assert_eq!(request.messages.len(), 2);
}

// === sandbox bounds ===

#[test]
fn a_long_loop_runs_out_of_fuel() {
    let dir = TempDir::new("fuel");
    dir.write(
        "p.toml",
        &simple(
            "spin",
            1,
            "",
            "{% for i in range(10000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}done",
        ),
    );
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let started = std::time::Instant::now();
    let err = registry.get("spin", None).unwrap().render(&Map::new()).unwrap_err();
    match &err {
        RenderError::Render { message } => assert!(message.contains("fuel"), "{message}"),
        other => panic!("expected a render error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "stopped early");
}

#[test]
fn output_beyond_the_bound_is_refused() {
    let dir = TempDir::new("size");
    dir.write("p.toml", &simple("big", 1, "", "{{ 'x' * 300000 }}"));
    // A value too large to build runs out of fuel before it is allocated.
    dir.write("h.toml", &simple("huge", 1, "", "{{ 'x' * 100000000 }}"));
    // Many small writes cross the bound as well: 2,000 iterations of 200 bytes.
    dir.write(
        "q.toml",
        &simple(
            "many",
            1,
            "[variables.s]\ntype = \"string\"\n",
            "{% for i in range(2000) %}{{ s }}{% endfor %}",
        ),
    );
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let err = registry.get("big", None).unwrap().render(&Map::new()).unwrap_err();
    assert_eq!(
        err,
        RenderError::TooLarge {
            limit: MAX_RENDERED_BYTES
        }
    );
    assert_eq!(err.to_string(), "the rendered prompt exceeds the limit of 262144 bytes");
    let err = registry.get("huge", None).unwrap().render(&Map::new()).unwrap_err();
    assert!(
        matches!(&err, RenderError::Render { message } if message.contains("fuel")),
        "{err:?}"
    );
    let err = registry
        .get("many", None)
        .unwrap()
        .render(&vars(json!({"s": "y".repeat(200)})))
        .unwrap_err();
    assert_eq!(
        err,
        RenderError::TooLarge {
            limit: MAX_RENDERED_BYTES
        }
    );
}

#[test]
fn the_bound_is_shared_by_all_messages() {
    let dir = TempDir::new("shared-bound");
    let half = MAX_RENDERED_BYTES / 2 + 10;
    dir.write(
        "p.toml",
        &format!(
            "name = \"two\"\nversion = 1\ndescription = \"d\"\nmodel = \"demo\"\n\
             [[messages]]\nrole = \"system\"\ncontent = \"{{{{ 'a' * {half} }}}}\"\n\
             [[messages]]\nrole = \"user\"\ncontent = \"{{{{ 'b' * {half} }}}}\"\n"
        ),
    );
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let err = registry.get("two", None).unwrap().render(&Map::new()).unwrap_err();
    assert_eq!(
        err,
        RenderError::TooLarge {
            limit: MAX_RENDERED_BYTES
        }
    );
}

#[test]
fn templates_cannot_include_files() {
    let dir = TempDir::new("include");
    dir.write("secret.txt", "SECRET");
    dir.write("p.toml", &simple("inc", 1, "", "{% include 'secret.txt' %}"));
    let err = load_err(&dir);
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(
        err.to_string().contains("p.toml:8: messages[0].content does not parse"),
        "{err}"
    );
}

#[test]
fn a_runtime_error_cites_the_message_and_line() {
    let dir = TempDir::new("runtime");
    dir.write(
        "p.toml",
        &simple(
            "attr",
            1,
            "[variables.o]\ntype = \"object\"\n",
            "first line\\n{{ o.missing.deeper }}",
        ),
    );
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let err = registry
        .get("attr", None)
        .unwrap()
        .render(&vars(json!({"o": {}})))
        .unwrap_err();
    let RenderError::Render { message } = &err else {
        panic!("expected a render error, got {err:?}");
    };
    assert!(
        message.contains("messages[0]") && message.contains("line 2"),
        "{message}"
    );
}

// === load errors, each with file and line ===

#[test]
fn toml_syntax_error_has_file_and_line() {
    let dir = TempDir::new("toml");
    let path = dir.write(
        "broken.toml",
        "name = \"x\"\nversion = 1\ndescription = \"d\nmodel = \"m\"\n",
    );
    let err = load_err(&dir);
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].file, path);
    assert_eq!(err.problems[0].line, Some(3), "{err}");
    assert!(err.to_string().starts_with(&format!("{}:3: ", path.display())), "{err}");
}

#[test]
fn unknown_keys_are_rejected_at_their_line() {
    let dir = TempDir::new("unknown-key");
    dir.write(
        "p.toml",
        "name = \"x\"\nversion = 1\ndescription = \"d\"\nmodel = \"m\"\n\
         [variables.a]\ntype = \"string\"\nrequird = false\n[[messages]]\nrole = \"user\"\ncontent = \"{{ a }}\"\n",
    );
    let err = load_err(&dir);
    assert_eq!(err.problems[0].line, Some(7), "{err}");
    assert!(err.to_string().contains("requird"), "{err}");

    let dir = TempDir::new("unknown-top-key");
    dir.write("p.toml", &format!("temprature = 1\n{}", simple("x", 1, "", "hi")));
    let err = load_err(&dir);
    assert_eq!(err.problems[0].line, Some(1), "{err}");
    assert!(err.to_string().contains("temprature"), "{err}");
}

#[test]
fn a_template_that_does_not_parse_fails_with_file_and_line() {
    let dir = TempDir::new("parse");
    let path = dir.write(
        "bad.toml",
        r#"name = "bad"
version = 1
description = "d"
model = "demo"

[variables.text]
type = "string"

[[messages]]
role = "system"
content = "fine"

[[messages]]
role = "user"
content = """
Line one {{ text }}
Line two {% if text %} never closed
Line three
"""
"#,
    );
    let err = load_err(&dir);
    assert_eq!(err.problems.len(), 1, "{err}");
    let problem = &err.problems[0];
    assert_eq!(problem.file, path);
    // The template starts on line 16; the `if` is never closed, which minijinja sees at the end.
    let line = problem.line.unwrap();
    assert!((17..=18).contains(&line), "{err}");
    assert!(
        problem.message.starts_with("messages[1].content does not parse"),
        "{err}"
    );

    // A mistake on the template's own first line of a single-line string.
    let dir = TempDir::new("parse-inline");
    dir.write("p.toml", &simple("p", 1, "", "{{ unclosed"));
    let err = load_err(&dir);
    assert_eq!(err.problems[0].line, Some(8), "{err}");
}

#[test]
fn an_undeclared_variable_fails_at_load_with_its_line() {
    let dir = TempDir::new("undeclared");
    let path = dir.write(
        "p.toml",
        r#"name = "p"
version = 1
description = "d"
model = "demo"

[variables.text]
type = "string"

[[messages]]
role = "user"
content = """
Summarize {{ text }}
in the style of {{ styel }}.
{% for x in items %}{{ x }}{% endfor %}{{ range(2) | join }}
"""
"#,
    );
    let err = load_err(&dir);
    let rendered = err.to_string();
    assert_eq!(err.problems.len(), 2, "{rendered}");
    assert_eq!(
        err.problems[0].to_string(),
        format!(
            "{}:13: messages[0].content uses `styel`, which is not declared under [variables]",
            path.display()
        )
    );
    assert_eq!(err.problems[1].line, Some(14), "{rendered}");
    assert!(err.problems[1].message.contains("`items`"), "{rendered}");
}

#[test]
fn lines_follow_toml_escapes_and_continuations() {
    let dir = TempDir::new("lines");
    dir.write(
        "p.toml",
        r#"name = "p"
version = 1
description = "d"
model = "demo"
[[messages]]
role = "user"
content = """
one \
two {{ a }}
three\nfour {{ b }}
five {{ c }}
"""
[[messages]]
role = "user"
content = "x\n{{ d }}"
[[messages]]
role = "user"
content = '''
literal \n {{ e }}
'''
"#,
    );
    let err = load_err(&dir);
    let found: Vec<_> = err
        .problems
        .iter()
        .map(|p| (p.line.unwrap(), p.message.split('`').nth(1).unwrap().to_owned()))
        .collect();
    let expected: Vec<_> = [(8, "a"), (10, "b"), (11, "c"), (15, "d"), (19, "e")]
        .into_iter()
        .map(|(line, name)| (line, name.to_owned()))
        .collect();
    assert_eq!(found, expected, "{err}");
}

#[test]
fn duplicate_versions_are_refused() {
    let dir = TempDir::new("duplicate");
    dir.write("a.toml", &simple("same", 2, "", "one"));
    let second = dir.write("sub/b.toml", &simple("same", 2, "", "two"));
    dir.write("c.toml", &simple("same", 1, "", "older"));
    let err = load_err(&dir);
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].file, second);
    assert_eq!(err.problems[0].line, Some(2));
    assert!(
        err.problems[0]
            .message
            .contains("prompt `same` version 2 is already defined in")
            && err.problems[0].message.contains("a.toml"),
        "{err}"
    );
}

#[test]
fn bad_defaults_are_refused() {
    let dir = TempDir::new("defaults");
    dir.write(
        "p.toml",
        r#"name = "p"
version = 1
description = "d"
model = "demo"

[variables.n]
type = "integer"
default = "three"

[variables.tone]
type = "string"
enum = ["a", "b"]
default = "c"

[variables.both]
type = "string"
required = true
default = "x"

[variables.f]
type = "integer"
default = 1.5

[variables.e]
type = "integer"
enum = ["1"]

[[messages]]
role = "user"
content = "{{ n }}{{ tone }}{{ both }}{{ f }}{{ e }}"
"#,
    );
    let err = load_err(&dir);
    let lines: Vec<_> = err.problems.iter().map(|p| (p.line, p.message.as_str())).collect();
    assert_eq!(
        lines,
        vec![
            (
                Some(8),
                "invalid default: variable `n` must be of type integer, got string"
            ),
            (Some(13), "invalid default: variable `tone` must be one of a, b"),
            (
                Some(18),
                "variable `both`: a variable with a default cannot be required"
            ),
            (
                Some(22),
                "invalid default: variable `f` must be of type integer, got number"
            ),
            (Some(26), "variable `e`: `enum` is only for strings"),
        ],
        "{err}"
    );
}

#[test]
fn bad_parameters_and_header_fields_are_refused() {
    let dir = TempDir::new("params");
    dir.write(
        "p.toml",
        r#"name = "has space"
version = 0
description = "d"
model = "demo"

[parameters]
temperature = "hot"
stream = true

[[messages]]
role = "tool"
content = "x"
"#,
    );
    let err = load_err(&dir);
    let lines: Vec<_> = err.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![Some(1), Some(2), Some(7), Some(8), Some(11)], "{err}");
    let text = err.to_string();
    assert!(text.contains("`name` must be"), "{text}");
    assert!(text.contains("`version` must be an integer of 1 or more"), "{text}");
    assert!(text.contains("parameter `temperature`"), "{text}");
    assert!(text.contains("parameter `stream` cannot be set"), "{text}");
    assert!(text.contains("role `tool`"), "{text}");
}

#[test]
fn problems_in_several_files_are_all_reported() {
    let dir = TempDir::new("several");
    dir.write("a.toml", "name = ");
    dir.write("b.toml", &simple("b", 1, "", "{{ nope }}"));
    dir.write("c.toml", &simple("c", 1, "", "fine"));
    let err = load_err(&dir);
    assert_eq!(err.problems.len(), 2, "{err}");
    assert_eq!(err.to_string().lines().count(), 2);
    assert!(err.problems[0].file.ends_with("a.toml"));
    assert!(err.problems[1].file.ends_with("b.toml"));
}

#[test]
fn empty_and_missing_directories_are_empty_registries() {
    let dir = TempDir::new("empty");
    dir.write("README.md", "# not a template");
    dir.write(".hidden.toml", "not = [valid");
    assert!(PromptRegistry::load(dir.path()).unwrap().is_empty());
    let missing = dir.path().join("nope");
    assert!(PromptRegistry::load(&missing).unwrap().is_empty());
    let file = dir.write("plain.txt", "x");
    let err = PromptRegistry::load(&file).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn unknown_models_are_reported_by_the_callers_check() {
    let dir = summarize_dir();
    let registry = PromptRegistry::load(dir.path()).unwrap();
    assert_eq!(registry.models().into_iter().collect::<Vec<_>>(), vec!["demo"]);
    registry.check_models(|m| m == "demo").unwrap();
    let err = registry.check_models(|_| false).unwrap_err();
    assert_eq!(err.problems[0].line, Some(4));
    assert!(
        err.to_string()
            .ends_with("summarize.toml:4: prompt `summarize` version 1 calls model `demo`, which is not configured"),
        "{err}"
    );
}

// === versions, listing, schemas ===

#[test]
fn the_newest_version_is_the_default_and_older_ones_can_be_pinned() {
    let dir = TempDir::new("versions");
    dir.write("greet.toml", &simple("greet", 1, "", "v1"));
    dir.write("greet.v3.toml", &simple("greet", 3, "", "v3"));
    dir.write("nested/greet.v2.toml", &simple("greet", 2, "", "v2"));
    dir.write("other.toml", &simple("another", 1, "", "x"));
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let text = |version| {
        let prompt = registry.get("greet", version).unwrap();
        texts(&prompt.render(&Map::new()).unwrap())[0].1.clone()
    };
    assert_eq!(text(None), "v3");
    assert_eq!(text(Some(1)), "v1");
    assert_eq!(text(Some(2)), "v2");
    assert!(registry.get("greet", Some(4)).is_none());
    assert!(registry.get("nope", None).is_none());

    let list = registry.list();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].name, "another");
    assert_eq!(list[1].name, "greet");
    assert_eq!(list[1].versions, vec![1, 2, 3]);
    assert_eq!(list[1].latest, 3);
    assert_eq!(list[1].model, "demo");
    assert_eq!(registry.len(), 2);
    assert_eq!(registry.iter().count(), 4);
}

#[test]
fn variables_schema_is_json_schema() {
    let dir = summarize_dir();
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let schema = registry.get("summarize", None).unwrap().variables_schema();
    assert_eq!(
        schema,
        json!({
            "type": "object",
            "properties": {
                "audience": {"type": "string"},
                "sentences": {"type": "integer", "description": "How many sentences.", "default": 3},
                "text": {"type": "string", "description": "The text."},
                "tone": {"type": "string", "enum": ["neutral", "casual"], "default": "neutral"},
            },
            "required": ["text"],
            "additionalProperties": false,
        })
    );
}

#[test]
fn openapi_lists_one_operation_per_prompt() {
    let dir = summarize_dir();
    dir.write("cs.toml", &simple("classify-sentiment", 1, "", "x"));
    dir.write("cs2.toml", &simple("classify-sentiment", 2, "", "x"));
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let doc = registry.openapi(Some("http://127.0.0.1:8080"));
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], "http://127.0.0.1:8080");
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(
        paths.keys().collect::<Vec<_>>(),
        vec!["/v1/prompts/classify-sentiment", "/v1/prompts/summarize"]
    );
    let op = &doc["paths"]["/v1/prompts/summarize"]["post"];
    assert_eq!(op["operationId"], "summarize");
    let body = &op["requestBody"]["content"]["application/json"]["schema"];
    let mut variables = body["properties"]["variables"].clone();
    variables.as_object_mut().unwrap().remove("description");
    assert_eq!(variables, registry.get("summarize", None).unwrap().variables_schema());
    assert_eq!(body["properties"]["version"]["type"], "integer");
    assert_eq!(body["properties"]["stream"]["type"], "boolean");
    assert_eq!(body["required"], json!(["variables"]));
    assert!(op["responses"]["200"]["content"]["application/json"].is_object());

    let op = &doc["paths"]["/v1/prompts/classify-sentiment"]["post"];
    assert_eq!(op["operationId"], "classify_sentiment");
    let body = &op["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body["properties"]["version"]["enum"], json!([1, 2]));
    assert_eq!(
        body["required"],
        json!([]),
        "no required variable, no required body field"
    );

    let doc = PromptRegistry::empty().openapi(None);
    assert!(doc.get("servers").is_none());
    assert_eq!(doc["paths"], json!({}));
}

// === reload ===

#[test]
fn reload_picks_up_edits_and_keeps_the_last_good_registry() {
    let dir = TempDir::new("reload");
    let path = dir.write("p.toml", &simple("p", 1, "", "first"));
    let watcher = PromptWatcher::new(dir.path()).unwrap();
    let before = watcher.current();
    let render = |registry: &PromptRegistry, name| {
        let prompt = registry.get(name, None).unwrap();
        texts(&prompt.render(&Map::new()).unwrap())[0].1.clone()
    };
    assert_eq!(render(&before, "p"), "first");

    std::fs::write(&path, simple("p", 1, "", "second, longer")).unwrap();
    watcher.reload_now().unwrap();
    assert_eq!(render(&watcher.current(), "p"), "second, longer");
    // A registry taken before the reload is unchanged: requests in flight keep theirs.
    assert_eq!(render(&before, "p"), "first");

    std::fs::write(&path, simple("p", 1, "", "{% if %}")).unwrap();
    let err = watcher.reload_now().unwrap_err();
    assert!(err.to_string().contains("p.toml:8:"), "{err}");
    assert_eq!(render(&watcher.current(), "p"), "second, longer");

    // A new file is picked up once the broken one is fixed.
    std::fs::write(&path, simple("p", 1, "", "third")).unwrap();
    dir.write("q.toml", &simple("q", 1, "", "new"));
    watcher.reload_now().unwrap();
    assert_eq!(render(&watcher.current(), "p"), "third");
    assert_eq!(render(&watcher.current(), "q"), "new");
}

#[test]
fn reload_applies_the_model_check() {
    let dir = TempDir::new("reload-models");
    let path = dir.write("p.toml", &simple("p", 1, "", "x"));
    let watcher = PromptWatcher::with_model_check(dir.path(), |m| m == "demo").unwrap();
    std::fs::write(&path, simple("p", 2, "", "x").replace("\"demo\"", "\"gpt-9\"")).unwrap();
    let err = watcher.reload_now().unwrap_err();
    assert!(err.to_string().contains("`gpt-9`, which is not configured"), "{err}");
    assert_eq!(watcher.current().list()[0].latest, 1);

    let err = PromptWatcher::with_model_check(dir.path(), |m| m == "demo").unwrap_err();
    assert!(err.to_string().contains("p.toml:4:"), "{err}");
}

#[test]
fn reload_if_changed_only_reloads_on_change() {
    let dir = TempDir::new("poll");
    let path = dir.write("p.toml", &simple("p", 1, "", "one"));
    let watcher = PromptWatcher::new(dir.path()).unwrap();
    assert!(!watcher.reload_if_changed());
    std::fs::write(&path, simple("p", 1, "", "{{ broken")).unwrap();
    assert!(watcher.reload_if_changed());
    // The broken edit is tried once, not at every poll.
    assert!(!watcher.reload_if_changed());
    assert_eq!(watcher.current().len(), 1);
    std::fs::remove_file(&path).unwrap();
    assert!(watcher.reload_if_changed());
    assert!(watcher.current().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_in_the_background() {
    let dir = TempDir::new("watch");
    let path = dir.write("p.toml", &simple("p", 1, "", "x"));
    let watcher = Arc::new(PromptWatcher::new(dir.path()).unwrap());
    let task = tokio::spawn(Arc::clone(&watcher).watch(Duration::from_millis(20)));

    std::fs::write(&path, simple("p", 2, "", "a longer body")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while watcher.current().list()[0].latest != 2 {
        assert!(tokio::time::Instant::now() < deadline, "no reload seen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A broken edit keeps version 2 serving.
    std::fs::write(&path, "name = \"p\"\nversion = ").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(watcher.current().list()[0].latest, 2);
    task.abort();
}

#[test]
fn registry_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PromptRegistry>();
    assert_send_sync::<PromptWatcher>();
}

// === the shipped examples ===

#[test]
fn shipped_prompts_load_and_render() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../prompts");
    let registry = PromptRegistry::load(&dir).unwrap_or_else(|err| panic!("{err}"));
    let names: Vec<_> = registry.list().into_iter().map(|s| s.name).collect();
    for expected in ["classify-sentiment", "extract-json", "summarize", "translate"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    registry.check_models(|m| m == "sluice-demo").unwrap();

    let render = |name: &str, variables: Value| {
        registry
            .get(name, None)
            .unwrap()
            .render(&vars(variables))
            .unwrap_or_else(|err| panic!("{name}: {err}"))
    };
    let request = render("summarize", json!({"text": "Sluice is a gateway."}));
    assert!(texts(&request).iter().any(|(_, t)| t.contains("Sluice is a gateway.")));
    let request = render("translate", json!({"text": "Bonjour", "target_language": "English"}));
    assert!(texts(&request).iter().any(|(_, t)| t.contains("English")));
    let request = render("classify-sentiment", json!({"text": "I love it"}));
    assert!(texts(&request).iter().any(|(_, t)| t.contains("positive")));
    let request = render("extract-json", json!({"text": "Ada Lovelace, ada@example.com"}));
    let format = request.response_format.as_ref().unwrap();
    assert_eq!(format["type"], "json_schema");
    assert!(format["json_schema"]["schema"]["properties"].is_object());
    for prompt in registry.iter() {
        assert!(!prompt.description().is_empty());
        assert_eq!(prompt.model(), "sluice-demo");
    }
}

// === lifecycle and access ===

#[test]
fn the_default_is_the_newest_active_version_and_lifecycles_load() {
    use crate::{Access, Status};
    let dir = TempDir::new("lifecycle");
    dir.write(
        "v1.toml",
        &simple(
            "greet",
            1,
            "status = \"deprecated\"\nsunset = 2027-01-31\ndeprecated_since = 2026-06-01T00:00:00Z\nreplaced_by = 2\n",
            "v1",
        ),
    );
    dir.write("v2.toml", &simple("greet", 2, "access = \"approval\"\n", "v2"));
    dir.write(
        "v3.toml",
        &simple(
            "greet",
            3,
            "status = \"retired\"\nreplaced_by = \"greet@2\"\naccess = \"private\"\n",
            "v3",
        ),
    );
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let default = registry.get("greet", None).unwrap();
    assert_eq!((default.version(), default.status()), (2, Status::Active));
    let v1 = registry.get("greet", Some(1)).unwrap().lifecycle();
    assert_eq!(v1.status, Status::Deprecated);
    assert_eq!(v1.deprecation_header().unwrap(), "@1780272000");
    assert_eq!(v1.sunset_header().unwrap(), "Sun, 31 Jan 2027 00:00:00 GMT");
    assert_eq!(
        v1.link_header().unwrap(),
        "</v1/prompts/greet?version=2>; rel=\"successor-version\""
    );
    assert_eq!(registry.get("greet", Some(3)).unwrap().status(), Status::Retired);
    // The newest version's file sets the access of the name.
    assert_eq!(registry.access("greet"), Some(Access::Private));
    let summary = &registry.list()[0];
    assert_eq!(
        (summary.latest, summary.default, summary.status),
        (3, 2, Status::Active)
    );
    let doc = registry.openapi(None);
    let operation = &doc["paths"]["/v1/prompts/greet"]["post"];
    assert_eq!(operation["deprecated"], json!(false));
    let pinnable = &operation["requestBody"]["content"]["application/json"]["schema"]["properties"]["version"]["enum"];
    assert_eq!(pinnable, &json!([1, 2]), "a retired version is not offered");
}

#[test]
fn a_prompt_with_no_active_version_is_deprecated_in_openapi() {
    let dir = TempDir::new("deprecated-only");
    dir.write(
        "v1.toml",
        &simple("old", 1, "status = \"deprecated\"\nreplaced_by = \"new\"\n", "v1"),
    );
    dir.write("new.toml", &simple("new", 1, "", "n"));
    let registry = PromptRegistry::load(dir.path()).unwrap();
    let old = registry.get("old", None).unwrap();
    assert_eq!(old.version(), 1);
    // Without `deprecated_since`, the file's modification time dates the deprecation.
    assert!(old.lifecycle().deprecated_since.is_some());
    let doc = registry.openapi(None);
    let operation = &doc["paths"]["/v1/prompts/old"]["post"];
    assert_eq!(operation["deprecated"], json!(true));
    assert!(operation["description"].as_str().unwrap().contains("Use `new` instead"));
    assert_eq!(doc["paths"]["/v1/prompts/new"]["post"]["deprecated"], json!(false));
}

#[test]
fn bad_lifecycles_are_cited_by_line() {
    let dir = TempDir::new("bad-lifecycle");
    dir.write(
        "a.toml",
        &simple("a", 1, "status = \"retired\"\nreplaced_by = \"ghost@4\"\n", "x"),
    );
    dir.write("b.toml", &simple("b", 1, "status = \"sunsetting\"\n", "x"));
    dir.write("c.toml", &simple("c", 2, "replaced_by = 2\n", "x"));
    dir.write("d.toml", &simple("d", 1, "sunset = 12:00:00\n", "x"));
    let text = load_err(&dir).to_string();
    assert!(
        text.contains("a.toml:6: prompt `a` version 1 is replaced by `ghost` version 4, which is not loaded"),
        "{text}"
    );
    assert!(text.contains("b.toml:5:") && text.contains("sunsetting"), "{text}");
    assert!(
        text.contains("c.toml:5: `replaced_by` names this very version"),
        "{text}"
    );
    assert!(text.contains("d.toml:5: `sunset`: 12:00:00 is not a date"), "{text}");
}
