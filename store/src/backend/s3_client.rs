//! How the S3 backend talks HTTP: retries, timeouts, the TLS policy, and the keys of a
//! `profile=` address.
//!
//! `https://` endpoints are verified against the platform's trust store (the SDK's
//! default rustls client with native roots, which also honours `SSL_CERT_FILE` and
//! `SSL_CERT_DIR`: the right way to trust a private CA). Only the explicit
//! `--insecure-tls` switches verification off, through [`insecure_http_client`]: the
//! same hyper and rustls the SDK uses, with a verifier that accepts any certificate.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, SharedHttpClient, SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::retries::classifiers::{
    ClassifyRetry, RetryAction, RetryClassifierPriority,
};
use aws_smithy_types::body::SdkBody;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

const MAX_ATTEMPTS: u32 = 8;
/// Caps the jittered exponential backoff so that 8 attempts against a refusing endpoint
/// give up after at most ~27 s of sleeping instead of the SDK default of over a minute.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Per attempt, not per operation, so retries of a large upload each get the full time
/// (a 64 MiB single PUT on a modest uplink needs most of it). It does not cover reading
/// a GetObject body; the SDK's stalled-stream protection (on by default) fails transfers
/// that stop moving. [`ATTEMPT_TIMEOUT_ENV`] overrides it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);
/// Seconds per attempt instead of [`ATTEMPT_TIMEOUT`]: an ops and test knob. A lower
/// value fails over faster from a hung endpoint on a fast LAN (the fault tests use it so
/// a stalled request costs seconds, not minutes); a higher one suits a slow uplink.
pub const ATTEMPT_TIMEOUT_ENV: &str = "LIFEBOAT_S3_TIMEOUT";

pub(super) fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_max_backoff(MAX_BACKOFF)
}

/// The credentials of the address's `profile=NAME`, checked now: a missing profile would
/// otherwise fail the first request with an SDK message naming neither it nor the file.
pub(super) async fn profile_credentials(
    name: &str,
) -> Result<aws_config::profile::ProfileFileCredentialsProvider, super::error::BackendError> {
    use aws_sdk_s3::config::ProvideCredentials;
    let provider = aws_config::profile::ProfileFileCredentialsProvider::builder()
        .profile_name(name)
        .build();
    match provider.provide_credentials().await {
        Ok(_) => Ok(provider),
        Err(e) => Err(super::s3_text::io(
            format!("loading the keys of AWS profile {name:?} (profile= of the address)"),
            format!(
                "missing or without usable keys ({}); define it in AWS_SHARED_CREDENTIALS_FILE \
                 or AWS_CONFIG_FILE (default ~/.aws/)",
                super::s3_text::describe(&e)
            ),
            false,
        )),
    }
}

pub(super) fn timeout_config() -> Result<TimeoutConfig, String> {
    Ok(TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(attempt_timeout()?)
        .build())
}

/// [`ATTEMPT_TIMEOUT`] unless [`ATTEMPT_TIMEOUT_ENV`] says otherwise.
fn attempt_timeout() -> Result<Duration, String> {
    match std::env::var(ATTEMPT_TIMEOUT_ENV) {
        Err(_) => Ok(ATTEMPT_TIMEOUT),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
            _ => Err(format!(
                "{ATTEMPT_TIMEOUT_ENV}={v:?} is not a whole number of seconds above 0 (it sets \
                 the S3 per-request timeout; unset it for the default {} s)",
                ATTEMPT_TIMEOUT.as_secs()
            )),
        },
    }
}

/// An HTTP client that accepts any server certificate: encryption without
/// authentication, for test rigs and appliances with self-signed certificates whose CA
/// cannot be installed. Callers must have warned the user.
pub(super) fn insecure_http_client() -> SharedHttpClient {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(https);
    let connector = SharedHttpConnector::new(InsecureConnector { client });
    http_client_fn(move |_, _| connector.clone())
}

type HyperClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    SdkBody,
>;

#[derive(Debug, Clone)]
struct InsecureConnector {
    client: HyperClient,
}

impl HttpConnector for InsecureConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let response = self.client.request(request);
        HttpConnectorFuture::new(async move {
            match response.await {
                Ok(r) => HttpResponse::try_from(r.map(SdkBody::from_body_1_x))
                    .map_err(|e| ConnectorError::other(e.into(), None)),
                // Connect failures, resets and cut-off answers: worth another attempt.
                Err(e) => Err(ConnectorError::io(e.into())),
            }
        })
    }
}

/// Accepts every certificate chain, but still checks the handshake signatures (so the
/// peer does hold the key of the certificate it presented, whatever that is).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Forbids retries of a TLS handshake that failed on the certificate: the answer will
/// not change, and eight attempts with backoff only delay the message that says so.
#[derive(Debug)]
pub(super) struct NoRetryOnBadCertificate;

impl ClassifyRetry for NoRetryOnBadCertificate {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(err)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        match err.as_connector_error() {
            Some(e) if is_certificate_error(&super::s3_text::describe(e)) => {
                RetryAction::RetryForbidden
            }
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "lifeboat: no retry on TLS certificate errors"
    }

    fn priority(&self) -> RetryClassifierPriority {
        // After the SDK's transient-error classifier, which would call it retryable I/O.
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

/// Whether an error's text is rustls rejecting the server's certificate.
pub(super) fn is_certificate_error(detail: &str) -> bool {
    detail.contains("invalid peer certificate") || detail.contains("certificate verify failed")
}

/// What to tell a user whose endpoint's certificate was rejected.
pub(super) fn certificate_advice(detail: &str, endpoint: &str) -> String {
    format!(
        "{detail}; the TLS certificate of {endpoint} was not accepted: if a private CA \
         signed it, point SSL_CERT_FILE at that CA's PEM file (--insecure-tls skips \
         verification, at the cost of all protection against impostors)"
    )
}
