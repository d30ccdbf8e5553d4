//! Worker configuration: the one place that reads the command line and the environment.
//!
//! Every option is a `--long` flag and a `POLARWAY_*` variable with a default, documented by
//! `polarway-grpc --help`. [`Args`] is the raw clap view; [`Config`] is the validated form the rest
//! of the worker uses, so an invalid setting fails at start with one line that names the option.

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
    /// Address the gRPC (Arrow Flight) server listens on.
    #[arg(long, env = "POLARWAY_BIND_ADDRESS", default_value = "127.0.0.1:50051")]
    pub bind_address: String,

    /// Address of the HTTP endpoint serving /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, env = "POLARWAY_METRICS_ADDRESS", default_value = "127.0.0.1:9464")]
    pub metrics_address: String,

    /// JSON file of accepted tokens (SHA-256 digests) and users; when set, every call needs
    /// `authorization: Bearer <token>` (see README).
    #[arg(long, env = "POLARWAY_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,

    /// PEM certificate chain for TLS on the Flight port; with POLARWAY_TLS_KEY the port speaks only TLS.
    #[arg(long, env = "POLARWAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key matching POLARWAY_TLS_CERT.
    #[arg(long, env = "POLARWAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates; when set, clients must present a certificate issued by one of them (mTLS).
    #[arg(long, env = "POLARWAY_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// How often the TLS files are checked for changes, in seconds; changed files are used for
    /// new connections without a restart.
    #[arg(long, env = "POLARWAY_TLS_RELOAD_SECS", default_value_t = 10)]
    pub tls_reload_secs: u64,

    /// Most bytes of live results one tenant may hold (0 = unlimited); the tokens file may set
    /// other figures per tenant.
    #[arg(long, env = "POLARWAY_TENANT_MAX_BYTES", default_value_t = 0)]
    pub tenant_max_bytes: u64,

    /// Most live results one tenant may hold (0 = unlimited).
    #[arg(long, env = "POLARWAY_TENANT_MAX_HANDLES", default_value_t = 0)]
    pub tenant_max_handles: u64,

    /// Where results are kept: `memory` (this process) or `external` (POLARWAY_STATE_DIR).
    #[arg(long, env = "POLARWAY_HANDLE_STORE", value_enum, default_value = "memory")]
    pub handle_store: HandleStore,

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

    /// Age after which an interrupted upload's leftovers are removed by the sweep, in seconds.
    #[arg(long, env = "POLARWAY_ORPHAN_GRACE_SECS", default_value_t = 3_600)]
    pub orphan_grace_secs: u64,

    /// Root directory that read_*/write_* operations may touch; without it file operations are refused.
    #[arg(long, env = "POLARWAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// How long a result lives after it is created, in seconds (default 24 h).
    #[arg(long, env = "POLARWAY_RESULT_TTL_SECS", default_value_t = 86_400)]
    pub result_ttl_secs: u64,

    /// Seconds between sweeps that delete expired results.
    #[arg(long, env = "POLARWAY_GC_INTERVAL_SECS", default_value_t = 60)]
    pub gc_interval_secs: u64,

    /// Largest DoPut upload accepted, in bytes.
    #[arg(long, env = "POLARWAY_MAX_PUT_BYTES", default_value_t = 4 << 30)]
    pub max_put_bytes: u64,

    /// Largest single gRPC message accepted or sent, in bytes.
    #[arg(long, env = "POLARWAY_MAX_MESSAGE_BYTES", default_value_t = 64 << 20)]
    pub max_message_bytes: usize,

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

    /// How string and binary view columns (Utf8View, BinaryView) are sent: `view`, or `utf8` /
    /// `large_utf8` for drivers that cannot read views; clients override it per call with the
    /// `x-polarway-view-types` header.
    #[arg(long, env = "POLARWAY_VIEW_TYPES", default_value = "view")]
    pub view_types: String,

    /// Operations that may run at once on this worker (0 = number of cores).
    #[arg(long, env = "POLARWAY_MAX_CONCURRENT_OPS", default_value_t = 0)]
    pub max_concurrent_ops: usize,

    /// Requests that may wait for an operation slot (0 = 16 per slot); beyond them a request
    /// gets RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "POLARWAY_MAX_QUEUED_OPS", default_value_t = 0)]
    pub max_queued_ops: usize,

    /// How long a request may wait for an operation slot before RESOURCE_EXHAUSTED, in milliseconds.
    #[arg(long, env = "POLARWAY_QUEUE_TIMEOUT_MS", default_value_t = 5_000)]
    pub queue_timeout_ms: u64,

    /// Longest an operation may run before DEADLINE_EXCEEDED, in seconds.
    #[arg(long, env = "POLARWAY_REQUEST_TIMEOUT_SECS", default_value_t = 600)]
    pub request_timeout_secs: u64,

    /// Who frames DoGet and DoPut messages: `direct` (the worker, without copying batch
    /// bodies) or `tonic` (its generated codec, the plain fallback).
    #[arg(long, env = "POLARWAY_WIRE_FRAMING", value_enum, default_value = "direct")]
    pub wire_framing: WireFraming,

    /// Log format: `text` or `json`. Levels follow RUST_LOG (default `info`).
    #[arg(long, env = "POLARWAY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// How long a job's lease lasts without renewal, in seconds; a job whose worker died is
    /// picked up by another worker after this.
    #[arg(long, env = "POLARWAY_JOB_LEASE_SECS", default_value_t = 10)]
    pub job_lease_secs: u64,

    /// How often an idle worker looks for queued jobs, in milliseconds.
    #[arg(long, env = "POLARWAY_JOB_POLL_MS", default_value_t = 1_000)]
    pub job_poll_ms: u64,

    /// What to run; without a command, the Flight server.
    #[command(subcommand)]
    pub command: Option<Command>,
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
    pub auth: Option<std::sync::Arc<crate::auth::Authenticator>>,
    /// TLS on the Flight port; `None` = plaintext.
    pub tls: Option<crate::tls::TlsFiles>,
    /// How view-typed columns are sent unless a call asks otherwise.
    pub view_types: crate::convert::ViewTypes,
    /// Quota of every tenant without its own in the tokens file.
    pub tenant_quota: crate::quota::Quota,
    /// Which store holds results.
    pub store: StoreConfig,
    /// Sandbox root for file operations, canonicalised.
    pub data_dir: Option<PathBuf>,
    /// Lifetime of a new result.
    pub result_ttl: Duration,
    /// Period of the expiry sweep.
    pub gc_interval: Duration,
    /// Size, row, concurrency and time limits.
    pub limits: Limits,
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
    /// The time results expire and leases lapse by (the system clock; tests move their own).
    pub clock: crate::clock::SharedClock,
}

