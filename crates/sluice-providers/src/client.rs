//! The upstream HTTP client every adapter calls through: HTTP/1.1 connections from hyper, over rustls,
//! through the proxy the environment names for a destination, if any, kept in a pool of its own
//! (`pool.rs`) and driven by the task that reads the answer rather than by a task of their own.
//!
//! reqwest, used first, wraps hyper's pooled client in layers the gateway does not use: redirects (which
//! parsed every request's URI into a `Url` and the response's again), cookies, its own retry policy and
//! timeouts, and a body wrapper per layer. Those were 14% of a request's instructions (callgrind, the full
//! path; docs/benchmarks.md). hyper's pooled client, used next, hands an answer's body over from the
//! connection's task one HTTP chunk per task wake-up (`pool.rs` says what that cost).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST, HeaderValue, IntoHeaderName, PROXY_AUTHORIZATION, USER_AGENT};
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{ProviderError, TimeoutPhase, UpstreamKey};

mod pool;

use pool::{Conn, Lease, Pool, PoolKey};

/// A connection as the pool holds it: TLS or not, to the upstream or to its proxy.
type Io = MaybeHttpsStream<UpstreamStream>;

/// An upstream answer's body; reading it drives its connection (`pool.rs`).
pub(crate) use pool::UpstreamBody;

/// How long an idle connection is kept, as reqwest kept them.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How the shared client connects.
#[derive(Debug, Default)]
pub struct ClientSettings {
    /// The longest wait for a TCP connection (the TLS handshake is within the first-byte timeout).
    pub connect_timeout: Option<Duration>,
    /// Which destinations go through a proxy, and which; `None`: every call connects directly.
    pub proxies: Option<Matcher>,
    /// Certificates trusted besides the platform's, for tests against a private authority.
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl ClientSettings {
    /// Direct connections with `connect_timeout`, through the proxies of `HTTPS_PROXY`, `HTTP_PROXY`,
    /// `ALL_PROXY` and `NO_PROXY` (as curl reads them) when one of them is set.
    pub fn from_env(connect_timeout: Duration) -> Self {
        // The variables are looked at here as well as by `Matcher::from_env`: a matcher cannot say whether
        // it holds any rule, and asking one about a destination parses its host on every call.
        let named = [
            "ALL_PROXY",
            "all_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
        ]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
        Self {
            connect_timeout: Some(connect_timeout),
            proxies: named.then(Matcher::from_env),
            extra_roots: Vec::new(),
        }
    }
}

/// The shared upstream HTTP client: one connection pool for every provider. Cloning is cheap.
#[derive(Clone)]
pub struct UpstreamClient {
    connector: HttpsConnector<ProxyConnector>,
    pool: Arc<Pool>,
    proxies: Option<Arc<Matcher>>,
    connect_timeout: Option<Duration>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("proxied", &self.proxies.is_some())
            .finish_non_exhaustive()
    }
}

/// The user agent of every upstream call.
const AGENT: &str = concat!("sluice/", env!("CARGO_PKG_VERSION"));

