//! Polarway: Polars DataFrame operations over Arrow Flight.
//!
//! The modules below are grouped in layers, top first, and a module uses only its own layer and
//! the layers below it: serving -> protocol -> execution -> configuration -> tenancy -> data ->
//! operations -> storage -> foundation. The client is kept apart and uses the foundation only.
//! `tests/it/layering.rs` reads the `// Layer` lines here and every `crate::` path in `src/`, and
//! fails on a path that points up or on a cycle. Only the protocol layer, the server that runs it
//! and the client speak gRPC; only storage knows keys and paths; only [`config`] reads the
//! environment. Where a change lands:
//!
//! | change | room |
//! | --- | --- |
//! | add an operation | a struct in its family's file in [`ops`] (its spec and `Operation` impl), listed once in `ops::registry` |
//! | change which group_bys DataFusion runs instead of Polars | `ops::aggregate` (what it answers as Polars does) |
//! | add a store backend | [`store`]: its `ResultStore`, `DocumentStore` and `FileCapabilities`, chosen in `store::open` from [`config`]'s `StoreConfig` |
//! | change how DoGet streams | `flight::stream` (batches and stored messages), `flight::wire` (HTTP/2 framing) |
//! | change HTTP/2 connection settings (limits, windows, send buffer, keepalive, timeouts, drain) | `server::http2`, its settings in [`config`]'s `TransportArgs` |
//! | change how much response data may wait for slow clients | `flight::inflight` (budgets, stalls) |
//! | add a limit | [`limits`]: a `Limit` variant (its setting, its metrics label) and its check; a field in [`config`]'s `LimitArgs` |
//! | add a source a plan can read (a scan format, a table format) | [`data`] (listing, its lazy Polars scan), a `Source` variant in `ops::source` |
//! | change how sinks write or publish | `data::sink` |

#![warn(missing_docs)]

// Layer Serving: a worker process, and the fuzz targets' entry points into one.

/// Entry points for the fuzz targets in `fuzz/`, and the replay of the inputs they found.
pub mod fuzz;
/// Running a worker: HTTP/2 connections and TLS, the sweep and job tasks, shutdown.
pub mod server;

// Layer Protocol: how clients reach a worker.

/// The Arrow Flight and Flight SQL service: decode, call the engine, encode; statuses are made in
/// `flight::status` alone; response bytes in flight are budgeted in `flight::inflight`.
pub mod flight;

// Layer Execution: one request's life.

/// What a request asks of the worker, done: typed requests, the one way work runs, the results a
/// request sees, dataset names, batch jobs and expiry.
pub mod engine;
/// SQL over a tenant's named datasets with DataFusion, reading stored IPC files directly.
pub mod sql;

// Layer Configuration: the environment, read once.

/// Command line and environment: the one place configuration is read and validated.
pub mod config;

// Layer Tenancy: who calls, and what they may keep.

/// Token authentication and per-tenant quotas.
pub mod tenant;

// Layer Data: users' data, where it lives.

/// Where users' data lives: the data root, file reads and writes, declared datasets, scans as plan
/// leaves, sinks.
pub mod data;

// Layer Operations: Polars work, no I/O.

/// Polars operations by family, their typed JSON specs, the one registry of them, and what SQL
/// text may cost.
pub mod ops;

// Layer Storage: where results and documents live.

/// Where results live: the store traits, in memory or as Arrow IPC files in an object store; the
/// decoded-result cache; checks on Arrow IPC before arrow-rs decodes it.
pub mod store;

// Layer Foundation: what every layer shares.

/// The time expiry, leases and sweeps are measured against; injected so tests can move it.
pub mod clock;
/// The one place a panic is caught, and the guard for decoders fed outside input.
pub mod contain;
/// What a request carries through the layers: tenant, deadline, request id.
pub mod context;
/// Zero-copy conversion between Polars frames and arrow-rs batches.
pub mod convert;
/// The runtime computation runs on (DataFusion, hash aggregation), apart from the I/O threads.
pub mod cpu;
/// The error type, by root cause; its gRPC status is made in `flight::status` alone.
pub mod error;
/// Result handles, which are also Flight tickets, and the names results and datasets may take.
pub mod handle;
/// Size, row, concurrency and time limits, and the admission queue.
pub mod limits;
/// The allocator's settings, freed memory handed back, and thread stacks.
pub mod memory;
/// Prometheus metrics and the health/readiness endpoint.
pub mod metrics;
/// Header names shared by the server and clients.
pub mod protocol;

// Apart Clients: independent of the server; they use the foundation only.

/// The Rust client: retries, deadlines, affinity, endpoint hashing.
pub mod client;
