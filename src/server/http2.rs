//! The HTTP/2 side of the Flight port: the accept loop, every accepted connection served by hyper
//! with the worker's settings, its requests carrying the connection's address, TLS certificates
//! and response budget, and a drain at shutdown.
//!
//! tonic's own server fixes a stream's send buffer at hyper's default of 400 KB, so a large DoGet
//! went to the socket in writes of about that size. Serving the routes here sets it (with the
//! windows the bulk streams want) and keeps what tonic's server gave each call: the connect info
//! that mTLS authentication reads, HTTP/2 only, keepalive pings, and graceful drain.
//!
//! It is also where a client that misbehaves is bounded, since every byte and every wait a client
//! can cause starts here:
//! - connections are capped below the descriptor limit; one more is closed as it arrives;
//! - a failed accept (out of descriptors or memory) backs off instead of spinning, with a warning
//!   at most every few seconds;
//! - a connection has the handshake timeout to finish TLS and send the HTTP/2 preface, and is
//!   closed once no call has been open on it for the idle timeout;
//! - HTTP/2 itself caps streams per connection, frame size and header list size;
//! - each stream runs in a task that the connection's executor watches ([`Streams`]): a response
//!   whose bytes wait longer than the stall timeout without any being written is dropped, which
//!   resets the stream and frees what h2 had queued for it. Response bytes themselves are bounded
//!   by [`crate::flight::inflight`]'s budgets.

use std::future::Future;
use std::io::IoSlice;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tonic::codegen::Service;
use tonic::codegen::http::Request;
use tonic::service::Routes;
use tonic::transport::server::Connected;

use crate::config::Transport;
use crate::flight::inflight::{ConnectionBudget, Progress};
use crate::metrics::metrics;
use crate::server::tls::Tls;

/// HTTP/2 receive window per stream: h2's 64 KiB default makes an upload wait for a window
/// update every 64 KiB.
const STREAM_WINDOW: u32 = 16 << 20;
/// HTTP/2 receive window per connection (shared by its streams).
const CONNECTION_WINDOW: u32 = 64 << 20;
/// How long a closed connection keeps reading for the peer's own close (see [`linger`]).
const LINGER: Duration = Duration::from_secs(2);
/// The HTTP/2 client preface (RFC 9113, 3.4) is this long.
const PREFACE: u64 = 24;
/// The first and the longest pause after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));
/// The least time between two warnings about the same kind of trouble.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `routes` on each connection `listener` accepts (through `tls` when given) until
/// `shutdown` completes; then stops accepting and waits for the open connections to finish their
/// calls.
pub async fn serve(
    routes: Routes,
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    transport: Transport,
    shutdown: impl Future<Output = ()>,
) {
    let transport = Arc::new(transport);
    let routes = routes.prepare();
    let slots = Arc::new(Semaphore::new(transport.max_connections));
    // Each connection holds a receiver; the drain ends when the last one is dropped.
    let (drain, draining) = watch::channel(());
    {
        // Owned by this block: the port closes as soon as accepting stops, before the drain.
        let listener = listener;
        let mut shutdown = pin!(shutdown);
        let mut backoff = ACCEPT_BACKOFF.0;
        let mut full = Warning::default();
        let mut failing = Warning::default();
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => {
                        backoff = ACCEPT_BACKOFF.0;
                        accepted
                    }
                    Err(e) => {
                        let pause = accept_failed(&e, &mut backoff, &mut failing);
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(pause) => continue,
                        }
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                metrics().connections_refused.with_label_values(&["max_connections"]).inc();
                full.warn(|suppressed| {
                    tracing::warn!(%peer, limit = transport.max_connections, suppressed, "connection refused: POLARWAY_MAX_CONNECTIONS reached")
                });
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(transport.clone(), routes.clone(), stream, tls.clone(), draining.clone(), slot));
        }
    }
    drop(draining);
    let _ = drain.send(());
    drain.closed().await;
}

/// How long to wait after a failed accept. Running out of descriptors or memory does not pass at
/// once, and accepting again straight away would spin; other errors (a connection reset before it
/// was accepted) concern one connection only.
fn accept_failed(error: &std::io::Error, backoff: &mut Duration, warning: &mut Warning) -> Duration {
    let resources = matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS));
    let kind = if resources { "resources" } else { "other" };
    metrics().accept_errors.with_label_values(&[kind]).inc();
    if !resources {
        tracing::debug!(error = %error, "connection not accepted");
        return Duration::from_millis(1);
    }
    let pause = *backoff;
    *backoff = (*backoff * 2).min(ACCEPT_BACKOFF.1);
    warning.warn(|suppressed| tracing::warn!(error = %error, pause_ms = pause.as_millis() as u64, suppressed, "accept failed; backing off"));
    pause
}

