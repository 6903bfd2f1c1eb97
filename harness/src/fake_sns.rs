//! A loopback HTTPS "SNS" that serves signing certificates to a real `serve` process, with no
//! product flag: the service reaches it as it would reach AWS, through an HTTP proxy
//! (`HTTPS_PROXY`, which its HTTP client honours), and trusts it through `SSL_CERT_FILE` (the
//! system roots' override the platform verifier reads on Linux). The proxy answers `CONNECT`
//! itself and terminates TLS with a certificate for `sns.<region>.amazonaws.com` issued by a CA
//! of its own; the URL policy is unchanged. Every fetch is counted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub struct FakeSns {
    /// `http://127.0.0.1:<port>`: the value for `HTTPS_PROXY`.
    pub proxy: String,
    /// The CA's PEM: the value for `SSL_CERT_FILE`.
    pub ca_file: PathBuf,
    bodies: Arc<Mutex<HashMap<String, String>>>,
    fetches: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

/// Reads until the end of an HTTP head (or the peer stops).
async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 16 * 1024 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A TLS acceptor for `hosts` with a certificate issued by a fresh test CA, and that CA's PEM
/// (what a client must trust to reach it).
pub fn tls_acceptor(hosts: &[&str]) -> (tokio_rustls::TlsAcceptor, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fake SNS test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
        )
        .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca.pem())
}

impl FakeSns {
    /// Serves `hosts` (e.g. `sns.us-east-1.amazonaws.com`): 404 for every path until
    /// [`FakeSns::serve`] gives it a body.
    pub async fn start(hosts: &[&str]) -> Self {
        let (acceptor, ca_pem) = tls_acceptor(hosts);
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = format!("http://{}", listener.local_addr().unwrap());
        let bodies: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let (fetches, served) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (b, f, sv) = (bodies.clone(), fetches.clone(), served.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, bodies, fetches, served) =
                    (acceptor.clone(), b.clone(), f.clone(), sv.clone());
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut tcp).await else {
                        return;
                    };
                    let Some(host) = head
                        .strip_prefix("CONNECT ")
                        .and_then(|r| r.split_whitespace().next())
                        .and_then(|a| a.strip_suffix(":443"))
                        .map(str::to_owned)
                    else {
                        let _ = tcp
                            .write_all(b"HTTP/1.1 405 X\r\nContent-Length: 0\r\n\r\n")
                            .await;
                        return;
                    };
                    if tcp
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Some(req) = read_head(&mut tls).await else {
                        return;
                    };
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let path = req.split_whitespace().nth(1).unwrap_or("/");
                    let url = format!("https://{host}{path}");
                    let body = bodies.lock().get(&url).cloned();
                    let (status, body) = match body {
                        Some(b) => {
                            served.fetch_add(1, Ordering::SeqCst);
                            (200, b)
                        }
                        None => (404, "<Error><Code>NoSuchKey</Code></Error>".to_owned()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(body.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        FakeSns {
            proxy,
            ca_file,
            bodies,
            fetches,
            served,
            _dir: dir,
        }
    }

    /// Serves `pem` at `url` (an `https://<host>/<path>` on one of the hosts).
    pub fn serve(&self, url: &str, pem: &str) {
        self.bodies.lock().insert(url.to_owned(), pem.to_owned());
    }

    /// The environment a `serve` process needs to fetch from here (for
    /// [`crate::Service::start_with`]); the stack's loopback services are not proxied.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HTTPS_PROXY", self.proxy.clone()),
            ("NO_PROXY", "127.0.0.1,localhost".into()),
            ("SSL_CERT_FILE", self.ca_file.display().to_string()),
        ]
    }

    /// Certificate requests received, and those answered with a certificate.
    pub fn fetches(&self) -> (usize, usize) {
        (
            self.fetches.load(Ordering::SeqCst),
            self.served.load(Ordering::SeqCst),
        )
    }
}
