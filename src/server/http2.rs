//! The HTTP/2 side of the Flight port: every accepted connection served by hyper with the
//! worker's settings, its requests carrying the connection's address and TLS certificates, and
//! a drain at shutdown.
//!
//! tonic's own server fixes a stream's send buffer at hyper's default of 400 KB, so a large DoGet
//! went to the socket in writes of about that size. Serving the routes here sets it (with the
//! windows and frame size the bulk streams want) and keeps what tonic's server gave each call:
//! the connect info that mTLS authentication reads, HTTP/2 only, keepalive pings, and graceful
//! drain.

use std::future::Future;
use std::io::IoSlice;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{oneshot, watch};
use tonic::codegen::Service;
use tonic::codegen::http::Request;
use tonic::service::Routes;
use tonic::transport::server::Connected;

/// HTTP/2 receive window per stream: h2's 64 KiB default makes an upload wait for a window
/// update every 64 KiB.
const STREAM_WINDOW: u32 = 16 << 20;
/// HTTP/2 receive window per connection (shared by its streams).
const CONNECTION_WINDOW: u32 = 64 << 20;
/// Largest HTTP/2 frame accepted.
const MAX_FRAME: u32 = 1 << 20;
/// Bytes a response stream may queue for the connection to write. Each DoGet message is one
/// queue's worth at most, and the connection writes what is queued in one call: hyper's 400 KB
/// default split a 4 MiB record batch into ten writes.
const SEND_BUFFER: usize = 8 << 20;
/// How often an idle connection is pinged to find a dead peer.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// How long a closed connection keeps reading for the peer's own close (see [`linger`]).
const LINGER: Duration = Duration::from_secs(2);

/// Serves `routes` on each connection `incoming` yields until `shutdown` completes; then stops
/// accepting and waits for the open connections to finish their calls.
pub async fn serve<I, IO, E>(routes: Routes, incoming: I, shutdown: impl Future<Output = ()>)
where
    I: Stream<Item = Result<IO, E>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    E: std::fmt::Display,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buf_size(SEND_BUFFER)
        .keep_alive_interval(KEEPALIVE);
    let routes = routes.prepare();
    // Each connection holds a receiver; the drain ends when the last one is dropped.
    let (drain, draining) = watch::channel(());
    {
        let mut incoming = pin!(incoming);
        let mut shutdown = pin!(shutdown);
        loop {
            let io = tokio::select! {
                () = &mut shutdown => break,
                next = incoming.next() => match next {
                    Some(Ok(io)) => io,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "connection not accepted");
                        continue;
                    }
                    None => break,
                },
            };
            tokio::spawn(connection(&builder, routes.clone(), io, draining.clone()));
        }
    }
    drop(draining);
    let _ = drain.send(());
    drain.closed().await;
}

/// Serves one connection until the peer closes it, or until `drain` says so and its calls are done.
fn connection<IO>(
    builder: &http2::Builder<TokioExecutor>,
    routes: Routes,
    io: IO,
    mut drain: watch::Receiver<()>,
) -> impl Future<Output = ()> + Send + 'static
where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
{
    // What tonic's `Request::remote_addr` and `Request::peer_certs` read.
    let info = io.connect_info();
    let (io, returned) = Returned::new(io);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(info.clone());
        let mut routes = routes.clone();
        async move { routes.call(request.map(tonic::body::Body::new)).await }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    async move {
        // The connection is dropped at the end of this block, and the socket comes back.
        let result = {
            let mut connection = pin!(connection);
            tokio::select! {
                result = &mut connection => result,
                _ = drain.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "connection ended");
        }
        if let Ok(io) = returned.await {
            linger(io).await;
        }
    }
}

/// Closes a connection hyper has let go of without losing what the peer has yet to read.
///
/// A socket closed with bytes from the peer still unread (window updates, pings) answers with a
/// reset, and a reset makes the peer's kernel drop what it had received but not yet handed to the
/// client: the end of the last response. So the write side is shut (a FIN after the GOAWAY) and
/// the connection reads until the peer closes too, or [`LINGER`] passes.
async fn linger<IO: AsyncRead + AsyncWrite + Unpin>(mut io: IO) {
    let _ = io.shutdown().await;
    let mut sink = [0u8; 8192];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(1..) = io.read(&mut sink).await {}
    })
    .await;
}

/// A connection's socket that goes back to its connection task when hyper drops it, to be closed
/// by [`linger`]. Reads and writes (vectored ones included) pass straight through.
struct Returned<IO> {
    io: Option<IO>,
    back: Option<oneshot::Sender<IO>>,
}

impl<IO> Returned<IO> {
    fn new(io: IO) -> (Returned<IO>, oneshot::Receiver<IO>) {
        let (back, returned) = oneshot::channel();
        (Returned { io: Some(io), back: Some(back) }, returned)
    }

    fn io(&mut self) -> Pin<&mut IO>
    where
        IO: Unpin,
    {
        Pin::new(self.io.as_mut().expect("present until dropped"))
    }
}

impl<IO> Drop for Returned<IO> {
    fn drop(&mut self) {
        if let (Some(io), Some(back)) = (self.io.take(), self.back.take()) {
            let _ = back.send(io);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Returned<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Returned<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}
