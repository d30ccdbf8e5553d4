//! Polarway: Polars DataFrame operations over Arrow Flight.
//!
//! Dependencies point one way: [`flight`] (protocol) -> [`engine`] -> [`ops`] / [`store`].

/// Token authentication: bearer tokens and signed Handshake tokens.
pub mod auth;
/// A bytes-bounded LRU of decoded results, per worker.
pub mod cache;
/// The Rust client: retries, deadlines, affinity, endpoint hashing; independent of the server.
pub mod client;
/// Command line and environment: the one place configuration is read and validated.
pub mod config;
/// Panics of third-party decoders on outside input, contained to the request.
pub mod contain;
/// The time expiry, leases and sweeps are measured against; injected so tests can move it.
pub mod clock;
/// Zero-copy conversion between Polars frames and arrow-rs batches.
pub mod convert;
/// One operation's life: admit, load inputs, run, persist.
pub mod engine;
/// The error type and its mapping to gRPC status codes.
pub mod error;
/// File sources and sinks under the data root: `read_*` and `write_*`.
pub mod files;
/// The Arrow Flight service: a thin adapter over the engine.
pub mod flight;
/// Entry points for the fuzz targets in `fuzz/`, and the replay of the inputs they found.
pub mod fuzz;
/// Result handles, which are also Flight tickets.
pub mod handle;
/// Checks on Arrow IPC from clients and the store, before arrow-rs decodes it.
pub mod ipc;
/// Size, row, concurrency and time limits.
pub mod limits;
/// Batch jobs queued in the shared store, claimed with leases.
pub mod jobs;
/// The allocator's settings, freed memory handed back, and thread stacks.
pub mod memory;
/// Prometheus metrics and the health/readiness endpoint.
pub mod metrics;
/// Named datasets: a tenant's tables for Flight SQL, resolved through the shared store.
pub mod names;
/// Polars operations by family, their typed JSON specs, and the one registry of them.
pub mod ops;
/// Per-tenant quotas on bytes stored and live results.
pub mod quota;
/// Header names shared by the server and clients.
pub mod protocol;
/// Parsing of DoAction bodies and command descriptors into typed requests.
pub mod request;
/// The calling tenant, carried with each request.
pub mod tenant;
/// TLS and mTLS on the Flight port, with certificates reloaded from disk.
pub mod tls;
/// SQL over a tenant's named datasets with DataFusion, reading stored IPC files directly.
pub mod sql;
/// Running a worker: server, expiry sweep, shutdown.
pub mod server;
/// What SQL text can cost, read from its tokens before a parser sees it: depth and expansion.
pub mod sqltext;
/// Where results live: in memory or as Arrow IPC files.
pub mod store;
