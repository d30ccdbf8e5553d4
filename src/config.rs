//! Worker configuration: the one place that reads the command line and the environment.
//!
//! Every option is a `--long` flag and a `POLARWAY_*` variable with a default, documented by
//! `polarway-grpc --help` under its group: server, store, limits, TLS, authentication, jobs,
//! observability (one flattened clap struct each). Values are parsed by type: addresses as
//! `SocketAddr`, durations as a bare number in the unit the variable names or with units of their
//! own (`90s`, `10m`, by humantime), choices as enums that list themselves. [`Args`] is the raw
//! clap view; [`Config`] is the validated form the rest of the worker uses, so an invalid setting
//! fails at start with one line that names the option. [`Config::with_store`] is the constructor
//! for embedding and tests, and reads no environment.

pub use crate::store::{CloudOptions, StoreConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::limits::Limits;

/// Where results live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HandleStore {
    /// In this process, as Polars frames: one worker serves everything; lost on exit.
    Memory,
    /// Arrow IPC files in a shared directory: any worker on it serves any handle.
    External,
}

/// Who frames DoGet and DoPut messages on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WireFraming {
    /// The worker itself, passing record batch bodies through without copies (the default;
    /// see `flight::wire`).
    Direct,
    /// tonic's generated codec, like every other method: the plain path, kept as a fallback.
    Tonic,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Polarway worker: Polars DataFrame operations over Arrow Flight.
#[derive(Debug, Clone, Parser)]
#[command(name = "polarway-grpc", version, about)]
pub struct Args {
    /// Where the worker listens and what it serves.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Where results live.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Size, row, concurrency and time limits.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// HTTP/2 connection settings.
    #[command(flatten)]
    pub transport: TransportArgs,
    /// TLS and mTLS on the Flight port.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Token authentication.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// The batch job queue.
    #[command(flatten)]
    pub jobs: JobArgs,
    /// Logs and metrics.
    #[command(flatten)]
    pub observability: ObservabilityArgs,

    /// What to run; without a command, the Flight server.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The Flight port and how it speaks.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Server")]
pub struct ServerArgs {
    /// Address the gRPC (Arrow Flight) server listens on.
    #[arg(long, env = "POLARWAY_BIND_ADDRESS", default_value = "127.0.0.1:50051")]
    pub bind_address: SocketAddr,

    /// How string and binary view columns (Utf8View, BinaryView) are sent: `view`, or `utf8` /
    /// `large_utf8` for drivers that cannot read views; clients override it per call with the
    /// `x-polarway-view-types` header.
    #[arg(long, env = "POLARWAY_VIEW_TYPES", default_value = "view", value_parser = view_types)]
    pub view_types: crate::convert::ViewTypes,

    /// Who frames DoGet and DoPut messages: `direct` (the worker, without copying batch
    /// bodies) or `tonic` (its generated codec, the plain fallback).
    #[arg(long, env = "POLARWAY_WIRE_FRAMING", value_enum, default_value = "direct")]
    pub wire_framing: WireFraming,

    /// Local data root: scans, sinks and read_*/write_* name files under it. Without a root (this
    /// or POLARWAY_DATA_URL) they are refused.
    #[arg(long, env = "POLARWAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Object-store data root for scans and sinks: s3://bucket/prefix, az://container/prefix,
    /// gs://bucket/prefix or file:///path. Credentials and endpoints come from the environment,
    /// as for POLARWAY_STATE_URL. Takes the place of POLARWAY_DATA_DIR for scans and sinks.
    #[arg(long, env = "POLARWAY_DATA_URL")]
    pub data_url: Option<String>,

    /// Sinks (and write_*) may write under the data root. Off: the root is read-only.
    #[arg(long, env = "POLARWAY_DATA_WRITABLE", default_value_t = false, action = clap::ArgAction::Set)]
    pub data_writable: bool,

    /// JSON file of named datasets on the data root (see src/data/datasets.rs and the README).
    #[arg(long, env = "POLARWAY_DATASETS_FILE")]
    pub datasets_file: Option<PathBuf>,
}

/// Where results live and for how long.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Store")]
pub struct StoreArgs {
    /// Where results are kept: `memory` (this process, the default) or `external`
    /// (POLARWAY_STATE_DIR or POLARWAY_STATE_URL, which `external` requires and `memory` refuses).
    #[arg(long, env = "POLARWAY_HANDLE_STORE", value_enum)]
    pub handle_store: Option<HandleStore>,

    /// Shared directory for results when POLARWAY_HANDLE_STORE=external (shorthand for a file:// URL).
    #[arg(long, env = "POLARWAY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Object store for results when POLARWAY_HANDLE_STORE=external: s3://bucket/prefix,
    /// az://container/prefix, gs://bucket/prefix or file:///path. Credentials and endpoints come
    /// from each cloud's usual variables (AWS_ACCESS_KEY_ID, AWS_ENDPOINT, AWS_ALLOW_HTTP, AZURE_*, GOOGLE_*).
    #[arg(long, env = "POLARWAY_STATE_URL")]
    pub state_url: Option<String>,

