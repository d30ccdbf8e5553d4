//! A real `polarway-grpc` process attacked the ways a hostile or broken client can: DoGets that
//! never open their receive window, DoGets of a large result that are never read, CONTINUATION
//! frames parked mid-header-block, unary requests that claim gigabytes or trickle in, uploads that
//! stop sending, and a worker out of file descriptors. Each attack checks that the worker stays
//! up, that its memory stays within the configured budget plus a stated overhead, and that a
//! well-behaved client on its own connection is served throughout with a p99 under 100 ms.
//!
//! The attacks measure a child process (its RSS, threads and CPU from `/proc`), so they run one
//! at a time, apart from the rest of the suite (`scripts/test` runs `attacks::` alone with one
//! test thread: a busy machine would blur the latency figures).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use bytes::Bytes;
use futures::TryStreamExt;
use prost::Message;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::codegen::http;

/// What a worker may hold past its response budget while attacked: its heap's slack, h2's
/// per-connection state, and the store's read buffers.
const OVERHEAD: u64 = 96 << 20;
/// The response budget the attacked workers run with.
const BUDGET: u64 = 64 << 20;
/// The well-behaved client's latency bound.
const P99: Duration = Duration::from_millis(100);

/// A worker process on 127.0.0.1:0.
struct Worker {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    _state: Option<tempfile::TempDir>,
}

impl Worker {
    /// A worker on an external store in a temporary directory, with `env` on top of the attack
    /// settings.
    fn external(env: &[(&str, &str)]) -> Worker {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().to_str().unwrap().to_string();
        let mut all = vec![("POLARWAY_HANDLE_STORE", "external"), ("POLARWAY_STATE_DIR", dir.as_str())];
        all.extend_from_slice(env);
        let mut worker = Worker::start(&all);
        worker._state = Some(state);
        worker
    }

    fn start(env: &[(&str, &str)]) -> Worker {
        let budget = BUDGET.to_string();
        let mut command = Command::new(env!("CARGO_BIN_EXE_polarway-grpc"));
        command
            .env_clear()
            .env("POLARWAY_BIND_ADDRESS", "127.0.0.1:0")
            .env("POLARWAY_METRICS_ADDRESS", "127.0.0.1:0")
            .env("POLARWAY_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn,polarway_grpc=info")
            .env("POLARWAY_RESPONSE_BUDGET_BYTES", &budget)
            .env("POLARWAY_CONNECTION_BUDGET_BYTES", (16u64 << 20).to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("start polarway-grpc");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (addr, metrics) = loop {
            let line = lines.next().expect("worker exited before listening").unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["fields"]["message"] == "polarway-grpc listening" {
                let field = |name: &str| v["fields"][name].as_str().unwrap().parse().unwrap();
                break (field("address"), field("metrics"));
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Worker { child, addr, metrics, _state: None }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn status(&self, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = text.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in /proc status"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Resident memory in bytes.
    fn rss(&self) -> u64 {
        self.status("VmRSS:") * 1024
    }

    fn threads(&self) -> u64 {
        self.status("Threads:")
    }

    /// CPU time used so far, user and system.
    fn cpu(&self) -> Duration {
        let text = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = &text[text.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// The sum of a metric's samples whose line starts with `prefix` (a name and its labels).
    async fn metric(&self, prefix: &str) -> f64 {
        let mut stream = TcpStream::connect(self.metrics).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await.unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    }

    fn assert_alive(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "the worker is still running");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn flight_client_channel(addr: SocketAddr) -> tonic::transport::Endpoint {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap()
}

async fn flight_client(addr: SocketAddr) -> FlightClient {
    FlightClient::new(flight_client_channel(addr).connect().await.unwrap())
}

/// Uploads `rows` rows of three Int64 columns (24 bytes a row) in batches of 100,000 rows.
async fn upload(addr: SocketAddr, name: &str, rows: usize) -> String {
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, false),
        Field::new("b", DataType::Int64, false),
        Field::new("c", DataType::Int64, false),
    ]));
    let batches: Vec<_> = (0..rows)
        .step_by(100_000)
        .map(|start| {
            let n = (rows - start).min(100_000) as i64;
            let column = |k: i64| -> arrow::array::ArrayRef {
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| i * k + start as i64)))
            };
            Ok(RecordBatch::try_new(schema.clone(), vec![column(1), column(3), column(7)]).unwrap())
        })
        .collect();
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![name.to_string()])))
        .build(futures::stream::iter(batches));
    let mut client = flight_client(addr).await;
    let results: Vec<_> = client.do_put(stream).await.unwrap().try_collect().await.unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&results[0].app_metadata).unwrap();
    answer["handle"].as_str().unwrap().to_string()
}

