//! What makes a gateway safe to expose: no literal client key served beyond loopback, an admin key that
//! is strong and nobody else's, database URLs printed without their passwords, and an open-file limit that
//! leaves room for the connection bounds. Every message names the key's position, never its value.

use secrecy::{ExposeSecret, SecretString};

use crate::config::Config;

/// The shortest admin key accepted, in characters.
pub const MIN_ADMIN_KEY_CHARS: usize = 32;

/// Why the gateway refuses to start as configured.
#[derive(Debug, thiserror::Error)]
pub enum ExposureError {
    /// A literal client key, with the gateway listening beyond loopback.
    #[error(
        "{path}: {key}: a literal client key, and the gateway would listen on {listen}, beyond loopback, where \
         anyone who reaches it could use that key. Read it from the environment instead (\"env:SLUICE_API_KEY\"), \
         or remove it and give callers virtual keys (`sluice tenants create NAME`, then `sluice keys create NAME`); \
         or listen on 127.0.0.1"
    )]
    LiteralKey {
        /// The configuration file.
        path: String,
        /// The key's position, like `auth.keys[1]`.
        key: String,
        /// The address it would listen on.
        listen: std::net::SocketAddr,
    },
    /// The admin and client keys break a rule; each problem is one line.
    #[error("{}", .0.join("\n"))]
    Keys(Vec<String>),
}

/// Refuses a configuration that would serve a literal client key (one written in the file rather than
/// read from the environment) on an address beyond loopback.
pub fn check_listen(config: &Config) -> Result<(), ExposureError> {
    if config.listen.ip().is_loopback() {
        return Ok(());
    }
    match config
        .auth
        .keys
        .iter()
        .position(|key| !key.trim_start().starts_with("env:"))
    {
        Some(i) => Err(ExposureError::LiteralKey {
            path: config.path.display().to_string(),
            key: format!("auth.keys[{i}]"),
            listen: config.listen,
        }),
        None => Ok(()),
    }
}

/// Checks the resolved keys: the admin key must be at least [`MIN_ADMIN_KEY_CHARS`] long and differ from
/// every client key (a client holding it would be an admin). `client_keys` are named by position.
pub fn check_keys(
    client_keys: &[(String, SecretString)],
    admin_key: Option<&SecretString>,
) -> Result<(), ExposureError> {
    let Some(admin) = admin_key else {
        return Ok(());
    };
    let mut problems = Vec::new();
    let length = admin.expose_secret().chars().count();
    if length < MIN_ADMIN_KEY_CHARS {
        problems.push(format!(
            "auth.admin_key: the admin key is {length} characters long; it must be at least \
             {MIN_ADMIN_KEY_CHARS} (make one with `head -c 32 /dev/urandom | base64`)"
        ));
    }
    for (label, key) in client_keys {
        if key.expose_secret() == admin.expose_secret() {
            problems.push(format!(
                "auth.admin_key: the admin key is also the client key {label}, so that client would be an \
                 admin; give the admin a key of its own"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ExposureError::Keys(problems))
    }
}

/// `url` fit to print: the password of `scheme://user:password@host/...` and any `password` query
/// parameter become `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    // The user information ends at the last `@` before the query: a password may hold an unescaped `/`.
    let query_start = rest.find(['?', '#']).unwrap_or(rest.len());
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..scheme_end]);
    let authority_end = match rest[..query_start].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            at
        }
        None => 0,
    };
    let tail = &rest[authority_end..];
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((name, _)) if name.to_ascii_lowercase().contains("password") => format!("{name}=***"),
                    _ => param.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

/// A warning when the process may open fewer files than the server's bounds need (each client connection
/// and each upstream request holds a descriptor), read from `/proc/self/limits` on Linux.
pub fn open_files_warning(settings: &sluice_server::ServeSettings) -> Option<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft: usize = line.split_whitespace().nth(3)?.parse().ok()?;
    // A margin for the listener, the database, logs and the prompt files.
    let needed = settings.max_connections + settings.max_in_flight + 64;
    (soft < needed).then(|| {
        format!(
            "the open-file limit is {soft}, below what server.max_connections ({}) plus server.max_in_flight ({}) \
             may need ({needed}): raise it (ulimit -n, systemd LimitNOFILE=, docker --ulimit nofile=) or lower \
             server.max_connections",
            settings.max_connections, settings.max_in_flight
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        for (url, shown) in [
            (
                "postgres://sluice:hunter2@db:5432/sluice",
                "postgres://sluice:***@db:5432/sluice",
            ),
            ("postgres://sluice@db/sluice", "postgres://sluice@db/sluice"),
            (
                "postgresql://u:p%40ss@h/d?sslmode=require&password=x",
                "postgresql://u:***@h/d?sslmode=require&password=***",
            ),
            ("postgres://u:p@ss@h/d", "postgres://u:***@h/d"),
            ("postgres://u:pa/ss@h/d", "postgres://u:***@h/d"),
            ("sqlite://data/sluice.db", "sqlite://data/sluice.db"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn the_admin_key_must_be_long_and_its_own() {
        let long = "a".repeat(MIN_ADMIN_KEY_CHARS);
        assert!(
            check_keys(
                &[("auth.keys[0]".to_owned(), secret("sk-client"))],
                Some(&secret(&long))
            )
            .is_ok()
        );
        assert!(check_keys(&[], None).is_ok());

        let message = check_keys(&[], Some(&secret("sk-short-admin")))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("auth.admin_key: the admin key is 14 characters long"),
            "{message}"
        );
        assert!(!message.contains("sk-short-admin"), "{message}");

        let keys = [
            ("auth.keys[0]".to_owned(), secret("sk-client")),
            ("auth.keys[1]".to_owned(), secret(&long)),
        ];
        let message = check_keys(&keys, Some(&secret(&long))).unwrap_err().to_string();
        assert!(message.contains("also the client key auth.keys[1]"), "{message}");
        assert!(!message.contains(&long), "{message}");
    }
}
