//! Every vendor Sluice speaks to, in one list: [`VENDORS`].
//!
//! Each entry ([`VendorSpec`]) says what a `[[providers]]` table of that `kind` needs (its default base
//! URL, which settings it requires or refuses), whether it embeds, how to build its adapter, and, for the
//! fuzz targets and benchmarks, its stream translator and error classification. Configuration
//! validation, wiring, the simulator's faces and the fuzz targets all read this list, so a new vendor is
//! its folder (`src/<vendor>/`, with its `VendorSpec`) and one line here.
//!
//! `kind = "simulated"`, the in-process simulator, is not here: it lives in `sluice-simulate`, which
//! depends on this crate, and the binary adds it beside these.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::internals::{CREATED, Translator};
use crate::{ChatProvider, ProviderError, RateLimitSnapshot, Timeouts, anthropic, gemini, openai};

/// The vendors, in the order the configuration's error messages list them.
pub static VENDORS: &[&VendorSpec] = &[
    &openai::OPENAI,
    &openai::AZURE,
    &anthropic::ANTHROPIC,
    &gemini::GEMINI,
    &openai::COMPATIBLE,
];

/// The vendor of configuration `kind` (`openai`, `anthropic`...).
pub fn vendor(kind: &str) -> Option<&'static VendorSpec> {
    VENDORS.iter().copied().find(|spec| spec.kind == kind)
}

/// Whether a provider setting applies to a vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The vendor needs it.
    Required,
    /// The vendor takes it, or does without.
    Optional,
    /// It means nothing to this vendor: setting it is a configuration error.
    Refused,
}

impl Field {
    /// Whether the setting may be given.
    pub fn accepted(self) -> bool {
        self != Field::Refused
    }
}

/// The wire format a vendor speaks. Vendors that share one (OpenAI, Azure, compatible servers) share a
/// stream translator and a simulated face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// OpenAI's chat completions.
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API.
    Gemini,
}

/// One provider's settings, defaults resolved: what building its adapter takes besides the HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSettings {
    /// The vendor's API root.
    pub base_url: String,
    /// The `api-version` of vendors that version their API by query parameter (Azure).
    pub api_version: Option<String>,
    /// Ask an OpenAI-format upstream for a usage chunk at the end of streams.
    pub stream_usage: bool,
}

/// Builds a vendor's adapter.
type Build = fn(crate::UpstreamClient, &ProviderSettings, Timeouts) -> Arc<dyn ChatProvider>;
/// Classifies a failed response (status, headers, body) as the adapter does at a given time.
type Classify = fn(u16, &HeaderMap, &[u8], SystemTime) -> (ProviderError, RateLimitSnapshot);

/// One vendor: its configuration `kind` and what a provider of that kind needs.
pub struct VendorSpec {
    /// The `kind` of its `[[providers]]` tables.
    pub kind: &'static str,
    /// How people call it, for messages.
    pub name: &'static str,
    /// The wire format it speaks.
    pub wire: WireFormat,
    /// The API root when the provider gives no `base_url`; without one, `base_url` is required.
    pub default_base_url: Option<&'static str>,
    /// Whether `api_version` applies.
    pub api_version: Field,
    /// The version to suggest when a required `api_version` is missing.
    pub current_api_version: Option<&'static str>,
    /// Whether `stream_usage` applies.
    pub stream_usage: Field,
    /// Whether the provider must list keys; without any, an optional-key vendor gets one anonymous key.
    pub keys: Field,
    /// Whether its adapter serves embeddings (the others refuse them with a 400).
    pub embeds: bool,
    pub(crate) build: Build,
    pub(crate) translator: fn() -> Translator,
    pub(crate) classify: Classify,
}

impl VendorSpec {
    /// Whether `base_url` must be given.
    pub fn base_url(&self) -> Field {
        match self.default_base_url {
            Some(_) => Field::Optional,
            None => Field::Required,
        }
    }

    /// The adapter of a provider with `settings`, calling through the shared `client`.
    pub fn adapter(
        &self,
        client: crate::UpstreamClient,
        settings: &ProviderSettings,
        timeouts: Timeouts,
    ) -> Arc<dyn ChatProvider> {
        (self.build)(client, settings, timeouts)
    }

    /// The vendor's stream translator with a fresh state, as its adapter starts it for one stream (at
    /// [`CREATED`]). For the fuzz targets and benchmarks.
    #[doc(hidden)]
    pub fn translator(&self) -> Translator {
        (self.translator)()
    }

    /// What the adapter makes of a failed response with `status`, `headers` and `body`, at [`CREATED`]:
    /// the error, and the limits it reads from the headers. For the fuzz targets.
    #[doc(hidden)]
    pub fn upstream_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> (ProviderError, RateLimitSnapshot) {
        (self.classify)(
            status,
            headers,
            body,
            SystemTime::UNIX_EPOCH + Duration::from_secs(CREATED),
        )
    }
}

impl std::fmt::Debug for VendorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VendorSpec")
            .field("kind", &self.kind)
            .field("wire", &self.wire)
            .finish_non_exhaustive()
    }
}

impl PartialEq for VendorSpec {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Eq for VendorSpec {}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;
    use sluice_api::EmbeddingRequest;

    use super::*;
    use crate::{EmbedCall, UpstreamKey};

    #[test]
    fn kinds_are_unique_and_found() {
        for (i, spec) in VENDORS.iter().enumerate() {
            assert_eq!(vendor(spec.kind), Some(*spec));
            assert!(VENDORS[..i].iter().all(|other| other.kind != spec.kind), "{spec:?}");
            assert_eq!(spec.api_version == Field::Required, spec.current_api_version.is_some());
        }
        assert_eq!(vendor("simulated"), None);
    }

    /// `embeds` says what the adapter does: a vendor without embeddings refuses them before any call, a
    /// vendor with them tries the network (here a closed port).
    #[tokio::test]
    async fn embeds_matches_the_adapters() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            first_byte: Duration::from_secs(1),
            idle: Duration::from_secs(1),
        };
        let request: EmbeddingRequest = serde_json::from_str(r#"{"model": "e", "input": "hi"}"#).unwrap();
        let key = UpstreamKey::new("k#0", SecretString::from("k".to_owned()));
        for spec in VENDORS {
            let settings = ProviderSettings {
                base_url: "http://127.0.0.1:9".to_owned(),
                api_version: spec.current_api_version.map(str::to_owned),
                stream_usage: true,
            };
            let adapter = spec.adapter(
                crate::UpstreamClient::new(crate::ClientSettings::default()).unwrap(),
                &settings,
                timeouts,
            );
            let call = EmbedCall {
                request: &request,
                model: "e",
                key: &key,
            };
            let refused = matches!(
                adapter.embed(call).await,
                Err(ProviderError::Rejected { ref error, .. })
                    if error.error.code.as_deref() == Some("embeddings_not_supported")
            );
            assert_eq!(refused, !spec.embeds, "{}", spec.kind);
        }
    }
}
