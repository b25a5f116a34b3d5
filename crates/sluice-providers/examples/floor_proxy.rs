//! The least a reverse proxy on the gateway's own stack does per request: the measuring stick for what
//! Sluice's work adds (docs/benchmarks.md).
//!
//! ```sh
//! cargo build --release -p sluice-providers --example floor_proxy
//! taskset -c 0 target/release/examples/floor_proxy 127.0.0.1:18800 http://127.0.0.1:18500
//! ```
//!
//! Tokio's multi-threaded runtime (as the gateway builds it), hyper's HTTP/1 server, and hyper-util's
//! pooled client over plain TCP: each request's body is read whole and sent upstream with the client's
//! headers (`host` left out), and the upstream's answer is streamed back as it comes. No routing, no
//! authentication, no JSON, no logging, no error handling: a failure ends the connection.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a measuring tool, not a server")]

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: floor_proxy LISTEN_ADDR UPSTREAM_URL (e.g. 127.0.0.1:18800 http://127.0.0.1:18500)");
        std::process::exit(2);
    };
    let upstream: &'static str = Box::leak(upstream.trim_end_matches('/').to_owned().into_boxed_str());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .expect("the listening address");
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let _ = socket.set_nodelay(true);
            let client = client.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let client = client.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let mut upstream_request = Request::builder()
                            .method(parts.method)
                            .uri(format!("{upstream}{}", parts.uri.path()));
                        for (name, value) in &parts.headers {
                            if name != hyper::header::HOST {
                                upstream_request = upstream_request.header(name, value);
                            }
                        }
                        let answer = client
                            .request(upstream_request.body(Full::new(body)).unwrap())
                            .await
                            .unwrap();
                        let (parts, body) = answer.into_parts();
                        Ok::<_, Infallible>(Response::from_parts(parts, body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
}
