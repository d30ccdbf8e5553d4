//! Names shared by the server and clients: metadata headers.

/// Request header carrying a chain's affinity key; load balancers hash on it.
pub const AFFINITY_HEADER: &str = "x-polarway-affinity";

/// DoPut header carrying a client-chosen idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "x-polarway-idempotency-key";
