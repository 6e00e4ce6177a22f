//! HTTPS services: certificates are verified, a private CA can be trusted through `extra_ca_file`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::unbounded;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rtc_config::services::{Backend, ServiceConfig, ServicesConfig};
use rtc_engine::CallId;
use rtc_engine::domain::PartnerInfo;
use rtc_engine::service::{
    Outcome, ServiceFailure, ServiceKind, ServiceRequest, ServiceResult, ServiceSink,
};
use rtc_services::stats::Event;
use rtc_services::{AsyncServices, IoRuntime, RuntimeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A private CA and a certificate for 127.0.0.1 it issued.
struct Pki {
    ca_pem: String,
    server: rustls::ServerConfig,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server,
    }
}

/// A minimal HTTPS partner service: reads one request, answers a fixed partner, closes.
fn serve(
    runtime: &tokio::runtime::Runtime,
    tls: rustls::ServerConfig,
) -> (String, Arc<AtomicUsize>) {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
            [127, 0, 0, 1],
            0,
        ))))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    runtime.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = r#"{"partner":{"id":7,"name":"acme","max_concurrent":30}}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                // Counted before the answer goes out: the client may read it (and the test check the
                // count) before this task runs again.
                count.fetch_add(1, Ordering::SeqCst);
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("https://{addr}/partner"), answered)
}

fn ask(extra_ca: Option<std::path::PathBuf>, url: &str) -> (Outcome, u64) {
    let runtime = IoRuntime::start(&RuntimeConfig::default()).unwrap();
    let mut config = ServicesConfig {
        services: vec![ServiceConfig {
            backend: Backend::Http,
            url: Some(url.to_owned()),
            timeout: Duration::from_secs(3),
            ..ServiceConfig::default_for(ServiceKind::Partner)
        }],
        ..ServicesConfig::default()
    };
    config.http.extra_ca_file = extra_ca;
    config.settlement.replay_every = None;
    let (tx, rx) = unbounded::<ServiceResult>();
    struct NoLocal;
    impl ServiceSink for NoLocal {
        fn submit(&mut self, _: ServiceRequest) -> Option<ServiceResult> {
            None
        }
    }
    let mut services = AsyncServices::new(
        &config,
        runtime.handle().clone(),
        Arc::new(tx),
        Some(Box::new(NoLocal)),
    )
    .unwrap();
    assert_eq!(
        services.submit(ServiceRequest::IdentifyPartner {
            call: CallId::from_u128(1),
            source_ip: Some("203.0.113.7".parse().unwrap()),
        }),
        None
    );
    let result = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let connect_errors = services
        .monitor()
        .count(ServiceKind::Partner, Event::Connect);
    runtime.shutdown(Duration::from_secs(2));
    (result.outcome, connect_errors)
}

#[test]
fn an_unknown_certificate_authority_is_refused_and_a_configured_one_trusted() {
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pki = pki();
    let (url, answered) = serve(&server_runtime, pki.server);

    // Verification is on: a certificate from an unknown CA fails the request, nothing is sent.
    let (outcome, connect_errors) = ask(None, &url);
    assert_eq!(
        outcome,
        Outcome::Failed(ServiceKind::Partner, ServiceFailure::Error)
    );
    assert_eq!(connect_errors, 1);
    assert_eq!(answered.load(Ordering::SeqCst), 0);

    // With the private CA configured, the same service is trusted.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let (outcome, _) = ask(Some(ca_file), &url);
    assert_eq!(
        outcome,
        Outcome::PartnerFound(PartnerInfo {
            id: 7,
            name: "acme".into(),
            max_concurrent: 30,
            max_cps: 0,
            max_call_cost: None,
            fraud: None,
        })
    );
    assert_eq!(answered.load(Ordering::SeqCst), 1);
}

#[test]
fn a_ca_file_without_certificates_is_refused() {
    let runtime = IoRuntime::start(&RuntimeConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("empty.pem");
    std::fs::write(&ca_file, "not a certificate\n").unwrap();
    let mut config = ServicesConfig {
        services: vec![ServiceConfig {
            backend: Backend::Http,
            url: Some("https://127.0.0.1:9/partner".into()),
            ..ServiceConfig::default_for(ServiceKind::Partner)
        }],
        ..ServicesConfig::default()
    };
    config.http.extra_ca_file = Some(ca_file);
    let (tx, _rx) = unbounded::<ServiceResult>();
    struct NoLocal;
    impl ServiceSink for NoLocal {
        fn submit(&mut self, _: ServiceRequest) -> Option<ServiceResult> {
            None
        }
    }
    let err = AsyncServices::new(
        &config,
        runtime.handle().clone(),
        Arc::new(tx),
        Some(Box::new(NoLocal)),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("empty.pem"), "{err}");
    runtime.shutdown(Duration::from_secs(2));
}
