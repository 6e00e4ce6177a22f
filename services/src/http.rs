//! The HTTP transport: one shared `reqwest` client (connection pool, keep-alive, rustls with certificate
//! verification), one POST per request, bounded in time and in answer size.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};

use crate::stats::Event;
use crate::wire::{self, Invalid, Operation};
use rtc_config::secret::redact_url;
use rtc_config::services::HttpConfig;
use rtc_engine::id::CallId;
use rtc_engine::service::{Outcome, ServiceFailure, ServiceKind};

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The extra CA file cannot be read.
    #[error(
        "cannot read the extra CA file {path}: {source} (fix the path in the services settings or remove it)"
    )]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The extra CA file holds no certificate that can be used.
    #[error("the extra CA file {path} holds no usable PEM certificate: {reason}")]
    CaPem {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// reqwest would not build the client.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// Where one service is reached. Its `Debug` shows neither the key nor a password in the URL.
#[derive(Clone)]
pub struct Endpoint {
    /// The service's URL without a trailing slash; operations append their path (`/reserve`...).
    pub base: String,
    /// The `X-API-Key` header value, marked sensitive so that it never shows in debug output.
    pub api_key: Option<HeaderValue>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &redact_url(&self.base))
            .field("api_key", &self.api_key)
            .finish()
    }
}

/// Why one HTTP exchange gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No answer within the service's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed (refused, reset, TLS).
    #[error("connection failed: {0}")]
    Connect(String),
    /// An answer with a status other than 200.
    #[error("HTTP status {status}: {body}")]
    Status {
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// An answer over `max-body`.
    #[error("answer larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// An answer that is not the contract's.
    #[error("{0}")]
    Invalid(#[from] Invalid),
}

impl HttpError {
    /// The counter it is counted under.
    pub fn event(&self) -> Event {
        match self {
            HttpError::Timeout(_) => Event::Timeout,
            HttpError::Connect(_) => Event::Connect,
            HttpError::Status { .. } => Event::HttpStatus,
            HttpError::BodyTooLarge { .. } => Event::BodyTooLarge,
            HttpError::Invalid(Invalid::Json(_)) => Event::BadJson,
            HttpError::Invalid(Invalid::Value(_)) => Event::InvalidValue,
        }
    }

    /// What the engine is told.
    pub fn failure(&self) -> ServiceFailure {
        match self {
            HttpError::Timeout(_) => ServiceFailure::Timeout,
            _ => ServiceFailure::Error,
        }
    }

    /// Whether sending the same request again may succeed. A 4xx other than 408/429 says the request itself
    /// was refused: retrying it would only be refused again.
    pub fn retryable(&self) -> bool {
        match self {
            HttpError::Status { status, .. } => {
                !(400..500).contains(status) || *status == 408 || *status == 429
            }
            _ => true,
        }
    }
}

/// The shared client.
#[derive(Clone, Debug)]
pub struct HttpClient {
    /// The pooled client; cloning it shares the pool.
    client: reqwest::Client,
    /// Answer size limit.
    max_body: usize,
}

impl HttpClient {
    /// Builds the shared client: connection pool, TLS with the system's and the extra CA certificates.
    pub fn new(config: &HttpConfig) -> Result<HttpClient, ClientError> {
        // reqwest is built without a bundled crypto provider so that rustls uses `ring` (which builds with
        // a C compiler alone); rustls then wants a process-wide default. An error means one is already
        // installed, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(30))
            // A redirect is a misconfigured URL, and following it would send the API key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some(path) = &config.extra_ca_file {
            let pem = std::fs::read(path).map_err(|source| ClientError::CaFile {
                path: path.clone(),
                source,
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ClientError::CaPem {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(ClientError::CaPem {
                    path: path.clone(),
                    reason: "no certificate found".into(),
                });
            }
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .build()
            .map_err(|e| ClientError::Build(error_chain(&e)))?;
        Ok(HttpClient {
            client,
            max_body: config.max_body_bytes,
        })
    }

    /// POSTs `body` for `operation` to `endpoint` and reads the answer, all within `timeout`.
    /// `Ok(None)` is a successful settlement (commit, release, CDR), which has no outcome.
    pub async fn post(
        &self,
        endpoint: &Endpoint,
        operation: Operation,
        call: CallId,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<Option<Outcome>, HttpError> {
        let exchange = self.exchange(endpoint, operation, call, body);
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout(timeout)),
        }
    }

    async fn exchange(
        &self,
        endpoint: &Endpoint,
        operation: Operation,
        call: CallId,
        body: &serde_json::Value,
    ) -> Result<Option<Outcome>, HttpError> {
        let url = format!("{}{}", endpoint.base, operation.path());
        let bytes = serde_json::to_vec(body).map_err(|e| HttpError::Connect(e.to_string()))?;
        let mut request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .body(bytes);
        if let Some(key) = &endpoint.api_key {
            request = request.header("X-API-Key", key.clone());
        }
        if operation.is_settlement() {
            // The same settlement may arrive twice (retried after a lost answer, replayed from the spool):
            // the service keys on this to apply it once.
            request = request.header("Idempotency-Key", format!("{call}:{operation}"));
        } else if operation == Operation::Extend {
            // One debit per interval: the seconds paid for before it name the interval.
            let paid = body
                .get("paid_s")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            request = request.header("Idempotency-Key", format!("{call}:extend:{paid}"));
        }
        let mut response = request
            .send()
            .await
            // Without the URL, which reqwest would show with any password in it; the service is named anyway.
            .map_err(|e| HttpError::Connect(error_chain(&e.without_url())))?;
        let status = response.status();
        if !status.is_success() {
            // Read a little of the error body for the log, within the same bounds.
            let text = match read_limited(&mut response, 512).await {
                Ok(b) | Err(Partial(b)) => String::from_utf8_lossy(&b).into_owned(),
            };
            return Err(HttpError::Status {
                status: status.as_u16(),
                body: wire::truncate(text.trim(), 200),
            });
        }
        if operation.is_settlement() {
            return Ok(None);
        }
        let limit = self.max_body;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(HttpError::BodyTooLarge { limit });
        }
        let body = read_limited(&mut response, limit)
            .await
            .map_err(|_| HttpError::BodyTooLarge { limit })?;
        Ok(wire::decode(operation, call, &body)?)
    }
}

/// What was read before the limit was passed or the connection broke.
struct Partial(Vec<u8>);

/// Reads the body chunk by chunk, stopping as soon as more than `limit` bytes have come. A broken
/// connection mid-body is reported as `Partial` too; the caller treats both as a refused answer.
async fn read_limited(response: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, Partial> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    let room = limit - body.len();
                    body.extend_from_slice(&chunk[..room]);
                    return Err(Partial(body));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => return Err(Partial(body)),
        }
    }
}

