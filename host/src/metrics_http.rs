//! A Prometheus scrape endpoint: `GET /metrics` over plain HTTP/1.1 on the host's `rtc-io` runtime, for
//! Grafana and alerting without going through fs_cli.
//!
//! Small on purpose: one request per connection (`Connection: close`), the request head read within
//! [`REQUEST_TIMEOUT`] and [`MAX_HEAD`] bytes, at most [`MAX_CONNECTIONS`] at once, and the page rendered on the
//! runtime's blocking pool (rendering asks the engine thread for its counters and waits for the answer). Off
//! unless `metrics-listen` is set; bind it to an address only the scraper reaches.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// How long a client may take to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read.
pub const MAX_HEAD: usize = 8 * 1024;
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 16;

/// Renders the metrics page, or says why it cannot.
pub type Render = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// The running endpoint; dropping it (or [`MetricsEndpoint::stop`]) closes the listener and every connection.
pub struct MetricsEndpoint {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsEndpoint {
    /// Binds `addr` and serves on `io`. The bind happens here, so a busy or forbidden address is an error now.
    pub fn start(
        io: &tokio::runtime::Handle,
        addr: SocketAddr,
        render: Render,
    ) -> Result<MetricsEndpoint, String> {
        let std_listener = std::net::TcpListener::bind(addr)
            .map_err(|e| format!("metrics-listen {addr}: cannot listen: {e}"))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| format!("metrics-listen {addr}: {e}"))?;
        let bound = std_listener.local_addr().unwrap_or(addr);
        let _entered = io.enter();
        let listener = TcpListener::from_std(std_listener)
            .map_err(|e| format!("metrics-listen {addr}: {e}"))?;
        let task = io.spawn(accept_loop(listener, render));
        Ok(MetricsEndpoint { addr: bound, task })
    }

    /// The address listened on (with the port the system chose when given port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and the connections in flight.
    pub fn stop(self) {}
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, render: Render) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let render = render.clone();
                connections.spawn(async move {
                    serve(stream, render).await;
                    drop(permit);
                });
            }
            Err(e) => {
                log::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET /metrics`.
    Metrics,
    /// A GET of another path.
    NotFound,
    /// Another method.
    MethodNotAllowed,
    /// Not a request head.
    Bad,
}

/// Reads the request line of `head` (`GET /metrics HTTP/1.1`; a query string is ignored).
pub fn parse_request(head: &[u8]) -> Request {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Request::Bad;
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => Request::Metrics,
        ("GET", _) => Request::NotFound,
        _ => Request::MethodNotAllowed,
    }
}

async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return (!head.is_empty()).then_some(head);
        }
        head.extend_from_slice(&buf[..n]);
        if memchr::memmem::find(&head, b"\r\n\r\n").is_some()
            || memchr::memmem::find(&head, b"\n\n").is_some()
        {
            return Some(head);
        }
        if head.len() > MAX_HEAD {
            return Some(head);
        }
    }
}

async fn serve(mut stream: TcpStream, render: Render) {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(Some(head)) => head,
        _ => return,
    };
    let (status, content_type, body) = if head.len() > MAX_HEAD {
        (
            "431 Request Header Fields Too Large",
            "text/plain",
            String::new(),
        )
    } else {
        match parse_request(&head) {
            Request::Metrics => match tokio::task::spawn_blocking(move || render()).await {
                Ok(Ok(page)) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", page),
                Ok(Err(e)) => ("503 Service Unavailable", "text/plain", format!("{e}\n")),
                Err(_) => (
                    "500 Internal Server Error",
                    "text/plain",
                    "rendering failed (logged)\n".to_string(),
                ),
            },
            Request::NotFound => (
                "404 Not Found",
                "text/plain",
                "only /metrics is served here\n".to_string(),
            ),
            Request::MethodNotAllowed => (
                "405 Method Not Allowed",
                "text/plain",
                "GET /metrics only\n".to_string(),
            ),
            Request::Bad => ("400 Bad Request", "text/plain", String::new()),
        }
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics
        );
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.0\n\n"),
            Request::Metrics
        );
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::MethodNotAllowed
        );
        assert_eq!(parse_request(b"GET /metrics\r\n\r\n"), Request::Bad);
        assert_eq!(parse_request(b"\xff\xfe garbage"), Request::Bad);
    }

    fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    #[test]
    fn serves_the_page_and_refuses_the_rest() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let pages = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = pages.clone();
        let render: Render = Arc::new(move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n == 1 {
                Err("engine busy".into())
            } else {
                Ok(format!("rtc_pages_total {n}\n"))
            }
        });
        let endpoint =
            MetricsEndpoint::start(rt.handle(), "127.0.0.1:0".parse().unwrap(), render).unwrap();
        let addr = endpoint.addr();
        let ok = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.ends_with("\r\n\r\nrtc_pages_total 0\n"), "{ok}");
        let busy = get(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(
            busy.starts_with("HTTP/1.1 503") && busy.ends_with("engine busy\n"),
            "{busy}"
        );
        assert!(get(addr, b"GET /x HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let huge = [b'a'; MAX_HEAD + 10];
        assert!(get(addr, &huge).starts_with("HTTP/1.1 431"));
        // A busy address is an error at start, naming it.
        let e = MetricsEndpoint::start(rt.handle(), addr, Arc::new(|| Ok(String::new())))
            .err()
            .expect("address in use");
        assert!(
            e.starts_with(&format!("metrics-listen {addr}: cannot listen")),
            "{e}"
        );
        endpoint.stop();
        // Stopped: the listener is closed once the runtime has run the abort.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(addr).is_ok() {
            assert!(std::time::Instant::now() < deadline, "still listening");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
