//! The operators' console at `/ui`: plain HTML, CSS and JavaScript modules under
//! `crates/sluice-server/console/`, compiled into the binary, so it works offline with nothing to build.
//!
//! The files are public: they hold no data and no secret. The page asks for the admin key once, keeps it
//! in the browser tab's `sessionStorage` and sends it as `Authorization: Bearer` to the admin JSON API,
//! which is where everything it shows comes from. Every answer under `/ui` carries a strict
//! `Content-Security-Policy` (scripts, styles and requests from this origin only, no inline script, no
//! framing, no form submission), `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.
//! Files are revalidated by an `ETag` of their content, so a new binary's console is picked up at once.
//!
//! A page is one module under `console/pages/`, one entry of `PAGES` in `console/app.js` and one line
//! of [`ASSETS`] below.

use std::sync::OnceLock;

use axum::Router as AxumRouter;
use axum::extract::{Path, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use crate::AppState;

/// One embedded file.
struct Asset {
    /// Its path under `/ui/`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../console/", $path)),
        }
    };
}

/// Every file of the console.
static ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("console.css", CSS),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("format.js", JS),
    asset!("charts.js", JS),
    asset!("pages/spend.js", JS),
    asset!("pages/tenants.js", JS),
    asset!("pages/request_logs.js", JS),
    asset!("pages/upstream.js", JS),
    asset!("pages/failures.js", JS),
    asset!("pages/prompts.js", JS),
    asset!("pages/access.js", JS),
];

/// The policy: nothing but this origin's own files and API; no inline script or style, no plugins, no
/// framing, no form submission (the page's forms are handled by its scripts; were they to fail, the
/// admin key typed in must not end up in a URL).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's routes, with its security headers on every answer.
pub(crate) fn routes() -> AxumRouter<AppState> {
    AxumRouter::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/{*path}", get(file))
        .layer(middleware::from_fn(security_headers))
}

async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.path == path) {
        Some(i) => serve(i, &headers),
        // The page's own routes live after `#`, so any other path is a mistake: plain text, no shape.
        None => (StatusCode::NOT_FOUND, "Not found\n").into_response(),
    }
}

/// A file, or a 304 when the browser holds this version of it.
fn serve(i: usize, headers: &HeaderMap) -> Response {
    let (Some(asset), Some(etag)) = (ASSETS.get(i), etags().get(i)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = asset.body.into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Each file's `ETag`: a hash of its content, computed once.
fn etags() -> &'static [HeaderValue] {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                // FNV-1a: not for security, only to tell versions apart.
                let hash = asset.body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
                });
                HeaderValue::from_str(&format!("\"{hash:016x}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
            })
            .collect()
    })
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
        (HeaderName::from_static("cross-origin-resource-policy"), "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_pages_import_is_served() {
        // A module missing from ASSETS would 404 in the browser; catch it here rather than in a test with
        // a browser.
        for asset in ASSETS
            .iter()
            .filter(|a| a.path.ends_with(".js") || a.path.ends_with(".html"))
        {
            let text = std::str::from_utf8(asset.body).unwrap_or_default();
            for quote in ['\'', '"'] {
                for piece in text.split(quote).skip(1).step_by(2) {
                    let is_module = piece.ends_with(".js") && (piece.starts_with("./") || piece.starts_with("../"));
                    let is_root = piece.starts_with("/ui/");
                    if !(is_module || is_root) {
                        continue;
                    }
                    let resolved = resolve(asset.path, piece);
                    assert!(
                        ASSETS.iter().any(|a| a.path == resolved),
                        "{} refers to {piece} ({resolved}), which is not in ASSETS",
                        asset.path
                    );
                }
            }
        }
    }

    fn resolve(from: &str, target: &str) -> String {
        if let Some(rooted) = target.strip_prefix("/ui/") {
            return rooted.to_owned();
        }
        let mut parts: Vec<&str> = from.split('/').collect();
        parts.pop();
        for piece in target.split('/') {
            match piece {
                "." => {}
                ".." => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        parts.join("/")
    }

    #[test]
    fn etags_differ_by_content() {
        let tags = etags();
        assert_eq!(tags.len(), ASSETS.len());
        assert_ne!(tags[0], tags[1]);
    }
}
