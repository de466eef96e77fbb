//! A fault-injecting HTTP/1.1 reverse proxy between Lifeboat and the S3 server.
//!
//! Lifeboat talks to the proxy (`?endpoint=` of the repository URL); the proxy forwards
//! path-style S3 requests to the real server and, for a seeded share of them, does what
//! flaky networks and overloaded object stores do: answers 500 InternalError or
//! 503 SlowDown, resets the connection, stalls past the client's timeout, cuts a
//! response body short, or forwards the request (so the server stores it) and then
//! drops the answer. Whether request number *n* is faulted, and how, is a pure function
//! of (seed, n): a run whose requests arrive in the same order sees the same faults.
//!
//! It can also *hold* every request from number *n* on, never forwarding it: the crash
//! tests use that to kill Lifeboat at an exact point of its conversation with storage.
//!
//! One request per connection (the proxy answers `Connection: close`): simple framing,
//! and a fault on one request never desynchronises another.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy can do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Not forwarded; answered `500 InternalError`.
    InternalError,
    /// Not forwarded; answered `503 SlowDown`.
    SlowDown,
    /// Not forwarded; the connection is reset (RST).
    Reset,
    /// Not forwarded; no answer for [`FaultConfig::stall`], then the connection closes.
    Stall,
    /// Forwarded; the answer's body is cut in half under its full Content-Length.
    /// Answers without a body are dropped instead (counted as [`Fault::DropResponse`]).
    Truncate,
    /// Forwarded (the server acts on it), then the connection closes unanswered.
    DropResponse,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::InternalError,
        Fault::SlowDown,
        Fault::Reset,
        Fault::Stall,
        Fault::Truncate,
        Fault::DropResponse,
    ];

    fn index(self) -> usize {
        Fault::ALL.iter().position(|f| *f == self).expect("listed")
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::InternalError => "500 InternalError",
            Fault::SlowDown => "503 SlowDown",
            Fault::Reset => "connection reset",
            Fault::Stall => "stall past timeout",
            Fault::Truncate => "truncated body",
            Fault::DropResponse => "response dropped after store",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FaultConfig {
    pub seed: u64,
    /// Share of requests faulted, 0.0..=1.0.
    pub rate: f64,
    /// Kinds to choose from, uniformly.
    pub kinds: Vec<Fault>,
    /// How long a stalled request hangs; must exceed the client's attempt timeout.
    pub stall: Duration,
}

impl FaultConfig {
    /// No faults: a transparent proxy (for counting requests and holding them).
    pub fn none() -> Self {
        Self {
            seed: 0,
            rate: 0.0,
            kinds: Fault::ALL.to_vec(),
            stall: Duration::from_secs(1),
        }
    }

    /// Every kind at `rate`.
    pub fn all(seed: u64, rate: f64, stall: Duration) -> Self {
        Self {
            seed,
            rate,
            kinds: Fault::ALL.to_vec(),
            stall,
        }
    }

    /// The fault for request number `n`: a pure function of (seed, n).
    fn decide(&self, n: u64) -> Option<Fault> {
        if self.rate <= 0.0 || self.kinds.is_empty() {
            return None;
        }
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n);
        rng.gen_bool(self.rate.min(1.0))
            .then(|| self.kinds[rng.gen_range(0..self.kinds.len())])
    }
}

/// One request the proxy finished with.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query as sent, e.g. `/bucket/lifeboat/data/ab/ab12…`.
    pub path: String,
    /// The server's status, if the request reached it.
    pub status: Option<u16>,
    /// Bytes of request body (an upload's size).
    pub body_len: u64,
    /// What the proxy did to it.
    pub fault: Option<Fault>,
}

impl Seen {
    /// Whether the client received the server's full, successful answer.
    pub fn delivered_ok(&self) -> bool {
        self.fault.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Faults injected so far, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub requests: u64,
    pub by_kind: [u64; 6],
}

impl FaultCounts {
    pub fn total(&self) -> u64 {
        self.by_kind.iter().sum()
    }

    pub fn get(&self, kind: Fault) -> u64 {
        self.by_kind[kind.index()]
    }

    pub fn add(&mut self, other: &FaultCounts) {
        self.requests += other.requests;
        for (a, b) in self.by_kind.iter_mut().zip(other.by_kind) {
            *a += b;
        }
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests, {} faults injected",
            self.requests,
            self.total()
        )?;
        for kind in Fault::ALL {
            write!(f, "\n  {:<30} {}", kind.name(), self.get(kind))?;
        }
        Ok(())
    }
}

