//! The calling tenant, carried with each request.
//!
//! The Flight adapter runs every call inside [`scope`] with the tenant its credentials map to
//! (`None` when authentication is off). The engine reads [`current`] when it names, stores,
//! lists or reads a result, so a result belongs to the tenant that made it and is NOT_FOUND for
//! every other, exactly as if it did not exist. Work that leaves the request's task (a batch job)
//! re-enters the scope of the tenant recorded with it.

use std::future::Future;

tokio::task_local! {
    static CURRENT: Option<String>;
}

/// Runs `f` on behalf of `tenant`.
pub async fn scope<F: Future>(tenant: Option<String>, f: F) -> F::Output {
    CURRENT.scope(tenant, f).await
}

/// The tenant of the call being served (`None` without authentication or outside a call).
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).unwrap_or(None)
}