    /// Local directory where results from a remote object store are copied so Polars can scan
    /// large inputs lazily (default: `polarway-scratch` in the system temp directory).
    #[arg(long, env = "POLARWAY_SCRATCH_DIR")]
    pub scratch_dir: Option<PathBuf>,

    /// Bytes of decoded results each worker keeps in its LRU cache (external store only).
    #[arg(long, env = "POLARWAY_CACHE_BYTES", default_value_t = 1 << 30)]
    pub cache_bytes: u64,

    /// How long a result lives after it is created: seconds, or a duration such as `24h`.
    #[arg(long, env = "POLARWAY_RESULT_TTL_SECS", default_value = "86400", value_parser = seconds)]
    pub result_ttl_secs: Duration,

    /// Time between sweeps that delete expired results: seconds, or a duration such as `1m`.
    #[arg(long, env = "POLARWAY_GC_INTERVAL_SECS", default_value = "60", value_parser = seconds)]
    pub gc_interval_secs: Duration,

    /// Age after which an interrupted upload's leftovers are removed by the sweep: seconds, or a
    /// duration such as `1h`.
    #[arg(long, env = "POLARWAY_ORPHAN_GRACE_SECS", default_value = "3600", value_parser = seconds)]
    pub orphan_grace_secs: Duration,
}

/// Size, row, concurrency and time limits.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Largest DoPut upload accepted, in bytes.
    #[arg(long, env = "POLARWAY_MAX_PUT_BYTES", default_value_t = 4 << 30)]
    pub max_put_bytes: u64,

    /// Largest single gRPC message accepted or sent, in bytes (at least 1024).
    #[arg(long, env = "POLARWAY_MAX_MESSAGE_BYTES", default_value_t = 64 << 20,
          value_parser = clap::value_parser!(u64).range(1024..=u32::MAX as u64))]
    pub max_message_bytes: u64,

    /// Most rows a result may have.
    #[arg(long, env = "POLARWAY_MAX_RESULT_ROWS", default_value_t = 1_000_000_000)]
    pub max_result_rows: u64,

    /// Most columns a result may have.
    #[arg(long, env = "POLARWAY_MAX_RESULT_COLUMNS", default_value_t = 10_000)]
    pub max_result_columns: u64,

    /// Most rows one join may produce, checked before it runs: a cross join's product, or a keyed
    /// join's matched pairs counted from its keys when the sides' product exceeds it.
    #[arg(long, env = "POLARWAY_MAX_JOIN_ROWS", default_value_t = 100_000_000)]
    pub max_join_rows: u64,

    /// Largest result in bytes (0: half the machine's memory). Operations that call functions
    /// making values larger than their inputs are first tried on one row and refused if the
    /// whole result would pass it.
    #[arg(long, env = "POLARWAY_MAX_RESULT_BYTES", default_value_t = 0)]
    pub max_result_bytes: u64,

    /// Memory one SQL query may use for joins, sorts and aggregations before RESOURCE_EXHAUSTED.
    #[arg(long, env = "POLARWAY_MAX_SQL_MEMORY_BYTES", default_value_t = 4 << 30)]
    pub max_sql_memory_bytes: usize,

    /// Operations that may run at once on this worker (0 = number of cores).
    #[arg(long, env = "POLARWAY_MAX_CONCURRENT_OPS", default_value_t = 0)]
    pub max_concurrent_ops: usize,

    /// Requests that may wait for an operation slot (0 = 16 per slot); beyond them a request
    /// gets RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "POLARWAY_MAX_QUEUED_OPS", default_value_t = 0)]
    pub max_queued_ops: usize,

    /// How long a request may wait for an operation slot before RESOURCE_EXHAUSTED:
    /// milliseconds, or a duration such as `5s`.
    #[arg(long, env = "POLARWAY_QUEUE_TIMEOUT_MS", default_value = "5000", value_parser = milliseconds)]
    pub queue_timeout_ms: Duration,

    /// Longest a request may take before DEADLINE_EXCEEDED, its wait for a slot included:
    /// seconds, or a duration such as `10m`.
    #[arg(long, env = "POLARWAY_REQUEST_TIMEOUT_SECS", default_value = "600", value_parser = seconds)]
    pub request_timeout_secs: Duration,

    /// Most files one scan may list; the listing stops one past it (RESOURCE_EXHAUSTED).
    #[arg(long, env = "POLARWAY_MAX_SCAN_FILES", default_value_t = 100_000)]
    pub max_scan_files: usize,

    /// Most bytes of files one scan may list, before pruning (0: no limit; RESOURCE_EXHAUSTED).
    #[arg(long, env = "POLARWAY_MAX_SCAN_BYTES", default_value_t = 0)]
    pub max_scan_bytes: u64,
}

