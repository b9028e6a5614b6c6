//! The first gate of a signaling connection, before TLS: a client network holds at most so many
//! TCP connections, and the node as many in all. Without it a client that opens sockets and
//! never finishes a TLS handshake holds a socket and a task each for the handshake timeout, as
//! many as it likes; the WebSocket limits behind it only count connections that got that far.
//! A refused socket is closed at once and counted.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::limits::{ConnectionSlot, Connections};
use crate::sfu::stats::EngineStats;

/// Takes a place for every accepted socket, or closes it.
#[derive(Clone, Debug)]
pub struct SocketGate {
    sockets: Arc<Connections>,
    stats: Arc<EngineStats>,
}

impl SocketGate {
    pub fn new(sockets: Arc<Connections>, stats: Arc<EngineStats>) -> Self {
        Self { sockets, stats }
    }

    fn admit(&self, stream: TcpStream) -> io::Result<GatedStream> {
        let peer = stream.peer_addr()?;
        match self.sockets.open(peer.ip()) {
            Ok(slot) => Ok(GatedStream {
                stream,
                _slot: slot,
            }),
            Err(refusal) => {
                self.stats.refused(refusal.into());
                Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "too many connections from this network or to this node",
                ))
            }
        }
    }
}

impl<S: Send + 'static> Accept<TcpStream, S> for SocketGate {
    type Stream = GatedStream;
    type Service = S;
    type Future = std::future::Ready<io::Result<(GatedStream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(self.admit(stream).map(|gated| (gated, service)))
    }
}

/// A socket holding its place until it closes.
#[derive(Debug)]
pub struct GatedStream {
    stream: TcpStream,
    _slot: ConnectionSlot,
}

impl AsyncRead for GatedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
