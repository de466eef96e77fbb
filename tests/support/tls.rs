//! An `https://` endpoint for tests: a TLS terminator with a certificate from a fresh
//! private CA (made with the `openssl` CLI) in front of the plain-HTTP S3 test server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

pub struct TlsEndpoint {
    /// `https://127.0.0.1:PORT`
    pub endpoint: String,
    /// The private CA's certificate, PEM: what a user would point SSL_CERT_FILE at.
    pub ca: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for TlsEndpoint {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (install the openssl package)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a private CA and a certificate it signed for 127.0.0.1 into `dir`; returns
/// (CA certificate, server certificate, server key).
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = [
        &["req", "-x509"],
        &ec[..],
        &["-days", "2", "-subj", "/CN=lifeboat test CA"],
    ];
    openssl(
        &[&ca.concat()[..], &["-keyout", "ca.key", "-out", "ca.pem"]].concat(),
        dir,
    );
    let csr = [
        &["req"],
        &ec[..],
        &["-subj", "/CN=127.0.0.1", "-keyout", "tls.key"],
    ];
    openssl(&[&csr.concat()[..], &["-out", "tls.csr"]].concat(), dir);
    std::fs::write(
        dir.join("tls.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "tls.ext",
            "-out",
            "tls.pem",
        ],
        dir,
    );
    (dir.join("ca.pem"), dir.join("tls.pem"), dir.join("tls.key"))
}

/// Starts a TLS endpoint in `dir` that forwards to `upstream` (`http://host:port`).
pub fn start(dir: &Path, upstream: &str) -> TlsEndpoint {
    let (ca, cert, key) = private_ca(dir);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let upstream = upstream.trim_start_matches("http://").to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                // A client that rejects the certificate aborts the handshake: nothing to do.
                let Ok(mut tls) = acceptor.accept(conn).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    TlsEndpoint {
        endpoint: format!("https://127.0.0.1:{port}"),
        ca,
        runtime: Some(runtime),
    }
}