/// The Flight port's connections: how many, how large their frames, buffers and requests may
/// be, and how long each may wait; what a client that misbehaves can hold.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Transport")]
pub struct TransportArgs {
    /// Connections the Flight port holds at once; one more is closed as it arrives (0: 1024, or
    /// fewer when the descriptor limit leaves less room).
    #[arg(long, env = "POLARWAY_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Calls open at once on one connection; HTTP/2 refuses more (REFUSED_STREAM).
    #[arg(long, env = "POLARWAY_MAX_STREAMS_PER_CONNECTION", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,

    /// Largest HTTP/2 frame accepted, in bytes (16384 to 16777215). A header block's
    /// CONTINUATION frames, which h2 bounds by count, hold at most five of these.
    #[arg(long, env = "POLARWAY_MAX_FRAME_BYTES", default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(16_384..=16_777_215))]
    pub max_frame_bytes: u32,

    /// Largest header list of a request (every header, decoded), in bytes.
    #[arg(long, env = "POLARWAY_MAX_HEADER_LIST_BYTES", default_value_t = 16_384,
          value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_header_list_bytes: u32,

    /// Response bytes one stream may queue for its connection to write.
    #[arg(long, env = "POLARWAY_SEND_BUFFER_BYTES", default_value_t = 8 << 20,
          value_parser = clap::value_parser!(u64).range(16_384..=1 << 30))]
    pub send_buffer_bytes: u64,

    /// Response bytes in flight on the whole worker (read for a DoGet and not yet written to
    /// its socket); a DoGet waits for room before it reads its next batch.
    #[arg(long, env = "POLARWAY_RESPONSE_BUDGET_BYTES", default_value_t = 512 << 20,
          value_parser = clap::value_parser!(u64).range(1 << 20..))]
    pub response_budget_bytes: u64,

    /// Response bytes in flight on one connection.
    #[arg(long, env = "POLARWAY_CONNECTION_BUDGET_BYTES", default_value_t = 64 << 20,
          value_parser = clap::value_parser!(u64).range(1 << 20..))]
    pub connection_budget_bytes: u64,

    /// A response whose bytes wait this long with none written (its client stopped reading) is
    /// reset, giving back its share of the response budget. Seconds, or a duration.
    #[arg(long, env = "POLARWAY_STALL_TIMEOUT_SECS", default_value = "120", value_parser = seconds)]
    pub stall_timeout_secs: Duration,

    /// Largest request message of a call that sends one (a DoGet ticket, an action body, a
    /// descriptor), refused from its length prefix before it is read. Uploads have
    /// POLARWAY_MAX_MESSAGE_BYTES.
    #[arg(long, env = "POLARWAY_MAX_REQUEST_BYTES", default_value_t = 1 << 20,
          value_parser = clap::value_parser!(u64).range(1024..=u32::MAX as u64))]
    pub max_request_bytes: u64,

    /// How long such a request may take to arrive whole. Seconds, or a duration.
    #[arg(long, env = "POLARWAY_REQUEST_READ_TIMEOUT_SECS", default_value = "30", value_parser = seconds)]
    pub request_read_timeout_secs: Duration,

    /// How often an idle connection is pinged to find a dead peer. Seconds, or a duration.
    #[arg(long, env = "POLARWAY_KEEPALIVE_SECS", default_value = "30", value_parser = seconds)]
    pub keepalive_secs: Duration,

    /// How long a ping may go unanswered before the connection is closed. Seconds, or a duration.
    #[arg(long, env = "POLARWAY_KEEPALIVE_TIMEOUT_SECS", default_value = "20", value_parser = seconds)]
    pub keepalive_timeout_secs: Duration,

    /// How long a new connection has to finish its TLS handshake and send the HTTP/2 preface.
    /// Seconds, or a duration.
    #[arg(long, env = "POLARWAY_HANDSHAKE_TIMEOUT_SECS", default_value = "10", value_parser = seconds)]
    pub handshake_timeout_secs: Duration,

    /// A connection with no call open for this long is closed (GOAWAY), and an upload (DoPut,
    /// DoExchange) that sends nothing for this long is cancelled. Seconds, or a duration.
    #[arg(long, env = "POLARWAY_IDLE_TIMEOUT_SECS", default_value = "300", value_parser = seconds)]
    pub idle_timeout_secs: Duration,
}

/// Descriptors kept free for the store, logs and the metrics port when connections are capped.
const RESERVED_DESCRIPTORS: u64 = 128;

