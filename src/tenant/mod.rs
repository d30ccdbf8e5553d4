//! Who calls, and what they may keep: tokens checked against the operator's token file (or signed
//! by a Handshake), each naming a tenant, and each tenant's quota on bytes stored and live results.

/// Token authentication: bearer tokens and signed Handshake tokens.
pub mod auth;
/// Per-tenant quotas on bytes stored and live results.
pub mod quota;
