//! Small text helpers of the S3 backend: error construction and readable messages,
//! and endpoint sanitising (nothing secret may reach a message or a log).

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;

use super::error::BackendError;

pub(super) fn io(what: String, detail: impl Into<String>, retryable: bool) -> BackendError {
    let detail = detail.into();
    BackendError::Io {
        what,
        detail,
        retryable,
    }
}

/// `outer: inner: innermost` along the source chain. The SDK's own `DisplayErrorContext`
/// appends a Debug dump of the whole error, which is unreadable in a terminal.
pub(super) fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        // Some wrappers already quote their cause in their own message.
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

pub(super) fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// Checks that an endpoint is an http(s) URL and strips any user:password from it, since
/// the endpoint is shown in locations, errors and logs.
pub(super) fn clean_endpoint(raw: &str) -> Result<String, String> {
    let not_url = || format!("endpoint {raw:?} is not an http:// or https:// URL");
    let mut url = url::Url::parse(raw).map_err(|_| not_url())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(not_url());
    }
    // Both only fail for URLs that cannot have credentials, and those have none to strip.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok(url.as_str().trim_end_matches('/').to_string())
}