/// The validated transport settings.
#[derive(Debug, Clone)]
pub struct Transport {
    /// Connections held at once.
    pub max_connections: usize,
    /// Streams open at once on one connection.
    pub max_streams_per_connection: u32,
    /// Largest HTTP/2 frame accepted.
    pub max_frame_bytes: u32,
    /// Largest request header list.
    pub max_header_list_bytes: u32,
    /// Response bytes one stream may queue.
    pub send_buffer_bytes: usize,
    /// Response bytes in flight on the worker.
    pub response_budget_bytes: usize,
    /// Response bytes in flight on one connection.
    pub connection_budget_bytes: usize,
    /// A response whose bytes wait this long unwritten is reset.
    pub stall_timeout: Duration,
    /// Largest unary request message.
    pub max_request_bytes: usize,
    /// Time for a unary request to arrive whole.
    pub request_read_timeout: Duration,
    /// Ping period of an idle connection.
    pub keepalive: Duration,
    /// Time for a ping's answer.
    pub keepalive_timeout: Duration,
    /// Time for a TLS handshake and the HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// A connection with no call open this long is closed; an upload sending nothing this long
    /// is cancelled.
    pub idle_timeout: Duration,
}

impl TransportArgs {
    fn validated(&self) -> Result<Transport, String> {
        for (option, value) in [
            ("POLARWAY_STALL_TIMEOUT_SECS", self.stall_timeout_secs),
            ("POLARWAY_REQUEST_READ_TIMEOUT_SECS", self.request_read_timeout_secs),
            ("POLARWAY_KEEPALIVE_SECS", self.keepalive_secs),
            ("POLARWAY_KEEPALIVE_TIMEOUT_SECS", self.keepalive_timeout_secs),
            ("POLARWAY_HANDSHAKE_TIMEOUT_SECS", self.handshake_timeout_secs),
            ("POLARWAY_IDLE_TIMEOUT_SECS", self.idle_timeout_secs),
        ] {
            if value.is_zero() {
                return Err(format!("{option}: must be greater than 0"));
            }
        }
        // Each connection is a descriptor: the cap keeps some free, so the worker can still open
        // its store's files and answer its metrics port when every connection is taken.
        let room = crate::memory::descriptor_limit().map(|limit| limit.saturating_sub(RESERVED_DESCRIPTORS) as usize);
        let max_connections = match (self.max_connections, room) {
            (0, Some(room)) => room.clamp(1, 1024),
            (0, None) => 1024,
            (n, Some(room)) if n > room => {
                return Err(format!(
                    "POLARWAY_MAX_CONNECTIONS: {n} leaves too few file descriptors free (the limit allows {room} connections; raise `ulimit -n`)"
                ));
            }
            (n, _) => n,
        };
        if self.connection_budget_bytes > self.response_budget_bytes {
            return Err(
                "POLARWAY_CONNECTION_BUDGET_BYTES: must not be larger than POLARWAY_RESPONSE_BUDGET_BYTES".to_string()
            );
        }
        Ok(Transport {
            max_connections,
            max_streams_per_connection: self.max_streams_per_connection,
            max_frame_bytes: self.max_frame_bytes,
            max_header_list_bytes: self.max_header_list_bytes,
            send_buffer_bytes: self.send_buffer_bytes as usize,
            response_budget_bytes: self.response_budget_bytes as usize,
            connection_budget_bytes: self.connection_budget_bytes as usize,
            stall_timeout: self.stall_timeout_secs,
            max_request_bytes: self.max_request_bytes as usize,
            request_read_timeout: self.request_read_timeout_secs,
            keepalive: self.keepalive_secs,
            keepalive_timeout: self.keepalive_timeout_secs,
            handshake_timeout: self.handshake_timeout_secs,
            idle_timeout: self.idle_timeout_secs,
        })
    }
}

/// TLS on the Flight port.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// PEM certificate chain for TLS on the Flight port; with POLARWAY_TLS_KEY the port speaks only TLS.
    #[arg(long, env = "POLARWAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key matching POLARWAY_TLS_CERT.
    #[arg(long, env = "POLARWAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates; when set, clients must present a certificate issued by one of them (mTLS).
    #[arg(long, env = "POLARWAY_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// How often the TLS files are checked for changes (seconds, or a duration such as `30s`);
    /// changed files are used for new connections without a restart.
    #[arg(long, env = "POLARWAY_TLS_RELOAD_SECS", default_value = "10", value_parser = seconds)]
    pub tls_reload_secs: Duration,
}

/// Who may call, and how much each tenant may hold.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Authentication and quotas")]
pub struct AuthArgs {
    /// JSON file of accepted tokens (SHA-256 digests) and users; when set, every call needs
    /// `authorization: Bearer <token>` (see README).
    #[arg(long, env = "POLARWAY_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,

    /// Most bytes of live results one tenant may hold (0 = unlimited); the tokens file may set
    /// other figures per tenant.
    #[arg(long, env = "POLARWAY_TENANT_MAX_BYTES", default_value_t = 0)]
    pub tenant_max_bytes: u64,

    /// Most live results one tenant may hold (0 = unlimited).
    #[arg(long, env = "POLARWAY_TENANT_MAX_HANDLES", default_value_t = 0)]
    pub tenant_max_handles: u64,
}