/// The validated store choice.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// Results in process.
    Memory,
    /// Results as files under this directory.
    Directory(PathBuf),
    /// Results in an object store at `url`, opened with `options`: the cloud's usual
    /// environment variables (`AWS_*`, `AZURE_*`, `GOOGLE_*`), read here and nowhere else.
    Url {
        /// `s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix` or `file:///path`.
        url: String,
        /// Credentials and endpoints, as `(variable, value)`.
        options: Vec<(String, String)>,
    },
}

/// The environment variables object stores take their credentials and endpoints from.
const CLOUD_ENV_PREFIXES: [&str; 3] = ["AWS_", "AZURE_", "GOOGLE_"];

impl Args {
    /// Validates the arguments; the error is one line naming the offending option.
    pub fn try_into_config(self) -> Result<Config, String> {
        let bind_address: SocketAddr = self.bind_address.parse().map_err(|e| {
            format!("POLARWAY_BIND_ADDRESS: `{}` is not a socket address: {e}", self.bind_address)
        })?;
        let metrics_address: SocketAddr = self.metrics_address.parse().map_err(|e| {
            format!("POLARWAY_METRICS_ADDRESS: `{}` is not a socket address: {e}", self.metrics_address)
        })?;
        let store = match (self.handle_store, self.state_dir, self.state_url) {
            (HandleStore::Memory, _, _) => StoreConfig::Memory,
            (HandleStore::External, None, None) => {
                return Err("POLARWAY_STATE_DIR: required (or POLARWAY_STATE_URL) when POLARWAY_HANDLE_STORE=external".to_string());
            }
            (HandleStore::External, Some(_), Some(_)) => {
                return Err("POLARWAY_STATE_URL: give POLARWAY_STATE_DIR or POLARWAY_STATE_URL, not both".to_string());
            }
            (HandleStore::External, Some(dir), None) => {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("POLARWAY_STATE_DIR: cannot create {}: {e}", dir.display()))?;
                StoreConfig::Directory(dir)
            }
            (HandleStore::External, None, Some(url)) => {
                let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
                if !["s3", "s3a", "az", "abfs", "abfss", "azure", "gs", "file"].contains(&scheme) {
                    return Err(format!("POLARWAY_STATE_URL: `{url}` must start with s3://, az://, gs:// or file://"));
                }
                let options = std::env::vars()
                    .filter(|(k, _)| CLOUD_ENV_PREFIXES.iter().any(|p| k.starts_with(p)))
                    .collect();
                StoreConfig::Url { url, options }
            }
        };
        let data_dir = match self.data_dir {
            None => None,
            Some(dir) => Some(dir.canonicalize().map_err(|e| {
                format!("POLARWAY_DATA_DIR: {} is not an existing directory: {e}", dir.display())
            })?),
        };
        if self.result_ttl_secs == 0 {
            return Err("POLARWAY_RESULT_TTL_SECS: must be greater than 0".to_string());
        }
        if self.gc_interval_secs == 0 {
            return Err("POLARWAY_GC_INTERVAL_SECS: must be greater than 0".to_string());
        }
        if self.max_message_bytes < 1024 {
            return Err("POLARWAY_MAX_MESSAGE_BYTES: must be at least 1024".to_string());
        }
        if self.request_timeout_secs == 0 {
            return Err("POLARWAY_REQUEST_TIMEOUT_SECS: must be greater than 0".to_string());
        }
        let max_concurrent_ops = match self.max_concurrent_ops {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let auth = match &self.auth_tokens_file {
            Some(path) => Some(std::sync::Arc::new(crate::auth::Authenticator::from_file(path)?)),
            None => None,
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                cert,
                key,
                client_ca: self.tls_client_ca,
                reload_interval: Duration::from_secs(self.tls_reload_secs.max(1)),
            }),
            _ => None,
        };
        if let Some(files) = &tls {
            files.load().map_err(|e| format!("POLARWAY_TLS_CERT: {e}"))?;
        }
        Ok(Config {
            bind_address,
            metrics_address,
            auth,
            tls,
            view_types: crate::convert::ViewTypes::parse(&self.view_types).ok_or_else(|| {
                format!("POLARWAY_VIEW_TYPES: `{}` is not one of view, utf8, large_utf8", self.view_types)
            })?,
            tenant_quota: crate::quota::Quota {
                max_bytes: (self.tenant_max_bytes > 0).then_some(self.tenant_max_bytes),
                max_handles: (self.tenant_max_handles > 0).then_some(self.tenant_max_handles),
            },
            store,
            data_dir,
            result_ttl: Duration::from_secs(self.result_ttl_secs),
            gc_interval: Duration::from_secs(self.gc_interval_secs),
            limits: Limits {
                max_put_bytes: self.max_put_bytes,
                max_message_bytes: self.max_message_bytes,
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
                queue_timeout: Duration::from_millis(self.queue_timeout_ms),
                request_timeout: Duration::from_secs(self.request_timeout_secs),
            },
            wire_framing: self.wire_framing,
            log_format: self.log_format,
            cache_bytes: self.cache_bytes,
            scratch_dir: self.scratch_dir.unwrap_or_else(|| std::env::temp_dir().join("polarway-scratch")),
            orphan_grace: Duration::from_secs(self.orphan_grace_secs),
            command: self.command,
            job_lease: Duration::from_secs(self.job_lease_secs.max(1)),
            job_poll: Duration::from_millis(self.job_poll_ms.max(10)),
            clock: crate::clock::system(),
        })
    }
}