/// A well-behaved client on its own connection: DoGets of `handle` (a small result) every
/// 20 ms for `time`; every one must succeed. Returns the latencies.
async fn well_behaved(addr: SocketAddr, handle: String, time: Duration) -> Vec<Duration> {
    let mut client = flight_client(addr).await;
    let mut latencies = Vec::new();
    let end = Instant::now() + time;
    while Instant::now() < end {
        let started = Instant::now();
        let stream = client.do_get(Ticket::new(handle.clone())).await.expect("a small DoGet is served");
        let batches: Vec<_> = stream.try_collect().await.expect("a small DoGet is served whole");
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1000);
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies
}

/// What every attack ends with: the worker is up, the well-behaved client's p99 is under [`P99`],
/// and the worker's RSS grew by at most `allowed` bytes from `rss_before`. Prints the figures.
fn assert_withstood(worker: &mut Worker, attack: &str, rss_before: u64, allowed: u64, latencies: Vec<Duration>) {
    let rss = worker.rss();
    let p99 = p99(latencies);
    eprintln!("{attack}: RSS {} -> {} MiB, well-behaved p99 {p99:?}", rss_before >> 20, rss >> 20);
    worker.assert_alive();
    assert!(p99 < P99, "{attack}: well-behaved p99 {p99:?}");
    assert!(
        rss <= rss_before + allowed,
        "{attack}: RSS {} -> {} MiB, {} MiB allowed",
        rss_before >> 20,
        rss >> 20,
        allowed >> 20
    );
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    assert!(latencies.len() >= 20, "enough samples: {}", latencies.len());
    latencies.sort();
    latencies[(latencies.len() * 99).div_ceil(100) - 1]
}

