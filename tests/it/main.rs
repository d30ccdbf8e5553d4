//! Integration tests: a real worker on 127.0.0.1, driven by arrow-flight's client.

mod fixture;

mod attacks;
mod auth;
mod client;
mod errors;
mod external;
mod fleet;
mod flight_surface;
mod integrity;
mod jobs;
mod layering;
mod operations;
mod roundtrip;
mod sql;
mod tls;