impl UpstreamClient {
    /// A client with `settings`, verifying servers' certificates against the platform's trust store.
    pub fn new(settings: ClientSettings) -> Result<Self, ProviderError> {
        let tls = tls_config(settings.extra_roots).map_err(|e| ProviderError::Connect {
            detail: format!("cannot set up TLS: {e}"),
        })?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(settings.connect_timeout);
        // TCP keepalive as reqwest set it: a vendor that thinks for minutes before its first byte keeps
        // the connection alive through NATs and load balancers, and a dead peer is noticed.
        http.set_keepalive(Some(Duration::from_secs(15)));
        http.set_keepalive_interval(Some(Duration::from_secs(15)));
        http.set_keepalive_retries(Some(3));
        let proxies = settings.proxies.map(Arc::new);
        let connector = ProxyConnector {
            http,
            proxies: proxies.clone(),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        Ok(Self {
            connector: https,
            pool: Arc::new(Pool::new(IDLE_TIMEOUT)),
            proxies,
            connect_timeout: settings.connect_timeout,
        })
    }

    /// A POST to `uri`.
    pub(crate) fn post(&self, uri: Uri) -> UpstreamRequest {
        UpstreamRequest {
            client: self.clone(),
            uri,
            headers: HeaderMap::with_capacity(8),
            body: Bytes::new(),
            invalid: None,
        }
    }

    /// Sends `request` on an idle connection to its destination, or on a new one; the answer's body
    /// drives the connection as it is read. A request an idle connection could not take (it closed as
    /// the request was handed to it) is sent again on another.
    async fn send(&self, mut request: Request<Full<Bytes>>) -> Result<Response<UpstreamBody>, ProviderError> {
        let key = pool_key(request.uri())?;
        set_host(&mut request);
        loop {
            let (mut conn, reused) = match self.pool.take(&key) {
                Some(conn) => (conn, true),
                // Boxed: a connection being set up (TLS state included) is several kilobytes, which every
                // call's future would otherwise carry and move.
                None => (Box::pin(self.connect(&key)).await?, false),
            };
            if !conn.proxied {
                origin_form(request.uri_mut());
            }
            let answer = conn.sender.try_send_request(request);
            let mut answer = std::pin::pin!(answer);
            let outcome = std::future::poll_fn(|cx| {
                conn.drive(cx);
                answer.as_mut().poll(cx)
            })
            .await;
            match outcome {
                Ok(response) => {
                    let lease = Lease {
                        conn,
                        pool: Arc::clone(&self.pool),
                        key,
                    };
                    return Ok(response.map(|body| UpstreamBody::new(body, lease)));
                }
                Err(mut err) => match err.take_message() {
                    // Every connection to one destination is proxied or none is, so the request goes
                    // on as it was written for this one.
                    Some(unsent) if reused => request = unsent,
                    _ => {
                        return Err(ProviderError::Truncated {
                            detail: crate::error::error_chain(err.error()),
                        });
                    }
                },
            }
        }
    }

    /// A new connection to `key`'s destination (through its proxy, if any).
    async fn connect(&self, key: &PoolKey) -> Result<Conn, ProviderError> {
        let mut connector = self.connector.clone();
        let io = tower_service::Service::call(&mut connector, destination(key))
            .await
            .map_err(|e| connect_error(&*e, self.connect_timeout))?;
        let proxied = io.connected().is_proxied();
        let (sender, driver) = http1::handshake(io).await.map_err(|e| ProviderError::Connect {
            detail: crate::error::error_chain(&e),
        })?;
        Ok(Conn::new(sender, driver, proxied))
    }
}

/// The pool a request's connection comes from: its scheme and authority.
fn pool_key(uri: &Uri) -> Result<PoolKey, ProviderError> {
    match (uri.scheme(), uri.authority()) {
        (Some(scheme), Some(authority)) => Ok((scheme.clone(), authority.clone())),
        _ => Err(ProviderError::Connect {
            detail: format!("the upstream URL `{uri}` has no scheme or host"),
        }),
    }
}

/// The `host` header HTTP/1.1 requires: the URI's host, and its port unless it is the scheme's default.
fn set_host(request: &mut Request<Full<Bytes>>) {
    let uri = request.uri();
    let Some(host) = uri.host() else { return };
    let default_port = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        443
    } else {
        80
    };
    let value = match uri.port_u16() {
        Some(port) if port != default_port => HeaderValue::try_from(format!("{host}:{port}")),
        _ => HeaderValue::try_from(host),
    };
    if let Ok(value) = value {
        request.headers_mut().entry(HOST).or_insert(value);
    }
}

/// `uri` as a path and query only, as a request to the server itself is written.
fn origin_form(uri: &mut Uri) {
    let path = uri.path_and_query().cloned();
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
    if let Ok(origin) = Uri::from_parts(parts) {
        *uri = origin;
    }
}

/// The URI the connector is given for `key`: the scheme and authority, which is all it reads.
fn destination(key: &PoolKey) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(key.0.clone());
    parts.authority = Some(key.1.clone());
    parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    Uri::from_parts(parts).unwrap_or_default()
}

fn tls_config(
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = if extra_roots.is_empty() {
        rustls_platform_verifier::Verifier::new(provider.clone())?
    } else {
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())?
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// What a failure to connect means for the router: a connection refused (or a failed TLS handshake) is
/// [`ProviderError::Connect`], one that took too long a connect [`ProviderError::Timeout`]. Either way
/// no byte of the request was sent.
fn connect_error(err: &(dyn std::error::Error + 'static), connect_timeout: Option<Duration>) -> ProviderError {
    if let Some(after) = connect_timeout
        && timed_out(err)
    {
        return ProviderError::Timeout {
            phase: TimeoutPhase::Connect,
            after,
        };
    }
    ProviderError::Connect {
        detail: crate::error::error_chain(err),
    }
}

/// Whether an I/O error that timed out is among `err`'s causes.
fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = err.source();
    }
    false
}

/// An upstream request being built.
pub(crate) struct UpstreamRequest {
    client: UpstreamClient,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    /// Why the request cannot be sent, found while it was built.
    invalid: Option<ProviderError>,
}

impl UpstreamRequest {
    /// Adds a header. A value a header cannot carry fails the request when it is sent.
    pub(crate) fn header<V>(mut self, name: impl IntoHeaderName, value: V) -> Self
    where
        HeaderValue: TryFrom<V>,
    {
        match HeaderValue::try_from(value) {
            Ok(value) => {
                self.headers.append(name, value);
            }
            Err(_) => {
                self.invalid.get_or_insert_with(|| ProviderError::Protocol {
                    detail: "a header of the upstream request holds characters a header cannot carry".to_owned(),
                });
            }
        }
        self
    }

