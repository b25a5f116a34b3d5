//! `GET /v1/models` in OpenAI's list format.

use serde::{Deserialize, Serialize};

/// The list envelope of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `"list"`.
    pub object: String,
    /// The models the caller may use.
    pub data: Vec<Model>,
}

/// One model as OpenAI lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    /// The name clients send as `model`.
    pub id: String,
    /// Always `"model"`.
    pub object: String,
    /// Unix seconds; the gateway reports when it loaded its configuration.
    pub created: u64,
    /// Who serves the model; the gateway reports `"sluice"`.
    pub owned_by: String,
}

impl ModelList {
    /// Builds the list from model names, in the order given.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>, created: u64) -> Self {
        Self {
            object: "list".to_owned(),
            data: names
                .into_iter()
                .map(|id| Model {
                    id: id.to_owned(),
                    object: "model".to_owned(),
                    created,
                    owned_by: "sluice".to_owned(),
                })
                .collect(),
        }
    }
}