/// The batch job queue.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Jobs")]
pub struct JobArgs {
    /// How long a job's lease lasts without renewal (seconds, or a duration such as `10s`); a job
    /// whose worker died is picked up by another worker after this.
    #[arg(long, env = "POLARWAY_JOB_LEASE_SECS", default_value = "10", value_parser = seconds)]
    pub job_lease_secs: Duration,

    /// How often an idle worker looks for queued jobs: milliseconds, or a duration such as `1s`.
    #[arg(long, env = "POLARWAY_JOB_POLL_MS", default_value = "1000", value_parser = milliseconds)]
    pub job_poll_ms: Duration,

    /// How many jobs this worker runs at once (default: POLARWAY_MAX_CONCURRENT_OPS). `0` makes
    /// a worker that queues jobs and answers polls but leaves running them to the others, so
    /// that batch work never takes the slots of interactive calls.
    #[arg(long, env = "POLARWAY_JOB_SLOTS")]
    pub job_slots: Option<usize>,
}

/// Logs and metrics.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Observability")]
pub struct ObservabilityArgs {
    /// Address of the HTTP endpoint serving /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, env = "POLARWAY_METRICS_ADDRESS", default_value = "127.0.0.1:9464")]
    pub metrics_address: SocketAddr,

    /// Log format: `text` or `json`. Levels follow RUST_LOG (default `info`).
    #[arg(long, env = "POLARWAY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// A duration given in `unit`s as a bare number, or with its own units (`90s`, `10m`, `1h 30m`).
fn duration_in(text: &str, unit: Duration) -> Result<Duration, String> {
    match text.trim().parse::<u32>() {
        Ok(n) => Ok(unit * n),
        Err(_) => humantime::parse_duration(text.trim()).map_err(|e| format!("`{text}` is not a duration: {e}")),
    }
}

fn seconds(text: &str) -> Result<Duration, String> {
    duration_in(text, Duration::from_secs(1))
}

fn milliseconds(text: &str) -> Result<Duration, String> {
    duration_in(text, Duration::from_millis(1))
}

fn view_types(text: &str) -> Result<crate::convert::ViewTypes, String> {
    crate::convert::ViewTypes::parse(text).ok_or_else(|| format!("`{text}` is not one of view, utf8, large_utf8"))
}

/// Commands besides serving.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Delete expired results and interrupted uploads from the store, then exit (for cron).
    Gc {
        /// Run one sweep and exit (the only mode; required for clarity in crontabs).
        #[arg(long)]
        once: bool,
    },
}

/// Validated worker configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub bind_address: SocketAddr,
    /// Address of the metrics and health endpoint.
    pub metrics_address: SocketAddr,
    /// Token authentication; `None` accepts every call.
    pub auth: Option<std::sync::Arc<crate::tenant::auth::Authenticator>>,
    /// TLS on the Flight port; `None` = plaintext.
    pub tls: Option<TlsFiles>,
    /// How view-typed columns are sent unless a call asks otherwise.
    pub view_types: crate::convert::ViewTypes,
    /// Quota of every tenant without its own in the tokens file.
    pub tenant_quota: crate::tenant::quota::Quota,
    /// Which store holds results.
    pub store: StoreConfig,
    /// Sandbox root for file operations, canonicalised.
    pub data_dir: Option<PathBuf>,
    /// The data root scans and sinks use, and its datasets.
    pub data: DataConfig,
    /// Lifetime of a new result.
    pub result_ttl: Duration,
    /// Period of the expiry sweep.
    pub gc_interval: Duration,
    /// Size, row, concurrency and time limits.
    pub limits: Limits,
    /// The Flight port's connection limits and timeouts.
    pub transport: Transport,
    /// Who frames DoGet and DoPut messages.
    pub wire_framing: WireFraming,
    /// Log line format.
    pub log_format: LogFormat,
    /// Bytes of decoded results cached per worker.
    pub cache_bytes: u64,
    /// Local copies of remote results for lazy scans.
    pub scratch_dir: PathBuf,
    /// Age after which interrupted uploads are removed.
    pub orphan_grace: Duration,
    /// A command other than serving.
    pub command: Option<Command>,
    /// Lease of a running job.
    pub job_lease: Duration,
    /// Period of the job queue poll.
    pub job_poll: Duration,
    /// Jobs run at once on this worker; `None` is one per operation slot.
    pub job_slots: Option<usize>,
    /// The time results expire and leases lapse by (the system clock; tests move their own).
    pub clock: crate::clock::SharedClock,
}

/// The data root of scans and sinks, and the datasets declared on it.
#[derive(Debug, Clone, Default)]
pub struct DataConfig {
    /// The root: a local directory, or an object store URL with its options.
    pub root: Option<DataRoot>,
    /// Sinks may write under it.
    pub writable: bool,
    /// The datasets file's datasets.
    pub datasets: crate::data::datasets::Datasets,
}