/// An error with its causes, one line: reqwest's own message alone is often just "error sending request".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Builds the endpoint of `kind` from its settings.
pub fn endpoint(
    kind: ServiceKind,
    url: &str,
    api_key: Option<&str>,
) -> Result<Endpoint, EndpointError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| EndpointError::Url {
        service: kind,
        url: redact_url(url),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(EndpointError::Url {
            service: kind,
            url: redact_url(url),
            reason: format!("scheme {:?} is not http or https", parsed.scheme()),
        });
    }
    let api_key = match api_key {
        None => None,
        Some(key) => {
            let mut value =
                HeaderValue::from_str(key).map_err(|_| EndpointError::ApiKey { service: kind })?;
            value.set_sensitive(true);
            Some(value)
        }
    };
    Ok(Endpoint {
        base: url.trim_end_matches('/').to_owned(),
        api_key,
    })
}

/// A service's URL or key is unusable.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The URL cannot be used.
    #[error("{service:?} service: url {url:?} is not usable: {reason}")]
    Url {
        /// The service.
        service: ServiceKind,
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The API key cannot go in a header.
    #[error(
        "{service:?} service: api key contains characters not allowed in an HTTP header (use visible ASCII)"
    )]
    ApiKey {
        /// The service.
        service: ServiceKind,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_show_neither_the_key_nor_a_password_in_the_url() {
        let e = endpoint(
            ServiceKind::Rating,
            "ftp://rtc:Url-s3cret@rates.example/v1",
            Some("Api-s3cret"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("ftp://rtc:***@rates.example/v1"), "{e}");
        let target = endpoint(
            ServiceKind::Rating,
            "http://rtc:Url-s3cret@127.0.0.1:9/rate",
            Some("Api-s3cret"),
        )
        .unwrap();
        let client = HttpClient::new(&HttpConfig::default()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Nothing listens on port 9: the connection is refused.
        let e = runtime
            .block_on(client.post(
                &target,
                Operation::Rate,
                CallId::from_u128(1),
                &serde_json::json!({}),
                Duration::from_secs(5),
            ))
            .unwrap_err();
        assert!(matches!(e, HttpError::Connect(_)), "{e}");
        for shown in [e.to_string(), format!("{target:?}")] {
            assert!(
                !shown.contains("Url-s3cret") && !shown.contains("Api-s3cret"),
                "{shown}"
            );
        }
    }
}