/// A warning logged at most once every [`WARN_EVERY`], counting the ones left out.
#[derive(Default)]
struct Warning {
    last: Option<Instant>,
    suppressed: u64,
}

impl Warning {
    fn warn(&mut self, log: impl FnOnce(u64)) {
        if self.last.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            self.suppressed += 1;
            return;
        }
        log(self.suppressed);
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

/// One accepted connection: its TLS handshake when the port speaks TLS, then HTTP/2. It holds
/// one of the worker's connection slots until it ends.
async fn connection(
    transport: Arc<Transport>,
    routes: Routes,
    stream: TcpStream,
    tls: Option<Arc<Tls>>,
    mut drain: watch::Receiver<()>,
    _slot: OwnedSemaphorePermit,
) {
    let _open = Open::new();
    let Some(tls) = tls else {
        return serve_connection(&transport, routes, stream, drain).await;
    };
    let peer = stream.peer_addr().ok();
    let handshake = tokio::time::timeout(transport.handshake_timeout, tls.acceptor().accept(stream));
    let stream = tokio::select! {
        handshake = handshake => match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                metrics().tls_handshake_failures.inc();
                tracing::info!(peer = ?peer, error = %e, "TLS handshake refused");
                return;
            }
            Err(_) => {
                metrics().tls_handshake_failures.inc();
                metrics().connections_refused.with_label_values(&["handshake_timeout"]).inc();
                tracing::info!(peer = ?peer, "TLS handshake timed out");
                return;
            }
        },
        // Shutting down: a connection still in its handshake has no call to finish.
        _ = drain.changed() => return,
    };
    serve_connection(&transport, routes, stream, drain).await
}

/// Counts an open connection for as long as it lives.
struct Open;

impl Open {
    fn new() -> Open {
        metrics().connections_open.inc();
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics().connections_open.dec();
    }
}