/// Where the data root is.
#[derive(Debug, Clone)]
pub enum DataRoot {
    /// A local directory, canonicalised.
    Directory(PathBuf),
    /// An object store, with credentials from the environment.
    Url {
        /// `s3://bucket/prefix` and the like.
        url: String,
        /// Credentials and endpoints.
        options: CloudOptions,
    },
}

impl DataConfig {
    /// Opens the root (an object store client, no I/O) with the scan limits.
    pub fn open(&self, limits: &Limits) -> crate::error::Result<crate::data::Data> {
        let root = match &self.root {
            None => None,
            Some(DataRoot::Directory(dir)) => Some(crate::data::root::Root::open_dir(dir, self.writable)?),
            Some(DataRoot::Url { url, options }) => {
                Some(crate::data::root::Root::open(url, options.to_vec(), self.writable)?)
            }
        };
        Ok(crate::data::Data::new(root, self.datasets.clone(), limits.max_scan_files, limits.max_scan_bytes))
    }
}

/// The environment's cloud credentials and endpoints.
fn cloud_env() -> CloudOptions {
    CloudOptions(std::env::vars().filter(|(k, _)| CLOUD_ENV_PREFIXES.iter().any(|p| k.starts_with(p))).collect())
}

/// The environment variables object stores take their credentials and endpoints from.
const CLOUD_ENV_PREFIXES: [&str; 3] = ["AWS_", "AZURE_", "GOOGLE_"];

impl StoreArgs {
    /// The one store selector: `POLARWAY_HANDLE_STORE` and the location settings must agree.
    fn selected(&self) -> Result<StoreConfig, String> {
        let kind = self.handle_store.unwrap_or(HandleStore::Memory);
        match (kind, &self.state_dir, &self.state_url) {
            (HandleStore::Memory, None, None) => Ok(StoreConfig::Memory),
            (HandleStore::Memory, dir, _) => {
                let option = if dir.is_some() { "POLARWAY_STATE_DIR" } else { "POLARWAY_STATE_URL" };
                Err(format!(
                    "{option}: is set but POLARWAY_HANDLE_STORE is memory; set POLARWAY_HANDLE_STORE=external to use it"
                ))
            }
            (HandleStore::External, None, None) => {
                Err("POLARWAY_STATE_DIR: required (or POLARWAY_STATE_URL) when POLARWAY_HANDLE_STORE=external"
                    .to_string())
            }
            (HandleStore::External, Some(_), Some(_)) => {
                Err("POLARWAY_STATE_URL: give POLARWAY_STATE_DIR or POLARWAY_STATE_URL, not both".to_string())
            }
            (HandleStore::External, Some(dir), None) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("POLARWAY_STATE_DIR: cannot create {}: {e}", dir.display()))?;
                Ok(StoreConfig::Directory(dir.clone()))
            }
            (HandleStore::External, None, Some(url)) => {
                let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
                if !["s3", "s3a", "az", "abfs", "abfss", "azure", "gs", "file"].contains(&scheme) {
                    return Err(format!("POLARWAY_STATE_URL: `{url}` must start with s3://, az://, gs:// or file://"));
                }
                Ok(StoreConfig::Url { url: url.clone(), options: cloud_env() })
            }
        }
    }
}

impl LimitArgs {
    fn validated(&self) -> Result<Limits, String> {
        if self.request_timeout_secs.is_zero() {
            return Err("POLARWAY_REQUEST_TIMEOUT_SECS: must be greater than 0".to_string());
        }
        let max_concurrent_ops = match self.max_concurrent_ops {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Ok(Limits {
            max_put_bytes: self.max_put_bytes,
            max_message_bytes: self.max_message_bytes as usize,
            max_result_rows: self.max_result_rows,
            max_result_columns: self.max_result_columns,
            max_join_rows: self.max_join_rows,
            max_result_bytes: match self.max_result_bytes {
                0 => crate::memory::physical_bytes() / 2,
                n => n,
            },
            max_sql_memory_bytes: self.max_sql_memory_bytes,
            max_concurrent_ops,
            max_queued_ops: match self.max_queued_ops {
                0 => 16 * max_concurrent_ops,
                n => n,
            },
            queue_timeout: self.queue_timeout_ms,
            request_timeout: self.request_timeout_secs,
            max_scan_files: self.max_scan_files.max(1),
            max_scan_bytes: self.max_scan_bytes,
        })
    }
}

impl TlsArgs {
    fn validated(self) -> Result<Option<TlsFiles>, String> {
        let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) else { return Ok(None) };
        let files = TlsFiles {
            cert,
            key,
            client_ca: self.tls_client_ca,
            reload_interval: self.tls_reload_secs.max(Duration::from_secs(1)),
        };
        files.load().map_err(|e| format!("POLARWAY_TLS_CERT: {e}"))?;
        Ok(Some(files))
    }
}

