//! A prompt version's lifecycle and who may use a prompt: `status`, `sunset`, `replaced_by`,
//! `deprecated_since` and `access` in the template file, and the HTTP header values a deprecated version
//! answers with (`Deprecation`, RFC 9745; `Sunset`, RFC 8594; `Link` rel="successor-version").

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Where a version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Served, and the default when it is the newest active version.
    #[default]
    Active,
    /// Still served when pinned (or when no version is active), with `Deprecation`, `Sunset` and `Link`
    /// headers pointing at its replacement.
    Deprecated,
    /// No longer served: a call answers 410 naming the replacement.
    Retired,
}

impl Status {
    /// The name used in template files and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Deprecated => "deprecated",
            Status::Retired => "retired",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may call a service (a prompt, or a model in the configuration): every tenant, tenants whose
/// subscription an admin approved, or only tenants an admin granted it to. For a prompt, the newest
/// version's file sets it for the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Every tenant (within its own allow-list).
    #[default]
    Open,
    /// A tenant subscribes and an admin approves.
    Approval,
    /// Only tenants an admin granted it to.
    Private,
}

impl Access {
    /// The name used in template files and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Approval => "approval",
            Access::Private => "private",
        }
    }
}

/// What replaces a version: another version of the same prompt, or another prompt (its default
/// version, or a pinned one). Written `replaced_by = 2`, `"other"` or `"other@2"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replacement {
    /// The prompt's name.
    pub name: String,
    /// The version, `None` for the prompt's default.
    pub version: Option<u32>,
}

impl Replacement {
    /// Reads `replaced_by` for a version of prompt `own_name`.
    pub(crate) fn parse(own_name: &str, value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::Integer(v) => u32::try_from(*v)
                .ok()
                .filter(|v| *v >= 1)
                .map(|version| Replacement {
                    name: own_name.to_owned(),
                    version: Some(version),
                })
                .ok_or_else(|| format!("`replaced_by` version must be 1 or more (got {v})")),
            toml::Value::String(text) => {
                let (name, version) = match text.split_once('@') {
                    Some((name, version)) => {
                        let version = version.parse::<u32>().ok().filter(|v| *v >= 1).ok_or_else(|| {
                            format!("`replaced_by` {text:?}: the version after `@` must be 1 or more")
                        })?;
                        (name, Some(version))
                    }
                    None => (text.as_str(), None),
                };
                if name.is_empty() {
                    return Err(format!("`replaced_by` {text:?} names no prompt"));
                }
                Ok(Replacement {
                    name: name.to_owned(),
                    version,
                })
            }
            other => Err(format!(
                "`replaced_by` must be a version number, a prompt name or `name@version` (got {})",
                other.type_str()
            )),
        }
    }

    /// Where the replacement is described: `/v1/prompts/{name}`, with `?version=N` when pinned.
    pub fn path(&self) -> String {
        match self.version {
            Some(version) => format!("/v1/prompts/{}?version={version}", self.name),
            None => format!("/v1/prompts/{}", self.name),
        }
    }
}

impl fmt::Display for Replacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(version) => write!(f, "`{}` version {version}", self.name),
            None => write!(f, "`{}`", self.name),
        }
    }
}

/// A version's lifecycle, as its file declares it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Lifecycle {
    /// Where it stands.
    pub status: Status,
    /// When it stops being served (or stopped), if announced.
    pub sunset: Option<DateTime<Utc>>,
    /// What callers should move to.
    pub replaced_by: Option<Replacement>,
    /// When it was deprecated: `deprecated_since` in the file, else the file's modification time.
    pub deprecated_since: Option<DateTime<Utc>>,
}

impl Lifecycle {
    /// The `Deprecation` header (RFC 9745: a structured-field date, `@` and Unix seconds) for a
    /// deprecated version; `None` otherwise.
    pub fn deprecation_header(&self) -> Option<String> {
        (self.status == Status::Deprecated).then(|| format!("@{}", self.deprecated_since.map_or(0, |t| t.timestamp())))
    }

    /// The `Sunset` header (RFC 8594: an HTTP-date), when a sunset is set.
    pub fn sunset_header(&self) -> Option<String> {
        self.sunset.map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
    }

    /// The `Link` header to the replacement (`rel="successor-version"`), when there is one.
    pub fn link_header(&self) -> Option<String> {
        self.replaced_by
            .as_ref()
            .map(|r| format!("<{}>; rel=\"successor-version\"", r.path()))
    }
}

/// A TOML date or date-time as a UTC instant: a bare date is its midnight UTC; a local date-time is
/// taken as UTC.
pub(crate) fn toml_instant(value: &toml::value::Datetime) -> Result<DateTime<Utc>, String> {
    let text = value.to_string();
    if let Ok(t) = DateTime::parse_from_rfc3339(&text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(&text, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    if let Ok(local) = chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(local.and_utc());
    }
    Err(format!(
        "{text} is not a date (write 2026-12-31 or 2026-12-31T00:00:00Z)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_the_rfcs() {
        let life = Lifecycle {
            status: Status::Deprecated,
            sunset: Some(
                DateTime::parse_from_rfc3339("2026-12-31T00:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
            replaced_by: Some(Replacement {
                name: "summarize".into(),
                version: Some(2),
            }),
            deprecated_since: Some(
                DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
        };
        assert_eq!(life.deprecation_header().unwrap(), "@1767225600");
        assert_eq!(life.sunset_header().unwrap(), "Thu, 31 Dec 2026 00:00:00 GMT");
        assert_eq!(
            life.link_header().unwrap(),
            "</v1/prompts/summarize?version=2>; rel=\"successor-version\""
        );
        let active = Lifecycle::default();
        assert!(active.deprecation_header().is_none() && active.link_header().is_none());
    }

    #[test]
    fn replacements_parse_or_say_why_not() {
        let r = Replacement::parse("a", &toml::Value::Integer(3)).unwrap();
        assert_eq!((r.name.as_str(), r.version), ("a", Some(3)));
        let r = Replacement::parse("a", &toml::Value::String("b@2".into())).unwrap();
        assert_eq!((r.name.as_str(), r.version), ("b", Some(2)));
        let r = Replacement::parse("a", &toml::Value::String("b".into())).unwrap();
        assert_eq!((r.name.as_str(), r.version), ("b", None));
        assert!(Replacement::parse("a", &toml::Value::Integer(0)).is_err());
        assert!(Replacement::parse("a", &toml::Value::String("b@x".into())).is_err());
        assert!(Replacement::parse("a", &toml::Value::Boolean(true)).is_err());
    }
}
