//! Operations: the admin API (JSON-RPC 2.0 over HTTP, jsonrpsee),
//! Prometheus `GET /metrics` on the same listener, the readiness port, and
//! the status tables.
//!
//! The admin listener is loopback by default; elsewhere it requires a
//! bearer token (`admin.token_file`), which is never logged or shown.

pub mod api;
pub mod load;
pub mod metrics;
pub mod readiness;
pub mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use jsonrpsee::core::BoxError;
use jsonrpsee::http_client::{HeaderMap, HeaderValue, HttpClient, HttpClientBuilder};
use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use crate::runtime::Event;
use api::AdminApiServer;

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn plain(status: u16, body: String, content_type: &str) -> HttpResponse {
    let mut resp = HttpResponse::new(HttpBody::from(body));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// Token check, then `/metrics` or JSON-RPC.
#[derive(Clone)]
struct Gate<S> {
    inner: S,
    events: mpsc::UnboundedSender<Event>,
    token: Option<Arc<str>>,
}

impl<S, B> tower::Service<HttpRequest<B>> for Gate<S>
where
    S: tower::Service<HttpRequest<B>, Response = HttpResponse, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: HttpRequest<B>) -> Self::Future {
        if let Some(token) = &self.token {
            let given = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !same(given.as_bytes(), token.as_bytes()) {
                return Box::pin(async { Ok(plain(401, "unauthorized\n".into(), "text/plain")) });
            }
        }
        if req.method() == http::Method::GET && req.uri().path() == "/metrics" {
            let events = self.events.clone();
            return Box::pin(async move {
                let (tx, rx) = oneshot::channel();
                let _ = events.send(Event::Metrics(tx));
                match rx.await {
                    Ok(text) => Ok(plain(200, text, "text/plain; version=0.0.4; charset=utf-8")),
                    Err(_) => Ok(plain(503, "agent stopping\n".into(), "text/plain")),
                }
            });
        }
        let mut inner = self.inner.clone();
        Box::pin(async move { inner.call(req).await })
    }
}

/// Serves the admin API until `stop` turns true.
pub async fn serve(
    events: mpsc::UnboundedSender<Event>,
    listener: TcpListener,
    token: Option<String>,
    mut stop: watch::Receiver<bool>,
) {
    let (stop_handle, server_handle) = jsonrpsee::server::stop_channel();
    let methods = api::AdminImpl {
        events: events.clone(),
    }
    .into_rpc();
    let cfg = jsonrpsee::server::ServerConfig::builder()
        .max_request_body_size(1 << 20)
        .max_response_body_size(256 << 20)
        .build();
    let builder = jsonrpsee::server::Server::builder()
        .set_config(cfg)
        .to_service_builder();
    let token: Option<Arc<str>> = token.map(Into::into);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let svc = Gate {
            inner: builder.clone().build(methods.clone(), stop_handle.clone()),
            events: events.clone(),
            token: token.clone(),
        };
        let stopped = stop_handle.clone().shutdown();
        tokio::spawn(async move {
            if let Err(e) = jsonrpsee::server::serve_with_graceful_shutdown(tcp, svc, stopped).await
            {
                debug!(%peer, error = %e, "admin connection ended");
            }
        });
    }
    let _ = server_handle.stop();
}

/// A client for `status` and tests.
pub fn client(addr: SocketAddr, token: Option<&str>) -> Result<HttpClient, String> {
    let mut headers = HeaderMap::new();
    if let Some(t) = token {
        let v = HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| "token is not a valid header value".to_string())?;
        headers.insert("authorization", v);
    }
    HttpClientBuilder::default()
        .set_headers(headers)
        .request_timeout(std::time::Duration::from_secs(10))
        .build(format!("http://{addr}"))
        .map_err(|e| e.to_string())
}
