//! A connection's socket, shared by its session and the fan-out.
//!
//! The session reads and writes through tungstenite over a [`WireIo`]. A
//! fan-out may also write a state frame, already framed, straight into the
//! socket ([`Wire::try_send`]) when the client is caught up and nothing else
//! is under way on the connection: no session wake-up, no framing per
//! client, one `send` per delivery. Every write holds the wire's lock, so
//! frames never interleave:
//!
//! - while tungstenite has bytes the socket has not taken (its frame is
//!   unfinished), nothing is written straight in;
//! - a frame the socket took only in part leaves its rest on the wire; any
//!   write of the session finishes it first, and the session (woken by its
//!   outbox) flushes it under its stuck-write limit;
//! - once the session closes, nothing more is written straight in.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// See the module documentation.
#[derive(Debug)]
pub struct Wire {
    stream: TcpStream,
    state: Mutex<WireState>,
}

#[derive(Debug, Default)]
struct WireState {
    /// Tungstenite offered bytes the socket did not take: its frame is unfinished.
    busy: bool,
    /// The unwritten end of a frame written straight in.
    rest: Option<Bytes>,
    /// The session is closing.
    closed: bool,
}

/// What [`Wire::try_send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The socket took the whole frame.
    Whole,
    /// The socket took part of it; the session must flush the rest.
    Part,
    /// Nothing was written: the socket is full, or the connection is busy.
    No,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Arc<Wire> {
        Arc::new(Wire {
            stream,
            state: Mutex::new(WireState::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, WireState> {
        self.state.lock().expect("wire lock")
    }

    /// Writes a whole frame (header included) straight into the socket if
    /// nothing else is under way on the connection.
    pub fn try_send(&self, frame: &Bytes) -> Sent {
        let mut state = self.state();
        if state.busy || state.rest.is_some() || state.closed {
            return Sent::No;
        }
        match self.stream.try_write(frame) {
            Ok(written) if written >= frame.len() => Sent::Whole,
            Ok(written) => {
                state.rest = Some(frame.slice(written..));
                Sent::Part
            }
            // A full socket, or a broken one: the session's own path notices.
            Err(_) => Sent::No,
        }
    }

    /// Whether part of a frame written straight in still waits.
    pub fn has_rest(&self) -> bool {
        self.state().rest.is_some()
    }

    /// No more frames straight in: the session is closing.
    pub fn close(&self) {
        self.state().closed = true;
    }

    /// Writes what is left of a frame written straight in.
    fn poll_rest(&self, state: &mut WireState, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(rest) = state.rest.as_mut() {
            match self.poll_write_some(rest, cx) {
                Poll::Ready(Ok(written)) => {
                    rest.advance(written);
                    if rest.is_empty() {
                        state.rest = None;
                    }
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_some(&self, buf: &[u8], cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }
}

/// The session's side of a [`Wire`], for tungstenite: reads (after the
/// bytes hyper had already read past the upgrade) and writes that keep the
/// wire's frames whole.
#[derive(Debug)]
pub struct WireIo {
    wire: Arc<Wire>,
    /// Bytes read before the upgrade completed.
    prefix: Bytes,
}

impl WireIo {
    pub fn new(wire: Arc<Wire>, prefix: Bytes) -> WireIo {
        // A copy: `prefix` is usually a slice of hyper's whole read buffer,
        // which would otherwise stay allocated for the connection's life.
        let prefix = match prefix.is_empty() {
            true => Bytes::new(),
            false => Bytes::copy_from_slice(&prefix),
        };
        WireIo { wire, prefix }
    }

    pub fn wire(&self) -> &Arc<Wire> {
        &self.wire
    }
}

impl AsyncRead for WireIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            if this.prefix.is_empty() {
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let stream = &this.wire.stream;
        loop {
            ready!(stream.poll_read_ready(cx))?;
            match stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for WireIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let wire = &self.wire;
        let mut state = wire.state();
        // Until it returns, tungstenite's frame is unfinished.
        state.busy = true;
        ready!(wire.poll_rest(&mut state, cx))?;
        let written = ready!(wire.poll_write_some(buf, cx))?;
        // Tungstenite offers all it holds: taking all of it finishes its frame.
        state.busy = written < buf.len();
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let wire = &self.wire;
        let mut state = wire.state();
        wire.poll_rest(&mut state, cx)
    }

    /// Finishes the wire's frames; the socket itself closes when the
    /// connection's last handle is dropped.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// A wire over a real loopback connection, and the client's end.
#[cfg(test)]
pub(crate) async fn pair() -> (Arc<Wire>, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    // Let the runtime learn the socket is writable.
    server.writable().await.unwrap();
    (Wire::new(server), client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefix_bytes_are_read_first_then_the_socket() {
        let (wire, mut client) = pair().await;
        let mut io = WireIo::new(wire, Bytes::from_static(b"early "));
        client.write_all(b"later").await.unwrap();
        let mut read = vec![0u8; 11];
        io.read_exact(&mut read).await.unwrap();
        assert_eq!(read, b"early later");
    }

    #[tokio::test]
    async fn a_frame_written_in_part_is_finished_before_the_session_writes() {
        let (wire, mut client) = pair().await;
        let mut io = WireIo::new(wire.clone(), Bytes::new());
        // Larger than any socket buffer: the socket takes part of it.
        let frame = Bytes::from(vec![b'a'; 16 << 20]);
        assert_eq!(wire.try_send(&frame), Sent::Part);
        assert!(wire.has_rest());
        assert_eq!(
            wire.try_send(&Bytes::from_static(b"b")),
            Sent::No,
            "nothing goes straight in while a frame is unfinished"
        );
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        io.write_all(b"c").await.unwrap();
        io.flush().await.unwrap();
        assert!(!wire.has_rest());
        assert_eq!(wire.try_send(&Bytes::from_static(b"d")), Sent::Whole);
        drop(io);
        drop(wire);
        let all = reader.await.unwrap();
        assert_eq!(all.len(), (16 << 20) + 2);
        assert!(all[..16 << 20].iter().all(|&b| b == b'a'));
        assert_eq!(&all[16 << 20..], b"cd");
    }

    #[tokio::test]
    async fn nothing_goes_straight_in_while_tungstenite_waits_or_after_close() {
        let (wire, client) = pair().await;
        let mut io = WireIo::new(wire.clone(), Bytes::new());
        // Fill the socket through the session's side until a write waits.
        let chunk = vec![b'x'; 1 << 20];
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        loop {
            match Pin::new(&mut io).poll_write(&mut cx, &chunk) {
                Poll::Ready(Ok(n)) if n == chunk.len() => continue,
                Poll::Ready(Ok(_)) | Poll::Pending => break,
                Poll::Ready(Err(error)) => panic!("{error}"),
            }
        }
        assert_eq!(wire.try_send(&Bytes::from_static(b"y")), Sent::No);
        drop(client);
        let (wire, _client) = pair().await;
        wire.close();
        assert_eq!(wire.try_send(&Bytes::from_static(b"z")), Sent::No);
    }
}
