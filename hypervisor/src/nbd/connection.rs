//! One NBD connection's machinery: the writer task that sends request headers, the
//! reader task that demultiplexes replies, and the pending requests between them.
//!
//! ```text
//!  callers (&self) ── register cookie ──► pending map ◄── reader task ◄── socket read half
//!        │                                              (demultiplexes replies and fills
//!        │                                               each request's own buffer)
//!        └── 28-byte request (+ write data) ──► channel ──► writer task ──► socket write half
//! ```
//!
//! Why a writer task rather than a lock around the write half: a caller whose future
//! is dropped half-way through `write_all` would leave a torn request on the stream and
//! corrupt the connection for everyone. A request put on an unbounded channel is
//! queued whole or not at all, synchronously, so callers can be cancelled at any
//! `.await` safely. The writer also batches requests queued together into one write.
//!
//! A request is registered in the pending map (`pending`) *before* it is queued, so
//! its reply can never arrive unannounced. The reader (`replies`) owns the read half
//! and always consumes whole replies, even for callers that gave up waiting.
//!
//! A reply that breaks the protocol ends the connection (nothing after it can be
//! trusted to be framed right); an error *chunk* fails only its own request. When the
//! connection dies, every pending request fails, and so does every later one.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::error::NbdError;
use super::extents::BlockExtent;
use super::pending::{Lost, Op, Pending, Shared};
use super::replies::read_replies;
use super::transmission::{
    self, CMD_BLOCK_STATUS, CMD_DISC, CMD_READ, CMD_WRITE, CMD_WRITE_ZEROES,
};

/// How long `close` waits for the server to hang up after `NBD_CMD_DISC`.
const DISCONNECT_WAIT: Duration = Duration::from_secs(5);

/// A writer batch grows to about this size before it goes to the socket.
const WRITE_BATCH: usize = 256 << 10;

/// Big enough to batch small replies; large data chunks bypass it and are read
/// straight into the request's buffer.
const READ_BUFFER: usize = 256 << 10;

/// One request as queued for the writer: the header, and a write's data.
struct Request {
    header: [u8; 28],
    payload: Option<Bytes>,
}

pub(super) type ReadStream = Box<dyn AsyncRead + Send + Unpin>;
pub(super) type WriteStream = Box<dyn AsyncWrite + Send + Unpin>;

/// The running tasks of one connection, and the way to hand them requests.
pub(super) struct Connection {
    shared: Arc<Shared>,
    requests: mpsc::UnboundedSender<Request>,
    writer: JoinHandle<io::Result<()>>,
    reader: ReaderTask,
}

/// Aborts the reader task when the connection is dropped without `close`.
struct ReaderTask(Option<JoinHandle<()>>);

impl Drop for ReaderTask {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

impl Connection {
    /// Starts the reader and writer tasks on a negotiated stream.
    pub(super) fn spawn(r: ReadStream, w: WriteStream, structured: bool) -> Connection {
        let shared = Arc::new(Shared::new());
        let (requests, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_requests(w, rx, shared.clone()));
        let r = BufReader::with_capacity(READ_BUFFER, r);
        let reader = tokio::spawn(read_replies(r, shared.clone(), structured));
        Connection {
            shared,
            requests,
            writer,
            reader: ReaderTask(Some(reader)),
        }
    }

    /// Sends a read and waits for its data (`len` bytes, holes as zeros).
    pub(super) async fn read(&self, offset: u64, length: u32) -> Result<Bytes, NbdError> {
        let (tx, rx) = oneshot::channel();
        // Zeroed up front, so hole chunks need no work (and calloc'd pages cost
        // nothing until data lands in them).
        let buf = BytesMut::zeroed(length as usize);
        let op = Op::Read {
            buf,
            spans: Vec::new(),
            tx,
        };
        self.submit(
            CMD_READ,
            Pending {
                offset,
                length,
                error: None,
                op,
            },
            None,
            rx,
        )
        .await
    }

    /// Sends a command answered by a bare acknowledgement (write, write-zeroes,
    /// flush), with `payload` after the header for a write, and waits for it.
    pub(super) async fn acked(
        &self,
        kind: u16,
        offset: u64,
        length: u32,
        payload: Option<Bytes>,
    ) -> Result<(), NbdError> {
        let (tx, rx) = oneshot::channel();
        let command = match kind {
            CMD_WRITE => "write",
            CMD_WRITE_ZEROES => "write zeroes",
            _ => "flush",
        };
        let pending = Pending {
            offset,
            length,
            error: None,
            op: Op::Ack { command, tx },
        };
        self.submit(kind, pending, payload, rx).await
    }