/// Serves one connection until the peer closes it, until `drain` says so and its calls are done,
/// or until it idles: no preface within the handshake timeout, or no call open for the idle
/// timeout.
async fn serve_connection<IO>(transport: &Transport, routes: Routes, io: IO, mut drain: watch::Receiver<()>)
where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
{
    // What tonic's `Request::remote_addr` and `Request::peer_certs` read.
    let info = io.connect_info();
    let budget = ConnectionBudget::new(transport.connection_budget_bytes);
    let (io, returned) = Returned::new(io);
    let received = io.received.clone();
    let streams = Streams::new(transport.stall_timeout);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(info.clone());
        request.extensions_mut().insert(budget.clone());
        let mut routes = routes.clone();
        async move { routes.call(request.map(tonic::body::Body::new)).await }
    });
    let mut builder = http2::Builder::new(streams.clone());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(transport.max_frame_bytes)
        .max_header_list_size(transport.max_header_list_bytes)
        .max_concurrent_streams(transport.max_streams_per_connection)
        .max_send_buf_size(transport.send_buffer_bytes)
        .keep_alive_interval(transport.keepalive)
        .keep_alive_timeout(transport.keepalive_timeout);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    // The connection is dropped at the end of this block, and the socket comes back.
    let result = {
        let mut connection = pin!(connection);
        let preface = tokio::time::sleep(transport.handshake_timeout);
        let mut preface = pin!(preface);
        let mut waiting_for_preface = true;
        let idle = tokio::time::sleep(transport.idle_timeout);
        let mut idle = pin!(idle);
        loop {
            tokio::select! {
                result = &mut connection => break result,
                _ = drain.changed() => {
                    // A connection that has not sent its preface has no call to finish; hyper's
                    // graceful shutdown would wait for the preface first.
                    if received.load(Ordering::Relaxed) < PREFACE {
                        break Ok(());
                    }
                    connection.as_mut().graceful_shutdown();
                    break connection.await;
                }
                () = &mut preface, if waiting_for_preface => {
                    waiting_for_preface = false;
                    if received.load(Ordering::Relaxed) < PREFACE {
                        metrics().connections_refused.with_label_values(&["handshake_timeout"]).inc();
                        tracing::info!("connection closed: no HTTP/2 preface within POLARWAY_HANDSHAKE_TIMEOUT_SECS");
                        break Ok(());
                    }
                }
                () = &mut idle => match streams.idle_until(transport.idle_timeout) {
                    None => {
                        metrics().connections_idle_closed.inc();
                        tracing::debug!("connection closed: idle for POLARWAY_IDLE_TIMEOUT_SECS");
                        connection.as_mut().graceful_shutdown();
                        break connection.await;
                    }
                    Some(next) => idle.as_mut().reset(tokio::time::Instant::from_std(next)),
                },
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

/// The executor of one connection's streams: it counts them (for the idle timeout) and runs each
/// in a [`Watched`] task that ends it when its response stalls.
#[derive(Clone)]
struct Streams {
    state: Arc<StreamsState>,
    stall: Duration,
}

struct StreamsState {
    open: AtomicUsize,
    /// Milliseconds since `epoch` when a stream last ended (or the connection began).
    last_end: AtomicU64,
    epoch: Instant,
}

impl Streams {
    fn new(stall: Duration) -> Streams {
        let state = StreamsState { open: AtomicUsize::new(0), last_end: AtomicU64::new(0), epoch: Instant::now() };
        Streams { state: Arc::new(state), stall }
    }

    /// `None` when the connection has had no stream open for `idle`; else when to look again.
    fn idle_until(&self, idle: Duration) -> Option<Instant> {
        let state = &self.state;
        if state.open.load(Ordering::Acquire) > 0 {
            return Some(Instant::now() + idle);
        }
        let until = state.epoch + Duration::from_millis(state.last_end.load(Ordering::Acquire)) + idle;
        (until > Instant::now()).then_some(until)
    }
}

impl<F> hyper::rt::Executor<F> for Streams
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        self.state.open.fetch_add(1, Ordering::AcqRel);
        let watched = Watched {
            stream: Box::pin(stream),
            progress: Arc::new(Progress::default()),
            stall: self.stall,
            timer: None,
            _open: OpenStream(self.state.clone()),
        };
        tokio::spawn(watched);
    }
}

/// Counts a stream as open until its task ends.
struct OpenStream(Arc<StreamsState>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        let ms = self.0.epoch.elapsed().as_millis() as u64;
        self.0.last_end.fetch_max(ms, Ordering::AcqRel);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One HTTP/2 stream's task (hyper's call and response body), run with its [`Progress`] in scope
/// so that its response can report what it has in flight. When bytes have waited longer than
/// `stall` and none were written, the task ends: dropping it resets the stream.
struct Watched<F> {
    stream: Pin<Box<F>>,
    progress: Arc<Progress>,
    stall: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    _open: OpenStream,
}

impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let stream = &mut this.stream;
        if crate::flight::inflight::scope(&this.progress, || stream.as_mut().poll(cx)).is_ready() {
            return Poll::Ready(());
        }
        loop {
            let Some(deadline) = this.progress.stall_deadline(this.stall) else {
                this.timer = None;
                return Poll::Pending;
            };
            let deadline = tokio::time::Instant::from_std(deadline);
            if deadline <= tokio::time::Instant::now() {
                metrics().streams_stalled.with_label_values(&["response"]).inc();
                tracing::info!(
                    waiting = this.progress.in_flight(),
                    "response stream reset: nothing written for POLARWAY_STALL_TIMEOUT_SECS"
                );
                return Poll::Ready(());
            }
            let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
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
    let _ = tokio::time::timeout(LINGER, async { while let Ok(1..) = io.read(&mut sink).await {} }).await;
}

/// A connection's socket that goes back to its connection task when hyper drops it, to be closed
/// by [`linger`]. Reads (counted) and writes (vectored ones included) pass straight through.
struct Returned<IO> {
    io: Option<IO>,
    back: Option<oneshot::Sender<IO>>,
    /// Bytes read from the peer so far.
    received: Arc<AtomicU64>,
}

impl<IO> Returned<IO> {
    fn new(io: IO) -> (Returned<IO>, oneshot::Receiver<IO>) {
        let (back, returned) = oneshot::channel();
        (Returned { io: Some(io), back: Some(back), received: Arc::default() }, returned)
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
        let before = buf.filled().len();
        let read = self.io().poll_read(cx, buf);
        self.received.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Returned<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_that_fail_for_want_of_resources_back_off_up_to_a_second() {
        let mut backoff = ACCEPT_BACKOFF.0;
        let mut warning = Warning::default();
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        let pauses: Vec<_> = (0..12).map(|_| accept_failed(&emfile, &mut backoff, &mut warning)).collect();
        assert_eq!(pauses[0], Duration::from_millis(5));
        assert_eq!(pauses[1], Duration::from_millis(10));
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*pauses.last().unwrap(), ACCEPT_BACKOFF.1);
        assert_eq!(warning.suppressed, 11, "one warning, the rest counted");
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        assert_eq!(accept_failed(&reset, &mut backoff, &mut warning), Duration::from_millis(1));
    }

    #[tokio::test]
    async fn a_stream_is_idle_only_once_none_has_been_open_for_the_timeout() {
        let streams = Streams::new(Duration::from_secs(30));
        let idle = Duration::from_millis(100);
        assert!(streams.idle_until(idle).is_some(), "a new connection has its full idle time");
        let (tx, rx) = oneshot::channel::<()>();
        hyper::rt::Executor::execute(&streams, async move {
            let _ = rx.await;
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(streams.idle_until(idle).is_some(), "a stream is open");
        drop(tx);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(streams.idle_until(idle).is_some(), "it just ended");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(streams.idle_until(idle), None);
    }

    #[tokio::test]
    async fn a_response_whose_bytes_are_not_written_is_ended_after_the_stall_timeout() {
        let streams = Streams::new(Duration::from_millis(100));
        let budget = Arc::new(crate::flight::inflight::Budget::new(8 << 20));
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let (held_tx, held_rx) = oneshot::channel();
        hyper::rt::Executor::execute(&streams, async move {
            let _done = done_tx;
            let flow = crate::flight::inflight::Flow::new(budget, None, crate::flight::inflight::current());
            let grant = flow.grant(1 << 20).await;
            let mut pieces = Vec::new();
            grant.attach(bytes::Bytes::from(vec![0u8; 1 << 20]), &mut pieces);
            // The pieces go to a "socket" that never writes them.
            let _ = held_tx.send(pieces);
            std::future::pending::<()>().await;
        });
        let pieces = held_rx.await.unwrap();
        let started = Instant::now();
        let _ = done_rx.await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(90) && waited < Duration::from_secs(2), "ended after {waited:?}");
        drop(pieces);
    }

    /// A server of the health service on 127.0.0.1, the trigger of its drain, and the task that
    /// ends when the drain does.
    async fn start(
        tls: Option<Arc<Tls>>,
    ) -> (std::net::SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>, tonic_health::server::HealthReporter)
    {
        let (reporter, health) = tonic_health::server::health_reporter();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let transport = crate::config::Config::with_store(crate::store::StoreConfig::Memory).transport;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let server = tokio::spawn(serve(Routes::new(health), listener, tls, transport, shutdown));
        (addr, stop, server, reporter)
    }

    /// A drain closes the port before anything else, ends connections that have no call (one
    /// still in its handshake, one that never sent its preface), and waits for the open call.
    async fn a_drain_stops_accepting_first(tls: Option<(Arc<Tls>, String)>) {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_client::HealthClient;
        let (addr, stop, mut server, _reporter) = start(tls.as_ref().map(|(tls, _)| tls.clone())).await;
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!(
            "{}://{addr}",
            if tls.is_some() { "https" } else { "http" }
        ))
        .unwrap();
        if let Some((_, ca)) = &tls {
            let config = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .domain_name("localhost");
            endpoint = endpoint.tls_config(config).unwrap();
        }
        let mut health = HealthClient::new(endpoint.connect().await.unwrap());
        let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
        assert!(watch.message().await.unwrap().is_some(), "the call is open");
        let mut silent = TcpStream::connect(addr).await.unwrap();

        stop.send(()).unwrap();
        let closed = async {
            while TcpStream::connect(addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(2), closed).await.expect("the port closes at once");
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut rest)).await;
        assert!(matches!(ended, Ok(Ok(_)) | Ok(Err(_))), "a connection without a call is ended");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut server).await.is_err(),
            "the drain waits for the open call"
        );
        drop(watch);
        drop(health);
        tokio::time::timeout(Duration::from_secs(10), server).await.expect("the drain ends with the call").unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plaintext_drain_stops_accepting_first() {
        a_drain_stops_accepting_first(None).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tls_drain_stops_accepting_first() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::server::tls::testing::pki();
        let tls = Tls::new(crate::server::tls::testing::write(dir.path(), &pki, false)).unwrap();
        a_drain_stops_accepting_first(Some((tls, pki.ca))).await;
    }
}
