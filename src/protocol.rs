//! Names shared by the server and clients: metadata headers.

/// Request header carrying a chain's affinity key; load balancers hash on it.
pub const AFFINITY_HEADER: &str = "x-polarway-affinity";

/// DoPut header carrying a client-chosen idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "x-polarway-idempotency-key";

/// Trailer on RESOURCE_EXHAUSTED when the worker was only busy: seconds before a retry.
pub const RETRY_AFTER: &str = "retry-after";

/// Request header naming a call; echoed on the answer and carried in the worker's logs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// How a call wants view-typed columns sent: `view`, `utf8` or `large_utf8`.
pub const VIEW_TYPES_HEADER: &str = "x-polarway-view-types";
