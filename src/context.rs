//! What a request carries through the layers: whose it is, when it must be done, and its id.
//!
//! The Flight adapter makes one [`RequestContext`] per call from the caller's credentials, the
//! request timeout and the `x-request-id` header, and hands it by reference to the engine, SQL and
//! jobs. Everything that names, stores, lists or reads a result takes the tenant from it, so a
//! result belongs to the tenant that made it and is NOT_FOUND for every other, exactly as if it did
//! not exist. Work that outlives the call (a batch job) gets a context of its own, for the tenant
//! recorded with the job.

use std::time::Duration;

use tokio::time::Instant;

/// The tenant, deadline and id of one request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    tenant: Option<String>,
    timeout: Duration,
    deadline: Instant,
    id: String,
}

impl RequestContext {
    /// A request of `tenant` (`None` without authentication) that must finish within `timeout`
    /// from now.
    pub fn new(tenant: Option<String>, timeout: Duration, id: impl Into<String>) -> Self {
        RequestContext { tenant, timeout, deadline: Instant::now() + timeout, id: id.into() }
    }

    /// The calling tenant, `None` when authentication is off.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The same request with its time counted from now: a streamed request's time starts once
    /// its input has arrived, as a unary request's starts once its message has.
    pub fn restarted(&self) -> RequestContext {
        RequestContext::new(self.tenant.clone(), self.timeout, self.id.clone())
    }

    /// Whether a result recorded as `tenant`'s is visible to this request.
    pub fn owns(&self, tenant: &Option<String>) -> bool {
        tenant.as_deref() == self.tenant()
    }

    /// When the request's time is up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The time the request was given.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The request's id, as logged and echoed to the client.
    pub fn id(&self) -> &str {
        &self.id
    }
}
