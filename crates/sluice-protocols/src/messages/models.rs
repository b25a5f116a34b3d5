//! Model names on the Messages API: the Anthropic model ids clients send, mapped to Sluice's model names,
//! and `GET /v1/models` in Anthropic's format.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Serialize;

/// Anthropic model ids (as Claude Code and the Anthropic SDKs send them) mapped to the names of models
/// configured in Sluice. Built from configuration; [`ModelAliases::resolve`] is the lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelAliases {
    aliases: HashMap<String, String>,
}

impl ModelAliases {
    /// Aliases from `(anthropic_id, sluice_model)` pairs. An id may be dated (`claude-sonnet-4-5-20250929`)
    /// or not (`claude-sonnet-4-5`); an undated id also matches its dated forms.
    pub fn new<I, A, M>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (A, M)>,
        A: Into<String>,
        M: Into<String>,
    {
        Self {
            aliases: pairs.into_iter().map(|(a, m)| (a.into(), m.into())).collect(),
        }
    }

    /// Whether there are no aliases.
    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty()
    }

    /// The Sluice model a requested id names: the alias of the id as sent, else the alias of the id
    /// without its date or `-latest` suffix (`claude-sonnet-4-5-20250929` and `claude-sonnet-4-5-latest`
    /// both find `claude-sonnet-4-5`). `None` when no alias matches; the caller then tries the id as a
    /// Sluice model name.
    pub fn resolve(&self, requested: &str) -> Option<&str> {
        if let Some(model) = self.aliases.get(requested) {
            return Some(model);
        }
        let base = undated(requested);
        (base.len() < requested.len())
            .then(|| self.aliases.get(base))
            .flatten()
            .map(String::as_str)
    }
}

/// `id` without a trailing `-YYYYMMDD` date or `-latest`.
fn undated(id: &str) -> &str {
    if let Some(base) = id.strip_suffix("-latest") {
        return base;
    }
    match id.rsplit_once('-') {
        Some((base, date)) if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => id,
    }
}

#[derive(Serialize)]
struct ModelPage<'a> {
    data: Vec<ModelInfo<'a>>,
    has_more: bool,
    first_id: Option<&'a str>,
    last_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ModelInfo<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    display_name: &'a str,
    created_at: &'a str,
    lifecycle: &'static str,
}

/// `GET /v1/models` in Anthropic's format, for requests that carry `anthropic-version`:
/// `{"data": [{"type": "model", "id", "display_name", "created_at", "lifecycle"}], "has_more", "first_id",
/// "last_id"}`, in the order given, all on one page. `created_at` (Unix seconds; the gateway reports when
/// it loaded its configuration) is written as RFC 3339, as Anthropic does.
pub fn model_list<'a>(names: impl IntoIterator<Item = &'a str>, created_at: u64) -> Bytes {
    let created = rfc3339(created_at);
    let data: Vec<ModelInfo<'_>> = names
        .into_iter()
        .map(|id| ModelInfo {
            kind: "model",
            id,
            display_name: id,
            created_at: &created,
            lifecycle: "active",
        })
        .collect();
    let page = ModelPage {
        first_id: data.first().map(|m| m.id),
        last_id: data.last().map(|m| m.id),
        has_more: false,
        data,
    };
    // Plain strings and numbers: serialising cannot fail; should it ever, an empty page stands in.
    serde_json::to_vec(&page)
        .map(Bytes::from)
        .unwrap_or_else(|_| Bytes::from_static(br#"{"data":[],"has_more":false,"first_id":null,"last_id":null}"#))
}

/// Unix seconds as an RFC 3339 UTC timestamp (`2025-09-29T00:00:00Z`).
fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_code_ids_find_their_configured_model() {
        let aliases = ModelAliases::new([
            ("claude-sonnet-4-5", "sonnet"),
            ("claude-opus-4-1-20250805", "opus"),
            ("claude-3-5-haiku", "haiku"),
        ]);
        assert_eq!(aliases.resolve("claude-sonnet-4-5-20250929"), Some("sonnet"));
        assert_eq!(aliases.resolve("claude-sonnet-4-5"), Some("sonnet"));
        assert_eq!(aliases.resolve("claude-opus-4-1-20250805"), Some("opus"));
        // A dated alias is that version only.
        assert_eq!(aliases.resolve("claude-opus-4-1"), None);
        assert_eq!(aliases.resolve("claude-opus-4-1-20250101"), None);
        assert_eq!(aliases.resolve("claude-3-5-haiku-latest"), Some("haiku"));
        assert_eq!(aliases.resolve("gpt-4o"), None);
        // Not a date: eight characters but not digits, or another length.
        assert_eq!(aliases.resolve("claude-sonnet-4-5-2025092x"), None);
        assert_eq!(aliases.resolve("claude-sonnet-4-5-2025"), None);
        assert_eq!(aliases.resolve(""), None);
        assert!(ModelAliases::default().is_empty());
    }

    #[test]
    fn model_list_is_one_anthropic_page() {
        // The shape of the List Models example (platform.claude.com/docs/en/api/models-list).
        let expected: serde_json::Value = serde_json::from_str(include_str!(
            "../../../../tests/fixtures/anthropic-messages/models_list.json"
        ))
        .unwrap();
        let body: serde_json::Value =
            serde_json::from_slice(&model_list(["claude-sonnet-4-5", "fast"], 1_759_104_000)).unwrap();
        assert_eq!(body, expected);
        let empty: serde_json::Value = serde_json::from_slice(&model_list([], 0)).unwrap();
        assert_eq!(
            empty,
            serde_json::json!({"data": [], "has_more": false, "first_id": null, "last_id": null})
        );
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_164_800), "2024-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_755_780_059), "2025-08-21T12:40:59Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
