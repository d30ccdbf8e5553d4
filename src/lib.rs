//! Polarway: Polars DataFrame operations over Arrow Flight.
//!
//! Dependencies point one way, down this map: protocol -> execution -> operations and storage.
//! Only the protocol layer speaks gRPC (metrics count its calls by status code); only storage
//! knows keys and paths; only [`config`] reads the environment. Where a change lands:
//!
//! | change | room |
//! | --- | --- |
//! | add an operation | a struct in its family's file in [`ops`] (its spec and `Operation` impl), listed once in `ops::registry` |
//! | change which group_bys DataFusion runs instead of Polars | `ops::aggregate` (what it answers as Polars does) |
//! | add a store backend | [`store`]: its `ResultStore`, `DocumentStore` and `FileCapabilities`, chosen in `store::open` from [`config`]'s `StoreConfig` |
//! | change how DoGet streams | `flight::stream` (batches and stored messages), `flight::wire` (HTTP/2 framing) |
//! | change HTTP/2 connection settings (limits, windows, send buffer, keepalive, timeouts, drain) | `server::http2`, its settings in [`config`]'s `TransportArgs` |
//! | change how much response data may wait for slow clients | [`inflight`] (budgets, stalls) |
//! | add a limit | [`limits`]: a `Limit` variant (its setting, its metrics label) and its check; a field in [`config`]'s `LimitArgs` |
//! | add a source a plan can read (a scan format, a table format) | [`data`] (listing, its lazy Polars scan), a `Source` variant in `ops::source` |
//! | change how sinks write or publish | `data::sink` |

#![warn(missing_docs)]

// Protocol: how clients reach a worker.

/// Token authentication: bearer tokens and signed Handshake tokens.
pub mod auth;
/// The Arrow Flight service: decode, call the engine, encode; the only module that knows tonic.
pub mod flight;
/// Result handles, which are also Flight tickets.
pub mod handle;
/// Response bytes in flight: the worker's and each connection's budget, and each stream's progress.
pub mod inflight;
/// Header names shared by the server and clients.
pub mod protocol;
/// Parsing of DoAction bodies and command descriptors into typed requests.
pub mod request;
/// Running a worker: HTTP/2 connections, sweep and job tasks, shutdown.
pub mod server;
/// TLS and mTLS on the Flight port, with certificates reloaded from disk.
pub mod tls;

// Execution: one request's life.

/// Which results a request sees, their lifetime, reads, cache, quota and recovery from lineage.
pub mod catalog;
/// What a request carries through the layers: tenant, deadline, request id.
pub mod context;
/// What a request asks of the worker, done: operations, files, uploads, exchanges; typed outcomes.
pub mod engine;
/// The one way work runs: admitted, within the deadline, on the blocking pool, panics contained.
pub mod exec;
/// Expiry: deleting expired results and the leftovers of interrupted writes.
pub mod gc;
/// Batch jobs queued in the shared store, claimed with leases.
pub mod jobs;
/// SQL over a tenant's named datasets with DataFusion, reading stored IPC files directly.
pub mod sql;
/// What SQL text can cost, read from its tokens before a parser sees it: depth and expansion.
pub mod sqltext;

// Operations: Polars work, no I/O.

/// Zero-copy conversion between Polars frames and arrow-rs batches.
pub mod convert;
/// File sources and sinks under the data root: `read_*` and `write_*`.
pub mod files;
/// Polars operations by family, their typed JSON specs, and the one registry of them.
pub mod ops;

// Storage: where results and documents live.

/// A bytes-bounded LRU of decoded results, per worker.
pub mod cache;
/// Where users' data lives: the data root, declared datasets, scans as plan leaves, sinks.
pub mod data;
/// Checks on Arrow IPC from clients and the store, before arrow-rs decodes it.
pub mod ipc;
/// Named datasets: a tenant's tables for Flight SQL, resolved through the shared store.
pub mod names;
/// Where results live: the store trait, in memory or as Arrow IPC files in an object store.
pub mod store;

// Cross-cutting.

/// The time expiry, leases and sweeps are measured against; injected so tests can move it.
pub mod clock;
/// Command line and environment: the one place configuration is read and validated.
pub mod config;
/// The one place a panic is caught, and the guard for decoders fed outside input.
pub mod contain;
/// The error type, by root cause; its gRPC status is made in `flight::status` alone.
pub mod error;
/// Entry points for the fuzz targets in `fuzz/`, and the replay of the inputs they found.
pub mod fuzz;
/// Size, row, concurrency and time limits, and the admission queue.
pub mod limits;
/// The allocator's settings, freed memory handed back, and thread stacks.
pub mod memory;
/// Prometheus metrics and the health/readiness endpoint.
pub mod metrics;
/// Per-tenant quotas on bytes stored and live results.
pub mod quota;

// Clients.

/// The Rust client: retries, deadlines, affinity, endpoint hashing; independent of the server.
pub mod client;