impl Args {
    /// Validates the arguments; the error is one line naming the offending option.
    pub fn try_into_config(self) -> Result<Config, String> {
        let Args { server, store, limits, transport, tls, auth, jobs, observability, command } = self;
        let data_dir = match server.data_dir {
            None => None,
            Some(dir) => Some(
                dir.canonicalize()
                    .map_err(|e| format!("POLARWAY_DATA_DIR: {} is not an existing directory: {e}", dir.display()))?,
            ),
        };
        let data = DataConfig {
            root: match (&server.data_url, &data_dir) {
                (Some(url), _) => {
                    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
                    if !["s3", "s3a", "az", "abfs", "abfss", "azure", "gs", "file"].contains(&scheme) {
                        return Err("POLARWAY_DATA_URL: must start with s3://, az://, gs:// or file://".to_string());
                    }
                    Some(DataRoot::Url { url: url.clone(), options: cloud_env() })
                }
                (None, Some(dir)) => Some(DataRoot::Directory(dir.clone())),
                (None, None) => None,
            },
            writable: server.data_writable,
            datasets: match &server.datasets_file {
                Some(path) => crate::data::datasets::Datasets::from_file(path)?,
                None => Default::default(),
            },
        };
        if store.result_ttl_secs.is_zero() {
            return Err("POLARWAY_RESULT_TTL_SECS: must be greater than 0".to_string());
        }
        if store.gc_interval_secs.is_zero() {
            return Err("POLARWAY_GC_INTERVAL_SECS: must be greater than 0".to_string());
        }
        let authenticator = match &auth.auth_tokens_file {
            Some(path) => Some(std::sync::Arc::new(crate::tenant::auth::Authenticator::from_file(path)?)),
            None => None,
        };
        Ok(Config {
            bind_address: server.bind_address,
            metrics_address: observability.metrics_address,
            auth: authenticator,
            tls: tls.validated()?,
            view_types: server.view_types,
            tenant_quota: crate::tenant::quota::Quota {
                max_bytes: (auth.tenant_max_bytes > 0).then_some(auth.tenant_max_bytes),
                max_handles: (auth.tenant_max_handles > 0).then_some(auth.tenant_max_handles),
            },
            store: store.selected()?,
            data_dir,
            data,
            result_ttl: store.result_ttl_secs,
            gc_interval: store.gc_interval_secs,
            limits: limits.validated()?,
            transport: transport.validated()?,
            wire_framing: server.wire_framing,
            log_format: observability.log_format,
            cache_bytes: store.cache_bytes,
            scratch_dir: store.scratch_dir.unwrap_or_else(|| std::env::temp_dir().join("polarway-scratch")),
            orphan_grace: store.orphan_grace_secs,
            command,
            job_lease: jobs.job_lease_secs.max(Duration::from_secs(1)),
            job_poll: jobs.job_poll_ms.max(Duration::from_millis(10)),
            job_slots: jobs.job_slots,
            clock: crate::clock::system(),
        })
    }
}

/// Gives threads that other crates start (Polars' and DataFusion's pools)
/// [`crate::memory::THREAD_STACK_BYTES`] of stack, unless `RUST_MIN_STACK` says otherwise. Call it
/// first thing in `main`, before other threads start; the runtime is built with the same size.
pub fn size_thread_stacks() {
    if std::env::var_os("RUST_MIN_STACK").is_none() {
        // SAFETY: called before any other thread exists, so nothing reads the environment at once.
        unsafe { std::env::set_var("RUST_MIN_STACK", crate::memory::THREAD_STACK_BYTES.to_string()) };
    }
}

impl Config {
    /// A configuration with every default and the given store, for embedding and tests. It
    /// reads no environment: a `POLARWAY_*` variable set where the tests run changes nothing.
    pub fn with_store(store: StoreConfig) -> Config {
        use clap::{CommandFactory, FromArgMatches};
        let command = Args::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command.try_get_matches_from(["polarway-grpc"]).expect("defaults parse");
        let mut config =
            Args::from_arg_matches(&matches).expect("defaults parse").try_into_config().expect("defaults are valid");
        config.store = store;
        config
    }
}