    /// Sends a block-status request and waits for the extents of `context_id`.
    pub(super) async fn block_status(
        &self,
        context_id: u32,
        offset: u64,
        length: u32,
    ) -> Result<Vec<BlockExtent>, NbdError> {
        let (tx, rx) = oneshot::channel();
        let op = Op::Status {
            context_id,
            extents: None,
            tx,
        };
        let pending = Pending {
            offset,
            length,
            error: None,
            op,
        };
        self.submit(CMD_BLOCK_STATUS, pending, None, rx).await
    }

    async fn submit<T>(
        &self,
        kind: u16,
        pending: Pending,
        payload: Option<Bytes>,
        rx: oneshot::Receiver<Result<T, NbdError>>,
    ) -> Result<T, NbdError> {
        let (offset, length) = (pending.offset, pending.length);
        let cookie = self.shared.next_cookie();
        {
            let mut st = self.shared.lock();
            if let Some(lost) = &st.lost {
                return Err(lost.error());
            }
            st.pending.insert(cookie, pending);
        }
        // Registered first, queued second, with no await in between: cancel-safe.
        let header = transmission::encode_request(kind, cookie, offset, length);
        if self.requests.send(Request { header, payload }).is_err() {
            self.shared.lock().pending.remove(&cookie);
            let reason = "the request writer stopped".into();
            return Err(NbdError::ConnectionLost { reason });
        }
        rx.await.unwrap_or_else(|_| {
            let reason = "the reply reader stopped".into();
            Err(NbdError::ConnectionLost { reason })
        })
    }

    /// Sends `NBD_CMD_DISC` after whatever is queued, shuts the write half, and waits
    /// briefly for the server to finish outstanding requests and hang up.
    pub(super) async fn close(self) -> Result<(), NbdError> {
        let Connection {
            shared,
            requests,
            writer,
            mut reader,
        } = self;
        let cookie = shared.next_cookie();
        let header = transmission::encode_request(CMD_DISC, cookie, 0, 0);
        let _ = requests.send(Request {
            header,
            payload: None,
        });
        drop(requests); // the writer's cue to flush and shut down
        let written = writer.await;
        if let Some(handle) = reader.0.as_mut()
            && tokio::time::timeout(DISCONNECT_WAIT, handle).await.is_ok()
        {
            reader.0 = None;
        }
        let already_lost = shared.lock().lost.is_some();
        match written {
            Ok(Ok(())) => Ok(()),
            // Nothing to tear down on a connection that had already failed.
            _ if already_lost => Ok(()),
            Ok(Err(source)) => Err(NbdError::Io {
                context: "sending NBD_CMD_DISC",
                source,
            }),
            Err(e) => {
                let reason = format!("writer task failed: {e}");
                Err(NbdError::ConnectionLost { reason })
            }
        }
    }
}

async fn write_requests(
    mut w: WriteStream,
    mut rx: mpsc::UnboundedReceiver<Request>,
    shared: Arc<Shared>,
) -> io::Result<()> {
    let mut batch = Vec::with_capacity(28 * 64);
    while let Some(request) = rx.recv().await {
        batch.clear();
        let mut next = Some(request);
        // Headers and small payloads are copied into one write; a large payload
        // goes out on its own after the batch before it, uncopied.
        while let Some(Request { header, payload }) = next.take() {
            batch.extend_from_slice(&header);
            if let Some(p) = payload {
                if p.len() < 64 << 10 {
                    batch.extend_from_slice(&p);
                } else {
                    let sent = async {
                        w.write_all(&batch).await?;
                        w.write_all(&p).await
                    };
                    if let Err(e) = sent.await {
                        return Err(writer_failed(&shared, e));
                    }
                    batch.clear();
                }
            }
            if batch.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = w.write_all(&batch).await {
            return Err(writer_failed(&shared, e));
        }
    }
    // Every sender is gone: the client was dropped or disconnected.
    w.shutdown().await
}

/// Marks the connection lost after a failed send and wakes the reader.
fn writer_failed(shared: &Shared, e: io::Error) -> io::Error {
    let lost = Lost::transport(format!("sending a request failed: {e}"));
    shared.lock().lost.get_or_insert(lost);
    shared.writer_failed.notify_one();
    e
}
