//! Client parameters a vendor cannot honour: refused with a 400 naming the parameter and the vendor, or,
//! when the deployment allows it, dropped and listed so the gateway can tell the client.

use serde_json::Value;
use sluice_api::{ChatCompletionRequest, ErrorBody};

use crate::ProviderError;

/// Parameters that configure OpenAI's platform rather than the answer; every other vendor ignores them.
pub(crate) const PLATFORM_ONLY: &[&str] = &["store", "metadata", "service_tier", "prompt_cache_key", "prediction"];

/// The policy for one call: refuse, or drop and remember.
#[derive(Debug)]
pub(crate) struct Unsupported<'a> {
    vendor: &'static str,
    drop: bool,
    dropped: Vec<&'a str>,
}

impl<'a> Unsupported<'a> {
    /// The policy of a call to `vendor` (named in refusals), dropping instead of refusing with `drop`.
    pub(crate) fn new(vendor: &'static str, drop: bool) -> Self {
        Self {
            vendor,
            drop,
            dropped: Vec::new(),
        }
    }

    /// `param` cannot be honoured: drop it, or refuse the request.
    pub(crate) fn refuse(&mut self, param: &'a str) -> Result<(), ProviderError> {
        if self.drop {
            self.dropped.push(param);
            Ok(())
        } else {
            Err(ProviderError::Rejected {
                status: 400,
                error: ErrorBody::new(
                    "invalid_request_error",
                    format!(
                        "Unsupported parameter: '{param}' is not supported by the {} API.",
                        self.vendor
                    ),
                    Some(param.to_owned()),
                    Some("unsupported_parameter".to_owned()),
                ),
            })
        }
    }

    /// Checks every field of `request.extra` the translation does not read (`translated`) nor ignore
    /// (`ignored`, plus [`PLATFORM_ONLY`]) and that is set to something other than OpenAI's default.
    pub(crate) fn check_extra(
        &mut self,
        request: &'a ChatCompletionRequest,
        translated: &[&str],
        ignored: &[&str],
    ) -> Result<(), ProviderError> {
        for (name, value) in &request.extra {
            let name = name.as_str();
            if PLATFORM_ONLY.contains(&name) || translated.contains(&name) || ignored.contains(&name) {
                continue;
            }
            if is_set(name, value) {
                self.refuse(name)?;
            }
        }
        Ok(())
    }

    /// The parameters dropped so far.
    pub(crate) fn into_dropped(self) -> Vec<&'a str> {
        self.dropped
    }
}

/// Whether a field is set to something other than OpenAI's default (so that clients which send every
/// default, such as `"frequency_penalty": 0`, are not refused).
pub(crate) fn is_set(name: &str, value: &Value) -> bool {
    match (name, value) {
        (_, Value::Null) => false,
        ("logprobs", Value::Bool(false)) => false,
        ("top_logprobs" | "presence_penalty" | "frequency_penalty", v) => v.as_f64() != Some(0.0),
        ("logit_bias", Value::Object(map)) => !map.is_empty(),
        ("modalities", Value::Array(items)) => items.iter().any(|m| m.as_str() != Some("text")),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_and_platform_fields_pass_and_the_rest_is_refused_or_dropped() {
        let request: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "m", "messages": [],
            "frequency_penalty": 0, "logprobs": false, "store": true, "seed": 3, "logit_bias": {"1": 2}
        }))
        .unwrap();
        let mut strict = Unsupported::new("Example", false);
        match strict.check_extra(&request, &["seed"], &[]) {
            Err(ProviderError::Rejected { error, .. }) => {
                assert_eq!(error.error.param.as_deref(), Some("logit_bias"));
                assert!(error.error.message.contains("Example API"), "{}", error.error.message);
            }
            other => panic!("{other:?}"),
        }
        let mut lenient = Unsupported::new("Example", true);
        lenient.check_extra(&request, &[], &[]).unwrap();
        let mut dropped = lenient.into_dropped();
        dropped.sort_unstable();
        assert_eq!(dropped, ["logit_bias", "seed"]);
    }
}