impl Config {
    /// A configuration with every default and the given store, for embedding and tests. It
    /// reads no environment: a `POLARWAY_*` variable set where the tests run changes nothing.
    pub fn with_store(store: StoreConfig) -> Config {
        use clap::{CommandFactory, FromArgMatches};
        let command = Args::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command.try_get_matches_from(["polarway-grpc"]).expect("defaults parse");
        let mut config = Args::from_arg_matches(&matches)
            .expect("defaults parse")
            .try_into_config()
            .expect("defaults are valid");
        config.store = store;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedding_constructor_reads_no_environment() {
        // SAFETY: set and removed within this test; no other test reads this variable.
        unsafe { std::env::set_var("POLARWAY_MAX_CONCURRENT_OPS", "977") };
        let embedded = Config::with_store(StoreConfig::Memory);
        let parsed = Args::parse_from(["polarway-grpc"]).try_into_config().unwrap();
        unsafe { std::env::remove_var("POLARWAY_MAX_CONCURRENT_OPS") };
        assert_eq!(parsed.limits.max_concurrent_ops, 977, "the command line reads the variable");
        assert_ne!(embedded.limits.max_concurrent_ops, 977, "the embedding constructor does not");
    }

    #[test]
    fn external_without_state_dir_names_the_option() {
        let args = Args::parse_from(["polarway-grpc", "--handle-store", "external"]);
        let err = args.try_into_config().unwrap_err();
        assert!(err.starts_with("POLARWAY_STATE_DIR"), "{err}");
    }

    #[test]
    fn bad_bind_address_names_the_option() {
        let args = Args::parse_from(["polarway-grpc", "--bind-address", "nope"]);
        assert!(args.try_into_config().unwrap_err().starts_with("POLARWAY_BIND_ADDRESS"));
    }
}
