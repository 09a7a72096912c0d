//! One side of the relay ([`Leg`]): its socket, its receive buffer and how much of a frame it
//! still streams. The upstream side of a transaction-mode session holds a pooled server
//! connection only while it has one ([`Io`]); with none it neither reads nor writes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::buffer::{RecvBuf, SendBuf};
use crate::net::Stream;
use crate::pool::Server;

/// Largest read when no frame asks for more.
pub(super) const READ_CHUNK: usize = 16 * 1024;
/// First read size of a leg: an idle session holds this much per leg. Reads that fill it
/// double it, up to [`READ_CHUNK`], so streaming a large result still reads in big chunks.
pub(super) const FIRST_READ: usize = 2 * 1024;
/// Buffers that grew past this for one big frame are shrunk back once empty.
pub(super) const KEEP_CAPACITY: usize = 64 * 1024;
/// A frame that must be inspected whole grows the receive buffer by at most this per read, so
/// a header declaring 1 GiB costs nothing until the bytes arrive.
pub(super) const GROW_STEP: usize = 64 * 1024;
/// What a leg reads and writes.
pub(super) enum Io {
    /// The client, or a session-mode upstream connection.
    Stream(Stream),
    /// A pooled server connection the session holds (transaction mode).
    Server(Server),
    /// No server held (transaction mode, between transactions).
    Detached,
}

impl Io {
    pub fn stream(&mut self) -> Option<&mut Stream> {
        match self {
            Io::Stream(stream) => Some(stream),
            Io::Server(server) => Some(server.stream_mut()),
            Io::Detached => None,
        }
    }

    pub fn server(&mut self) -> Option<&mut Server> {
        match self {
            Io::Server(server) => Some(server),
            Io::Stream(_) | Io::Detached => None,
        }
    }
}

/// One side of the relay.
pub(super) struct Leg {
    pub io: Io,
    pub recv: RecvBuf,
    /// Bytes still owed for a frame whose start was already forwarded.
    pub streaming_left: usize,
    /// How many more bytes the frame at the front needs.
    pub want: usize,
    /// Current read size (grows from FIRST_READ while reads fill it).
    read_size: usize,
    /// The frame being streamed is dropped instead of forwarded.
    pub streaming_suppressed: bool,
    pub needs_flush: bool,
}

impl Leg {
    pub fn new(io: Io) -> Self {
        Leg {
            io,
            recv: RecvBuf::new(FIRST_READ),
            streaming_left: 0,
            want: 0,
            read_size: FIRST_READ,
            streaming_suppressed: false,
            needs_flush: false,
        }
    }

    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(stream) = self.io.stream() else {
            // No server held: the session is woken by its checkout instead.
            return Poll::Pending;
        };
        let spare = self
            .recv
            .spare(self.want.min(GROW_STEP).max(self.read_size));
        let room = spare.len();
        let mut buf = ReadBuf::new(spare);
        match Pin::new(stream).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                self.recv.commit(n);
                if n == room && self.read_size < READ_CHUNK {
                    self.read_size = (self.read_size * 2).min(READ_CHUNK);
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes as much of `out` as the socket takes; true when anything moved.
    pub fn poll_send(&mut self, out: &mut SendBuf, cx: &mut Context<'_>) -> io::Result<bool> {
        let mut progressed = false;
        let Some(stream) = self.io.stream() else {
            return Ok(false);
        };
        while !out.is_empty() {
            match Pin::new(&mut *stream).poll_write(cx, out.pending()) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    out.advance(n);
                    self.needs_flush = true;
                    progressed = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        if out.is_empty() {
            out.shrink_to(KEEP_CAPACITY);
        }
        if self.needs_flush {
            match Pin::new(&mut *stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(progressed)
    }
}