struct State {
    upstream: String,
    config: Mutex<FaultConfig>,
    next: AtomicU64,
    by_kind: [AtomicU64; 6],
    seen: Mutex<Vec<Seen>>,
    /// Faults forced on the next requests, before any seeded decision.
    forced: Mutex<std::collections::VecDeque<Fault>>,
    /// Requests numbered at or above this are held, never forwarded.
    hold_from: AtomicU64,
    /// Requests with this method whose path contains this text are held too.
    hold_matching: Mutex<Option<(String, String)>>,
    held: AtomicU64,
    /// Bumped to let held requests go (their connections close unanswered).
    release: tokio::sync::watch::Sender<u64>,
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`, for `?endpoint=`.
    pub endpoint: String,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Starts a proxy in front of `upstream` (`http://host:port`).
    pub fn start(upstream: &str, config: FaultConfig) -> Proxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("the proxy forwards plain http")
            .trim_end_matches('/')
            .to_string();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("binding the proxy");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            upstream,
            config: Mutex::new(config),
            next: AtomicU64::new(0),
            by_kind: Default::default(),
            seen: Mutex::new(Vec::new()),
            forced: Mutex::default(),
            hold_from: AtomicU64::new(u64::MAX),
            hold_matching: Mutex::default(),
            held: AtomicU64::new(0),
            release: tokio::sync::watch::channel(0).0,
        });
        let s = state.clone();
        runtime.spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, s.clone()));
            }
        });
        Proxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            state,
            runtime: Some(runtime),
        }
    }

    /// `url` (an `s3://…?endpoint=…` repository URL) with its endpoint pointed here.
    pub fn repo_url(&self, url: &str) -> String {
        let (base, _) = url
            .split_once("?endpoint=")
            .expect("an S3 URL with endpoint");
        format!("{base}?endpoint={}", self.endpoint)
    }

    pub fn set_config(&self, config: FaultConfig) {
        *self.state.config.lock().unwrap() = config;
    }

    pub fn counts(&self) -> FaultCounts {
        FaultCounts {
            requests: self.state.next.load(Ordering::SeqCst),
            by_kind: std::array::from_fn(|i| self.state.by_kind[i].load(Ordering::SeqCst)),
        }
    }

    /// Requests numbered so far (including held ones).
    pub fn requests(&self) -> u64 {
        self.state.next.load(Ordering::SeqCst)
    }

    /// Every finished request so far, and forgets them.
    pub fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut self.state.seen.lock().unwrap())
    }

    /// Does `fault` to the next request that arrives (then `faults` to the ones after).
    pub fn force(&self, faults: &[Fault]) {
        self.state.forced.lock().unwrap().extend(faults);
    }

    /// Holds every request numbered `n` or later (counting from the proxy's start).
    pub fn hold_from(&self, n: u64) {
        self.state.hold_from.store(n, Ordering::SeqCst);
    }

    /// Holds every `method` request whose path contains `path_part` (e.g. the first
    /// `PUT` of a manifest: a crash exactly between a run's data and its commit).
    pub fn hold_matching(&self, method: &str, path_part: &str) {
        *self.state.hold_matching.lock().unwrap() = Some((method.into(), path_part.into()));
    }

    /// How many requests are being held right now.
    pub fn held(&self) -> u64 {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Stops holding; requests held so far are dropped unanswered, never forwarded.
    pub fn release(&self) {
        self.state.hold_from.store(u64::MAX, Ordering::SeqCst);
        *self.state.hold_matching.lock().unwrap() = None;
        self.state.release.send_modify(|v| *v += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.release();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A request read off the client connection.
struct Request {
    method: String,
    path: String,
    /// Request line and headers for upstream, ending in the blank line.
    head: Vec<u8>,
    /// The body exactly as the client framed it (Content-Length or chunked).
    body: Vec<u8>,
}

async fn serve(mut conn: TcpStream, state: Arc<State>) {
    let Ok(Some(req)) = read_request(&mut conn).await else {
        return;
    };
    let n = state.next.fetch_add(1, Ordering::SeqCst);
    let matched = state
        .hold_matching
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|(m, p)| req.method == *m && req.path.contains(p.as_str()));
    if matched || n >= state.hold_from.load(Ordering::SeqCst) {
        let mut release = state.release.subscribe();
        state.held.fetch_add(1, Ordering::SeqCst);
        let _ = release.changed().await;
        state.held.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let config = state.config.lock().unwrap().clone();
    let forced = state.forced.lock().unwrap().pop_front();
    let mut fault = forced.or_else(|| config.decide(n));
    let mut status = None;
    match fault {
        Some(kind @ (Fault::InternalError | Fault::SlowDown)) => {
            let _ = conn.write_all(&error_response(kind, &req.method, n)).await;
        }
        Some(Fault::Reset) => {
            let _ = conn.set_zero_linger();
        }
        Some(Fault::Stall) => tokio::time::sleep(config.stall).await,
        Some(Fault::Truncate | Fault::DropResponse) | None => {
            let Ok(response) = forward(&state.upstream, &req).await else {
                // The server is gone; the client sees a dropped connection.
                return;
            };
            status = parse_status(&response.head);
            match (fault, truncation_point(&req.method, &response)) {
                (None, _) => {
                    let _ = conn.write_all(&response.head).await;
                    let _ = conn.write_all(&response.body).await;
                }
                (Some(Fault::Truncate), Some(keep)) => {
                    let _ = conn.write_all(&response.head).await;
                    let _ = conn.write_all(&response.body[..keep]).await;
                }
                // Nothing to cut short: drop the whole answer instead.
                _ => fault = Some(Fault::DropResponse),
            }
        }
    }
    if let Some(kind) = fault {
        state.by_kind[kind.index()].fetch_add(1, Ordering::SeqCst);
    }
    let _ = conn.flush().await;
    let _ = conn.shutdown().await;
    state.seen.lock().unwrap().push(Seen {
        body_len: req.body.len() as u64,
        method: req.method,
        path: req.path,
        status,
        fault,
    });
}

/// Reads one request; `None` when the client closed first.
async fn read_request(conn: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let (read, mut write) = conn.split();
    let mut reader = BufReader::new(read);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).await? == 0 {
        return Ok(None);
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut head = request_line.clone().into_bytes();
    let (mut length, mut chunked, mut expect) = (0usize, false, false);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        if line == "\r\n" {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => length = value.parse().unwrap_or(0),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "expect" => expect = value.eq_ignore_ascii_case("100-continue"),
            // One request per upstream connection; Expect is answered here.
            "connection" | "keep-alive" => continue,
            _ => {}
        }
        if name != "expect" {
            head.extend_from_slice(line.as_bytes());
        }
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    if expect && (chunked || length > 0) {
        write.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).await?;
            body.extend_from_slice(size_line.as_bytes());
            let hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(hex, 16).map_err(std::io::Error::other)?;
            if size == 0 {
                // Trailers, up to the blank line.
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await? == 0 {
                        break;
                    }
                    body.extend_from_slice(line.as_bytes());
                    if line == "\r\n" {
                        break;
                    }
                }
                break;
            }
            let at = body.len();
            body.resize(at + size + 2, 0);
            reader.read_exact(&mut body[at..]).await?;
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body).await?;
    }
    Ok(Some(Request {
        method,
        path,
        head,
        body,
    }))
}