    /// `Authorization: Bearer <key>`, marked sensitive.
    pub(crate) fn bearer_auth(self, key: &UpstreamKey) -> Result<Self, ProviderError> {
        let value = crate::transport::key_header(key, "Bearer ")?;
        Ok(self.header(AUTHORIZATION, value))
    }

    /// The body.
    pub(crate) fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The request as it goes on the wire (less what hyper adds: `host`, `content-length`).
    pub(crate) fn into_http(self) -> Result<(UpstreamClient, Request<Bytes>), ProviderError> {
        let Self {
            client,
            uri,
            mut headers,
            body,
            invalid,
        } = self;
        if let Some(err) = invalid {
            return Err(err);
        }
        headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
        // A plain-HTTP call through a proxy carries the proxy's credentials; a tunnelled one gave them
        // in its CONNECT.
        if let Some(proxies) = &client.proxies
            && uri.scheme() == Some(&http::uri::Scheme::HTTP)
            && let Some(auth) = proxies.intercept(&uri).and_then(|p| p.basic_auth().cloned())
        {
            headers.insert(PROXY_AUTHORIZATION, auth);
        }
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok((client, request))
    }

    /// Sends the request; the answer is the response head, its body still to read.
    pub(crate) async fn send(self) -> Result<Response<UpstreamBody>, ProviderError> {
        let (client, request) = self.into_http()?;
        client.send(request.map(Full::new)).await
    }
}

/// `text` as a URI for a call, or a clear error.
pub(crate) fn uri(text: &str) -> Result<Uri, ProviderError> {
    Uri::try_from(text).map_err(|e| ProviderError::Connect {
        detail: format!("the upstream URL `{text}` is not valid: {e}"),
    })
}

/// Opens TCP connections: directly, or through the proxy [`Matcher`] names for the destination. An
/// HTTPS destination is reached through a `CONNECT` tunnel (TLS then runs end to end inside it); a
/// plain-HTTP one by sending the request itself to the proxy, in absolute form.
#[derive(Clone)]
struct ProxyConnector {
    http: HttpConnector,
    proxies: Option<Arc<Matcher>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for ProxyConnector {
    type Response = UpstreamStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let proxy = self.proxies.as_ref().and_then(|proxies| proxies.intercept(&dst));
        let mut http = self.http.clone();
        Box::pin(async move {
            let Some(proxy) = proxy else {
                let io = tower_service::Service::call(&mut http, dst).await?;
                return Ok(UpstreamStream { io, via_proxy: false });
            };
            if dst.scheme() == Some(&http::uri::Scheme::HTTPS) {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), http);
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                let io = tower_service::Service::call(&mut tunnel, dst).await?;
                return Ok(UpstreamStream { io, via_proxy: false });
            }
            let io = tower_service::Service::call(&mut http, proxy.uri().clone()).await?;
            Ok(UpstreamStream { io, via_proxy: true })
        })
    }
}

/// A TCP connection to an upstream or to the proxy that forwards its requests.
pub(crate) struct UpstreamStream {
    io: TokioIo<TcpStream>,
    /// Requests on it go to a proxy, so they are written in absolute form.
    via_proxy: bool,
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.via_proxy)
    }
}

impl Read for UpstreamStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for UpstreamStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error whose cause is `cause`, as the connector's errors wrap the socket's.
    #[derive(Debug)]
    struct Wrapped(io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("tcp connect error")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_timed_out_cause_anywhere_in_the_chain_is_a_timeout() {
        assert!(timed_out(&Wrapped(io::Error::new(
            io::ErrorKind::TimedOut,
            "connect timeout"
        ))));
        assert!(!timed_out(&Wrapped(io::Error::from(io::ErrorKind::ConnectionRefused))));
        assert!(timed_out(&io::Error::from(io::ErrorKind::TimedOut)));
    }

    #[test]
    fn headers_a_header_cannot_carry_fail_the_request_not_the_build() {
        let client = UpstreamClient::new(ClientSettings::default()).unwrap();
        let request = client
            .post(Uri::from_static("http://127.0.0.1:9/v1/chat/completions"))
            .header("x-test", "line\nbreak");
        assert!(matches!(request.into_http(), Err(ProviderError::Protocol { .. })));
        let key = UpstreamKey::new("k#1", secrecy::SecretString::from("bad\nkey"));
        let refused = client.post(Uri::from_static("http://127.0.0.1:9/")).bearer_auth(&key);
        assert!(matches!(refused, Err(ProviderError::Authentication { .. })));
    }

    #[test]
    fn every_request_names_the_gateway_and_no_proxy_credentials_leak_to_direct_calls() {
        let client = UpstreamClient::new(ClientSettings::default()).unwrap();
        let (_, request) = client
            .post(Uri::from_static("http://127.0.0.1:9/v1/chat/completions"))
            .body(Bytes::from_static(b"{}"))
            .into_http()
            .unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.headers()[USER_AGENT], AGENT);
        assert!(request.headers().get(PROXY_AUTHORIZATION).is_none());
        assert_eq!(request.body().as_ref(), b"{}");
    }
}