/// Where the server's certificate, key and (for mTLS) client CA live; `server::tls` loads them.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that client certificates must chain to; `None` = no client certificates.
    pub client_ca: Option<PathBuf>,
    /// How often the files are checked for changes.
    pub reload_interval: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedding_constructor_reads_no_environment() {
        // The variable is set for a child process running this test alone, never in this process,
        // where other tests read the environment at the same time.
        const CHILD: &str = "POLARWAY_TEST_EMBEDDING_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let embedded = Config::with_store(StoreConfig::Memory);
            let parsed = Args::parse_from(["polarway-grpc"]).try_into_config().unwrap();
            assert_eq!(parsed.limits.max_concurrent_ops, 977, "the command line reads the variable");
            assert_ne!(embedded.limits.max_concurrent_ops, 977, "the embedding constructor does not");
            return;
        }
        let name = "config::tests::the_embedding_constructor_reads_no_environment";
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1"])
            .env(CHILD, "1")
            .env("POLARWAY_MAX_CONCURRENT_OPS", "977")
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&child.stdout);
        assert!(child.status.success() && out.contains("1 passed"), "{out}{}", String::from_utf8_lossy(&child.stderr));
    }

    #[test]
    fn a_logged_store_or_data_root_names_its_credentials_but_never_shows_them() {
        let options = CloudOptions(vec![
            ("AWS_ACCESS_KEY_ID".to_string(), "key-id-value".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "secret-value".to_string()),
        ]);
        let store = StoreConfig::Url { url: "s3://bucket/results".to_string(), options: options.clone() };
        let root = DataRoot::Url { url: "s3://bucket/lake".to_string(), options };
        for shown in [format!("{store:?}"), format!("{root:?}")] {
            assert!(shown.contains("AWS_SECRET_ACCESS_KEY"), "{shown}");
            assert!(!shown.contains("secret-value") && !shown.contains("key-id-value"), "{shown}");
        }
    }

    #[test]
    fn external_without_state_dir_names_the_option() {
        let args = Args::parse_from(["polarway-grpc", "--handle-store", "external"]);
        let err = args.try_into_config().unwrap_err();
        assert!(err.starts_with("POLARWAY_STATE_DIR"), "{err}");
    }

    #[test]
    fn settings_are_parsed_by_type_and_name_their_option() {
        let err = Args::try_parse_from(["polarway-grpc", "--bind-address", "nope"]).unwrap_err().to_string();
        assert!(err.contains("--bind-address"), "{err}");
        let err = Args::try_parse_from(["polarway-grpc", "--wire-framing", "smoke"]).unwrap_err().to_string();
        assert!(err.contains("direct") && err.contains("tonic"), "the choices are listed: {err}");
        let err = Args::try_parse_from(["polarway-grpc", "--max-message-bytes", "10"]).unwrap_err().to_string();
        assert!(err.contains("--max-message-bytes"), "{err}");
        let err = Args::try_parse_from(["polarway-grpc", "--view-types", "utf16"]).unwrap_err().to_string();
        assert!(err.contains("large_utf8"), "{err}");
    }

    #[test]
    fn durations_take_a_bare_number_in_the_named_unit_or_their_own_units() {
        let config = |flags: &[&str]| {
            Args::try_parse_from(std::iter::once("polarway-grpc").chain(flags.iter().copied()))
                .unwrap()
                .try_into_config()
                .unwrap()
        };
        let bare = config(&["--request-timeout-secs", "90", "--queue-timeout-ms", "250"]);
        assert_eq!(bare.limits.request_timeout, Duration::from_secs(90));
        assert_eq!(bare.limits.queue_timeout, Duration::from_millis(250));
        let united =
            config(&["--request-timeout-secs", "1m 30s", "--queue-timeout-ms", "2s", "--result-ttl-secs", "2h"]);
        assert_eq!(united.limits.request_timeout, Duration::from_secs(90));
        assert_eq!(united.limits.queue_timeout, Duration::from_secs(2));
        assert_eq!(united.result_ttl, Duration::from_secs(7200));
        assert!(Args::try_parse_from(["polarway-grpc", "--job-poll-ms", "soon"]).is_err());
        let zero = Args::try_parse_from(["polarway-grpc", "--request-timeout-secs", "0"]).unwrap();
        assert!(zero.try_into_config().unwrap_err().starts_with("POLARWAY_REQUEST_TIMEOUT_SECS"));
    }

    #[test]
    fn one_store_selector_refuses_settings_that_disagree() {
        let store = |flags: &[&str]| {
            Args::try_parse_from(std::iter::once("polarway-grpc").chain(flags.iter().copied()))
                .unwrap()
                .try_into_config()
        };
        assert!(matches!(store(&[]).unwrap().store, StoreConfig::Memory));
        let err = store(&["--state-dir", "/tmp/polarway-unused"]).unwrap_err();
        assert!(err.starts_with("POLARWAY_STATE_DIR") && err.contains("POLARWAY_HANDLE_STORE=external"), "{err}");
        let err = store(&["--handle-store", "memory", "--state-url", "s3://b/p"]).unwrap_err();
        assert!(err.starts_with("POLARWAY_STATE_URL"), "{err}");
        let err =
            store(&["--handle-store", "external", "--state-dir", "/tmp/x", "--state-url", "s3://b/p"]).unwrap_err();
        assert!(err.contains("not both"), "{err}");
        let err = store(&["--handle-store", "external", "--state-url", "ftp://b/p"]).unwrap_err();
        assert!(err.starts_with("POLARWAY_STATE_URL"), "{err}");
    }
}