struct Response {
    /// Status line and headers, `Connection: close` included, ending in the blank line.
    head: Vec<u8>,
    body: Vec<u8>,
    content_length: Option<usize>,
}

/// Sends the request on a fresh connection and reads the answer to its end (the
/// server closes it: we asked for `Connection: close`).
async fn forward(upstream: &str, req: &Request) -> std::io::Result<Response> {
    let mut up = TcpStream::connect(upstream).await?;
    up.write_all(&req.head).await?;
    up.write_all(&req.body).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), up.read_to_end(&mut raw))
        .await
        .map_err(std::io::Error::other)??;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("upstream answer without a header end"))?;
    let text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut head = String::new();
    let mut content_length = None;
    for (i, line) in text.split("\r\n").enumerate() {
        let lower = line.to_ascii_lowercase();
        if i > 0 && lower.starts_with("connection:") {
            continue;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().ok();
        }
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    Ok(Response {
        head: head.into_bytes(),
        body: raw[end + 4..].to_vec(),
        content_length,
    })
}

/// How much of the body a truncated answer keeps, if it can be truncated detectably:
/// only bodies that announce their length, so the client can tell it was cut.
fn truncation_point(method: &str, response: &Response) -> Option<usize> {
    let announced = response.content_length?;
    (method != "HEAD" && announced > 0 && response.body.len() == announced).then_some(announced / 2)
}

fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn error_response(kind: Fault, method: &str, n: u64) -> Vec<u8> {
    let (status, code, message) = match kind {
        Fault::SlowDown => (
            "503 Slow Down",
            "SlowDown",
            "Please reduce your request rate.",
        ),
        _ => (
            "500 Internal Server Error",
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>fault-{n}</RequestId></Error>"
    );
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         x-amz-request-id: fault-{n}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        out.push_str(&body);
    }
    out.into_bytes()
}

/// A deterministic stream of values for one seed (crash points, data), independent
/// of the proxy's own per-request decisions.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Whether `seen` is a successful upload of a pack (`PUT …/data/…`).
pub fn is_pack_put(seen: &Seen) -> bool {
    seen.method == "PUT" && seen.path.contains("/data/") && seen.delivered_ok()
}
