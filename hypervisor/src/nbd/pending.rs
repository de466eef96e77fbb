//! What the callers, the writer task and the reader task of one connection share:
//! the requests waiting for replies, and whether the connection is still usable.
//!
//! A caller registers its request here before the writer sends it; the reader
//! (`replies`) takes it out when the reply arrives, fills it, and completes it with
//! [`Pending::finish`] or [`Pending::fail`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, oneshot};

use super::error::NbdError;
use super::extents::BlockExtent;

/// The state of one connection, behind an `Arc` in every task.
pub(super) struct Shared {
    state: Mutex<State>,
    next_cookie: AtomicU64,
    /// Wakes the reader when the writer fails: replies to unsent requests never come.
    pub(super) writer_failed: Notify,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) pending: HashMap<u64, Pending>,
    /// Set once the connection is unusable; what every later request gets.
    pub(super) lost: Option<Lost>,
}

impl Shared {
    pub(super) fn new() -> Shared {
        Shared {
            state: Mutex::new(State::default()),
            next_cookie: AtomicU64::new(1),
            writer_failed: Notify::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // Never held across an await or a panicking call; recover rather than cascade.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A cookie no other request of this connection has.
    pub(super) fn next_cookie(&self) -> u64 {
        self.next_cookie.fetch_add(1, Ordering::Relaxed)
    }
}

/// Why a connection ended.
#[derive(Clone)]
pub(super) struct Lost {
    pub(super) reason: String,
    /// The server broke the protocol: retrying the same thing will not help.
    pub(super) broken_protocol: bool,
}

impl Lost {
    pub(super) fn transport(reason: String) -> Self {
        Lost {
            reason,
            broken_protocol: false,
        }
    }

    pub(super) fn error(&self) -> NbdError {
        if self.broken_protocol {
            NbdError::Protocol(self.reason.clone())
        } else {
            NbdError::ConnectionLost {
                reason: self.reason.clone(),
            }
        }
    }
}

/// A request waiting for (the rest of) its reply.
pub(super) struct Pending {
    pub(super) offset: u64,
    pub(super) length: u32,
    /// The first error chunk. A structured reply still runs to its final chunk.
    pub(super) error: Option<NbdError>,
    pub(super) op: Op,
}

pub(super) enum Op {
    Read {
        buf: BytesMut,
        /// Ranges of `buf` (relative) the reply has covered, checked at the end.
        spans: Vec<(u32, u32)>,
        tx: oneshot::Sender<Result<Bytes, NbdError>>,
    },
    Status {
        context_id: u32,
        extents: Option<Vec<BlockExtent>>,
        tx: oneshot::Sender<Result<Vec<BlockExtent>, NbdError>>,
    },
    /// Write, write-zeroes or flush: success is a bare acknowledgement.
    Ack {
        command: &'static str,
        tx: oneshot::Sender<Result<(), NbdError>>,
    },
}

impl Pending {
    pub(super) fn command(&self) -> &'static str {
        match self.op {
            Op::Read { .. } => "read",
            Op::Status { .. } => "block status",
            Op::Ack { command, .. } => command,
        }
    }

    pub(super) fn fail(self, e: NbdError) {
        // A closed receiver means the caller stopped waiting; nothing to do then.
        match self.op {
            Op::Read { tx, .. } => drop(tx.send(Err(e))),
            Op::Status { tx, .. } => drop(tx.send(Err(e))),
            Op::Ack { tx, .. } => drop(tx.send(Err(e))),
        }
    }

    /// Completes the request after its last reply chunk.
    pub(super) fn finish(self) {
        let Pending {
            offset,
            length,
            error,
            op,
        } = self;
        match op {
            Op::Read { buf, mut spans, tx } => {
                let result = match error {
                    Some(e) => Err(e),
                    None => {
                        // Chunks may come in any order but must tile the request exactly.
                        spans.sort_unstable();
                        let mut end = 0;
                        let tiled = spans.iter().all(|&(s, e)| {
                            let ok = s == end;
                            end = e;
                            ok
                        }) && end == length;
                        if tiled {
                            Ok(buf.freeze())
                        } else {
                            Err(NbdError::Protocol(format!(
                                "reply to the read of {length} bytes at {offset} does not cover it exactly once"
                            )))
                        }
                    }
                };
                drop(tx.send(result));
            }
            Op::Status { extents, tx, .. } => {
                let result = match error {
                    Some(e) => Err(e),
                    None => extents.filter(|e| !e.is_empty()).ok_or_else(|| {
                        NbdError::Protocol(
                            "block status reply without extents for the context asked".into(),
                        )
                    }),
                };
                drop(tx.send(result));
            }
            Op::Ack { tx, .. } => drop(tx.send(error.map_or(Ok(()), Err))),
        }
    }
}