/// An HTTP/2 connection from the `h2` crate, with `window` bytes of receive window per stream.
async fn h2_connection(addr: SocketAddr, window: u32) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new().initial_window_size(window).handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn grpc_request(addr: SocketAddr, method: &str) -> http::Request<()> {
    http::Request::post(format!("http://{addr}/arrow.flight.protocol.FlightService/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// A gRPC message: the 5-byte prefix, then `message`.
fn grpc_framed(message: &[u8]) -> Bytes {
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed.into()
}

/// Opens a DoGet of `handle` on `client` and sends its ticket; the response is not read.
async fn open_doget(
    client: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    handle: &str,
) -> h2::client::ResponseFuture {
    let ticket = Ticket::new(handle.to_string()).encode_to_vec();
    let ready = client.clone().ready().await.unwrap();
    *client = ready;
    let (response, mut send) = client.send_request(grpc_request(addr, "DoGet"), false).unwrap();
    send.send_data(grpc_framed(&ticket), true).unwrap();
    response
}

/// The gRPC status code of an answer: from its headers (a trailers-only answer), else its
/// trailers once the body has been read.
async fn grpc_status(response: h2::client::ResponseFuture) -> Option<i32> {
    let response = response.await.ok()?;
    if let Some(code) = response.headers().get("grpc-status") {
        return code.to_str().ok()?.parse().ok();
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    body.trailers().await.ok()??.get("grpc-status")?.to_str().ok()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doget_streams_that_never_open_their_window_hold_no_threads_and_at_most_the_budget() {
    // Stalled streams are reset only after the blocking pool's idle threads have gone (below).
    let mut worker = Worker::external(&[("POLARWAY_STALL_TIMEOUT_SECS", "20")]);
    let big = upload(worker.addr, "big", 2_000_000).await; // 48 MB
    let small = upload(worker.addr, "small", 1000).await;
    let (rss, threads) = (worker.rss(), worker.threads());

    // 600 DoGets on 6 connections whose streams have no receive window at all.
    let opened = tokio::time::Instant::now();
    let (mut held, mut clients) = (Vec::new(), Vec::new());
    for _ in 0..6 {
        let mut client = h2_connection(worker.addr, 0).await;
        for _ in 0..100 {
            held.push(open_doget(&mut client, worker.addr, &big).await);
        }
        clients.push(client);
    }
    let latencies = well_behaved(worker.addr, small.clone(), Duration::from_secs(3)).await;
    assert_withstood(&mut worker, "zero-window DoGets", rss, BUDGET + OVERHEAD, latencies);
    let in_flight = worker.metric("polarway_response_bytes_in_flight").await;
    assert!(in_flight as u64 <= BUDGET, "{in_flight} bytes in flight");

    // Opening a stream reads the store on the blocking pool for a moment; those threads idle for
    // tokio's 10 s keep-alive, then exit. What is left while the streams are still open is held.
    tokio::time::sleep_until(opened + Duration::from_secs(13)).await;
    let threads_held = worker.threads();
    eprintln!("zero-window DoGets: threads {threads} -> {threads_held}");
    assert!(threads_held <= threads + 24, "threads {threads} -> {threads_held}: DoGets hold no blocking threads");

    // Past the stall timeout the stalled streams are reset and give their budget back.
    tokio::time::sleep_until(opened + Duration::from_secs(25)).await;
    assert!(worker.metric("polarway_streams_stalled_total{direction=\"response\"}").await >= 1.0);
    let latencies = well_behaved(worker.addr, small, Duration::from_secs(1)).await;
    assert!(p99(latencies.clone()) < P99, "after the resets: {:?}", p99(latencies));
    drop((held, clients));
    worker.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_and_slow_doget_streams_of_a_large_result_hold_at_most_the_budget() {
    let mut worker = Worker::external(&[("POLARWAY_STALL_TIMEOUT_SECS", "60")]);
    let big = upload(worker.addr, "big", 8_400_000).await; // about 200 MB
    let small = upload(worker.addr, "small", 1000).await;
    let rss = worker.rss();

    // 8 slow readers on 4 connections, each taking a 16 KiB frame every 20 ms, started first:
    // each has its first batch granted before the unread streams arrive (8 batches of 4 MiB
    // leave the rest of the 56 MiB bulk budget to them).
    let (mut slow, mut slow_clients) = (Vec::new(), Vec::new());
    let (started_tx, mut started) = tokio::sync::mpsc::channel(8);
    for _ in 0..4 {
        let mut client = h2_connection(worker.addr, 65_535).await;
        for _ in 0..2 {
            let response = open_doget(&mut client, worker.addr, &big).await;
            let started_tx = started_tx.clone();
            slow.push(tokio::spawn(async move {
                let mut body = response.await.unwrap().into_body();
                let (mut read, mut signalled) = (0usize, false);
                let end = Instant::now() + Duration::from_secs(8);
                while Instant::now() < end {
                    match tokio::time::timeout(Duration::from_secs(5), body.data()).await {
                        Ok(Some(Ok(chunk))) => {
                            read += chunk.len();
                            if read > 64 << 10 && !signalled {
                                signalled = true;
                                let _ = started_tx.send(()).await;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            let _ = body.flow_control().release_capacity(chunk.len());
                        }
                        _ => break,
                    }
                }
                read
            }));
        }
        slow_clients.push(client);
    }
    drop(started_tx);
    for _ in 0..8 {
        let signal = tokio::time::timeout(Duration::from_secs(10), started.recv()).await;
        assert!(matches!(signal, Ok(Some(()))), "every slow reader gets data");
    }
    // 100 DoGets with h2's default 64 KiB window that are never read, on 4 more connections.
    let (mut held, mut clients) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        let mut client = h2_connection(worker.addr, 65_535).await;
        for _ in 0..25 {
            held.push(open_doget(&mut client, worker.addr, &big).await);
        }
        clients.push(client);
    }
    let latencies = well_behaved(worker.addr, small, Duration::from_secs(4)).await;
    assert_withstood(&mut worker, "unread and slow DoGets of 200 MB", rss, BUDGET + OVERHEAD, latencies);
    for reader in slow {
        let read = reader.await.unwrap();
        // About 1 MB in the 8 s at this pace; a reset would have ended it at its first batch.
        assert!(read >= 256 << 10, "a slow reader makes progress and is not reset: {read} bytes");
    }
    drop((held, clients, slow_clients));
}

/// Whether the peer closes `tcp` within `time` (what it sends before is read and dropped).
async fn closed_within(tcp: &mut TcpStream, time: Duration) -> bool {
    let mut sink = vec![0u8; 1 << 16];
    tokio::time::timeout(time, async {
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Writes an HTTP/2 frame header.
fn frame_header(len: usize, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
    let mut header = (len as u32).to_be_bytes()[1..].to_vec();
    header.extend_from_slice(&[kind, flags]);
    header.extend_from_slice(&stream.to_be_bytes());
    header
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_frames_parked_mid_header_block_are_refused() {
    let mut worker = Worker::start(&[]);
    let small = upload(worker.addr, "small", 1000).await;
    let rss = worker.rss();
    let mut parked = Vec::new();
    for _ in 0..100 {
        let mut tcp = TcpStream::connect(worker.addr).await.unwrap();
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(frame_header(0, 0x4, 0, 0)); // SETTINGS
        let block = [0x83u8, 0x86]; // :method POST, :scheme http
        out.extend(frame_header(block.len(), 0x1, 0, 1)); // HEADERS without END_HEADERS
        out.extend_from_slice(&block);
        tcp.write_all(&out).await.unwrap();
        // Five CONTINUATION frames of 1 MiB, none ending the block.
        let payload = vec![0x40u8; 1 << 20];
        for _ in 0..5 {
            let mut frame = frame_header(payload.len(), 0x9, 0, 1);
            frame.extend_from_slice(&payload);
            if tcp.write_all(&frame).await.is_err() {
                break;
            }
        }
        parked.push(tcp);
    }
    let latencies = well_behaved(worker.addr, small, Duration::from_secs(2)).await;
    assert_withstood(&mut worker, "CONTINUATION floods", rss, 32 << 20, latencies);
    // The worker closed each of them (after its GOAWAY) rather than holding the frames.
    for mut tcp in parked {
        assert!(
            closed_within(&mut tcp, Duration::from_secs(5)).await,
            "the worker closes a connection sending oversized frames"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_requests_are_refused_from_their_prefix_or_when_they_trickle_on_both_framings() {
    for framing in ["direct", "tonic"] {
        let mut worker =
            Worker::start(&[("POLARWAY_WIRE_FRAMING", framing), ("POLARWAY_REQUEST_READ_TIMEOUT_SECS", "2")]);
        let small = upload(worker.addr, "small", 1000).await;
        let rss = worker.rss();
        let mut client = h2_connection(worker.addr, 65_535).await;
        // 12 DoGets and DoActions claiming 60 MiB each, sending slowly: refused at once.
        let mut claims = Vec::new();
        let mut senders = Vec::new();
        for i in 0..12 {
            let method = if i % 2 == 0 { "DoGet" } else { "DoAction" };
            client = client.ready().await.unwrap();
            let started = Instant::now();
            let (response, mut send) = client.send_request(grpc_request(worker.addr, method), false).unwrap();
            let mut prefix = vec![0u8];
            prefix.extend_from_slice(&(60u32 << 20).to_be_bytes());
            send.send_data(prefix.into(), false).unwrap();
            send.send_data(Bytes::from(vec![7u8; 64 << 10]), false).unwrap();
            claims.push((started, response));
            senders.push(send);
        }
        for (started, response) in claims {
            assert_eq!(grpc_status(response).await, Some(8), "{framing}: RESOURCE_EXHAUSTED");
            assert!(started.elapsed() < Duration::from_secs(1), "{framing}: refused without reading the body");
        }
        drop(senders);
        assert!(worker.metric("polarway_limit_rejections_total{limit=\"request_bytes\"}").await >= 12.0);
        assert!(
            worker.metric("polarway_requests_total{code=\"RESOURCE_EXHAUSTED\",method=\"DoGet\"}").await >= 6.0,
            "{framing}: refused DoGets are counted"
        );

        // A request that never arrives whole: DEADLINE_EXCEEDED after the read timeout.
        client = client.ready().await.unwrap();
        let (response, mut send) = client.send_request(grpc_request(worker.addr, "DoAction"), false).unwrap();
        send.send_data(Bytes::from_static(&[0, 0, 0, 0, 100, 1, 2, 3]), false).unwrap();
        let started = Instant::now();
        assert_eq!(grpc_status(response).await, Some(4), "{framing}: DEADLINE_EXCEEDED");
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(send);

        // A truncated message, and a compressed one without grpc-encoding: the same statuses
        // on both framings.
        for (body, code) in [(&[0u8, 0, 0, 0, 10, 1, 2][..], 3), (&[1u8, 0, 0, 0, 1, 1][..], 12)] {
            client = client.ready().await.unwrap();
            let (response, mut send) = client.send_request(grpc_request(worker.addr, "DoAction"), false).unwrap();
            send.send_data(Bytes::copy_from_slice(body), true).unwrap();
            assert_eq!(grpc_status(response).await, Some(code), "{framing}: {body:?}");
        }
        let latencies = well_behaved(worker.addr, small, Duration::from_secs(1)).await;
        assert!(p99(latencies.clone()) < P99, "{framing}: well-behaved p99 {:?}", p99(latencies));
        assert!(worker.rss() <= rss + (32 << 20), "{framing}: nothing of the claimed bodies is held");
        worker.assert_alive();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_that_stop_sending_are_cancelled() {
    let mut worker = Worker::start(&[("POLARWAY_IDLE_TIMEOUT_SECS", "2")]);
    let mut client = h2_connection(worker.addr, 65_535).await;
    for method in ["DoPut", "DoExchange"] {
        client = client.ready().await.unwrap();
        let (response, mut send) = client.send_request(grpc_request(worker.addr, method), false).unwrap();
        // The start of a message of 1 MiB, then nothing.
        let mut start = vec![0u8];
        start.extend_from_slice(&(1u32 << 20).to_be_bytes());
        start.extend_from_slice(&[0u8; 1000]);
        send.send_data(start.into(), false).unwrap();
        let started = Instant::now();
        assert_eq!(grpc_status(response).await, Some(4), "{method}: DEADLINE_EXCEEDED");
        assert!(started.elapsed() < Duration::from_secs(6), "{method}: cancelled after the idle timeout");
        drop(send);
    }
    assert!(worker.metric("polarway_streams_stalled_total{direction=\"upload\"}").await >= 2.0);
    worker.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_those_without_a_preface_are_closed() {
    let mut worker = Worker::start(&[("POLARWAY_MAX_CONNECTIONS", "20"), ("POLARWAY_HANDSHAKE_TIMEOUT_SECS", "2")]);
    let small = upload(worker.addr, "small", 1000).await;
    // The well-behaved client connects first, and keeps its connection.
    let behaved = tokio::spawn(well_behaved(worker.addr, small.clone(), Duration::from_secs(4)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(TcpStream::connect(worker.addr).await.unwrap());
    }
    let mut refused = 0;
    for tcp in &mut idle {
        refused += usize::from(closed_within(tcp, Duration::from_millis(50)).await);
    }
    assert!(refused >= 10, "{refused} of 30 refused: the cap is 20, one taken by the well-behaved client");
    assert!(worker.metric("polarway_connections_refused_total{reason=\"max_connections\"}").await >= 10.0);
    // Past the handshake timeout the silent ones are closed, and new clients get in.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(worker.metric("polarway_connections_refused_total{reason=\"handshake_timeout\"}").await >= 19.0);
    let latencies = behaved.await.unwrap();
    assert!(p99(latencies.clone()) < P99, "well-behaved p99 {:?}", p99(latencies));
    let late = well_behaved(worker.addr, small, Duration::from_millis(500)).await;
    assert!(!late.is_empty());
    worker.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_accept_loop_backs_off_and_open_connections_are_served() {
    let mut worker = Worker::start(&[]);
    let small = upload(worker.addr, "small", 1000).await;
    // The well-behaved client holds its connection before the descriptors run out.
    let mut client = flight_client(worker.addr).await;
    let open = std::fs::read_dir(format!("/proc/{}/fd", worker.pid())).unwrap().count() as u64;
    let pid = worker.pid() as libc::pid_t;
    let mut before = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit writes the current limit into `before` and changes nothing.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut before) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let set_limit = |soft: u64| {
        let limit = libc::rlimit { rlim_cur: soft.min(before.rlim_max), rlim_max: before.rlim_max };
        // SAFETY: prlimit reads the struct; the old limit is not asked for.
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    };
    set_limit(open + 4);
    // Clients keep connecting; the worker cannot accept them.
    let mut waiting = Vec::new();
    for _ in 0..50 {
        if let Ok(tcp) = TcpStream::connect(worker.addr).await {
            waiting.push(tcp);
        }
    }
    let cpu = worker.cpu();
    let started = Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < Duration::from_secs(3) {
        let at = Instant::now();
        let stream = client.do_get(Ticket::new(small.clone())).await.expect("an open connection is served");
        let batches: Vec<_> = stream.try_collect().await.unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1000);
        latencies.push(at.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let used = worker.cpu() - cpu;
    let wall = started.elapsed();
    eprintln!("out of descriptors: {used:?} CPU in {wall:?}, well-behaved p99 {:?}", p99(latencies.clone()));
    assert!(used < wall / 4, "the worker used {used:?} of CPU in {wall:?}: the accept loop does not spin");
    assert!(p99(latencies.clone()) < P99, "well-behaved p99 {:?}", p99(latencies));
    set_limit(before.rlim_cur);
    drop(waiting);
    let late = well_behaved(worker.addr, small, Duration::from_millis(500)).await;
    assert!(!late.is_empty(), "new clients are served once descriptors are free");
    assert!(worker.metric("polarway_accept_errors_total{kind=\"resources\"}").await >= 1.0);
    worker.assert_alive();
}
