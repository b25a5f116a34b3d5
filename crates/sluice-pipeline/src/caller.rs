//! Who is calling: anything that maps a bearer token to a [`Principal`], and the caller of one request.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use secrecy::{ExposeSecret, SecretString};

use crate::tenancy::TenantState;

pub use sluice_store::DEFAULT_TENANT;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// A name for logs: the key's id or label, never its value.
    pub name: Arc<str>,
    /// Whether the caller holds the admin key.
    pub admin: bool,
    /// The virtual key's id, for the usage ledger; for the admin key, its [`admin_key_id`]; `None` for
    /// configured client keys.
    pub key_id: Option<Arc<str>>,
    /// The caller's tenant; `None` for configured keys, which belong to no tenant and have no limits.
    pub tenant: Option<Arc<TenantState>>,
}

impl Principal {
    /// The tenant name the ledger records: the tenant's, or `default` for configured keys.
    pub fn tenant_name(&self) -> &str {
        self.tenant.as_ref().map_or(DEFAULT_TENANT, |t| t.name())
    }

    /// [`Principal::tenant_name`], shared: for records that outlive the request (its ledger row, an error).
    pub fn shared_tenant_name(&self) -> Arc<str> {
        static DEFAULT: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(DEFAULT_TENANT));
        self.tenant
            .as_ref()
            .map_or_else(|| Arc::clone(&DEFAULT), |t| t.shared_name())
    }
}

/// Maps a bearer token to a caller.
pub trait Authenticator: Send + Sync + 'static {
    /// The caller presenting `token`, or `None` if the token is unknown.
    fn authenticate(&self, token: &str) -> Option<Principal>;
}

/// The minimal authenticator: a fixed list of client keys and the admin key, from the configuration.
pub struct StaticKeys {
    keys: HashMap<String, Principal>,
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKeys").field("keys", &self.keys.len()).finish()
    }
}

impl StaticKeys {
    /// Accepts each of `client_keys`, named by their label for logs, and `admin_key`.
    pub fn new(client_keys: &[(String, SecretString)], admin_key: Option<&SecretString>) -> Self {
        let mut keys = HashMap::with_capacity(client_keys.len() + 1);
        for (label, key) in client_keys {
            keys.insert(
                key.expose_secret().to_owned(),
                Principal {
                    name: label.as_str().into(),
                    admin: false,
                    key_id: None,
                    tenant: None,
                },
            );
        }
        if let Some(admin) = admin_key {
            keys.insert(
                admin.expose_secret().to_owned(),
                Principal {
                    name: "admin".into(),
                    admin: true,
                    key_id: Some(admin_key_id(admin.expose_secret()).into()),
                    tenant: None,
                },
            );
        }
        Self { keys }
    }
}

/// The admin key's id, as the audit log records who acted: `admin#` and the first 8 bytes of its SHA-256
/// in hex. Tells keys apart across a rotation and says nothing usable about the key.
pub fn admin_key_id(key: &str) -> String {
    let hash = sluice_store::KeyHash::of(key);
    let hex: String = hash.as_bytes()[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("admin#{hex}")
}

impl Authenticator for StaticKeys {
    fn authenticate(&self, token: &str) -> Option<Principal> {
        self.keys.get(token).cloned()
    }
}

/// The caller of one request, for limits and the ledger.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who is calling.
    pub principal: Principal,
    /// The client's `x-request-id` (the store caps what it keeps of it).
    pub client_request_id: Option<String>,
    /// The prompt template's name and version, for prompt endpoint calls.
    pub prompt: Option<(String, u32)>,
}

impl Caller {
    /// A caller `principal` whose request carried `client_request_id`.
    pub fn new(principal: Principal, client_request_id: Option<&str>) -> Self {
        Self {
            principal,
            client_request_id: client_request_id.map(str::to_owned),
            prompt: None,
        }
    }

    /// The same caller running prompt template `name` at `version`.
    pub fn with_prompt(mut self, name: &str, version: u32) -> Self {
        self.prompt = Some((name.to_owned(), version));
        self
    }
}
