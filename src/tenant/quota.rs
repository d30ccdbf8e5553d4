//! Per-tenant quotas: bytes stored and live results.
//!
//! A tenant's usage is a census of the live results in the store (shared by the fleet), taken at
//! most every [`CENSUS_MAX_AGE`] and topped up with what this worker stored since. A creation
//! that would take the tenant past a quota is refused with RESOURCE_EXHAUSTED before anything is
//! stored. Creations racing on several workers within one census period can overshoot by what
//! they add together; the next census sees it and refuses further creations.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::limits::Limit;
use crate::store::ResultMeta;

/// Longest a census is trusted before the store is listed again.
pub const CENSUS_MAX_AGE: Duration = Duration::from_secs(2);

/// What one tenant may hold; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Bytes of live results.
    pub max_bytes: Option<u64>,
    /// Live results.
    pub max_handles: Option<u64>,
}

impl Quota {
    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.max_bytes.is_some() || self.max_handles.is_some()
    }
}

/// What a tenant holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of live results.
    pub bytes: u64,
    /// Live results.
    pub handles: u64,
}

/// Usage by tenant (`None` = calls without authentication).
type Census = HashMap<Option<String>, Usage>;

/// The quota of every tenant and the usage counted against it.
#[derive(Debug, Default)]
pub struct Quotas {
    default: Quota,
    overrides: HashMap<String, Quota>,
    census: Mutex<Option<(Instant, Census)>>,
}

impl Quotas {
    /// `default` for every tenant, with `overrides` by tenant name.
    pub fn new(default: Quota, overrides: HashMap<String, Quota>) -> Quotas {
        Quotas { default, overrides, census: Mutex::new(None) }
    }

    /// The quota that applies to `tenant`.
    pub fn quota(&self, tenant: Option<&str>) -> Quota {
        tenant.and_then(|t| self.overrides.get(t)).copied().unwrap_or(self.default)
    }

    /// Whether the census is recent enough to check against.
    pub fn needs_census(&self) -> bool {
        !matches!(&*self.census.lock().expect("quota lock"), Some((at, _)) if at.elapsed() < CENSUS_MAX_AGE)
    }

    /// Replaces the census with one counted from `metas` (every stored result) live at `now`.
    pub fn record_census(&self, metas: &[ResultMeta], now: DateTime<Utc>) {
        let mut census = Census::new();
        for meta in metas.iter().filter(|m| m.is_live(now)) {
            let usage = census.entry(meta.tenant.clone()).or_default();
            usage.bytes += meta.num_bytes;
            usage.handles += 1;
        }
        *self.census.lock().expect("quota lock") = Some((Instant::now(), census));
    }

    /// Refuses a new result of about `bytes` for `tenant` when it would exceed the tenant's quota.
    pub fn check(&self, tenant: Option<&str>, bytes: u64) -> Result<()> {
        let quota = self.quota(tenant);
        if !quota.is_limited() {
            return Ok(());
        }
        let key = tenant.map(str::to_string);
        let usage = self
            .census
            .lock()
            .expect("quota lock")
            .as_ref()
            .and_then(|(_, c)| c.get(&key).copied())
            .unwrap_or_default();
        let who = tenant.unwrap_or("the anonymous tenant");
        if let Some(max) = quota.max_handles
            && usage.handles + 1 > max
        {
            return Err(Limit::TenantHandles.exceeded(format!(
                "{who} holds {} live results; its quota is {max}: drop or let some expire",
                usage.handles
            )));
        }
        if let Some(max) = quota.max_bytes
            && usage.bytes.saturating_add(bytes) > max
        {
            return Err(Limit::TenantBytes.exceeded(format!(
                "{who} holds {} bytes of live results and this result adds about {bytes}; its quota is {max} bytes",
                usage.bytes
            )));
        }
        Ok(())
    }

    /// Counts a result this worker just stored.
    pub fn add(&self, meta: &ResultMeta) {
        if let Some((_, census)) = self.census.lock().expect("quota lock").as_mut() {
            let usage = census.entry(meta.tenant.clone()).or_default();
            usage.bytes += meta.num_bytes;
            usage.handles += 1;
        }
    }

    /// Counts a result this worker just deleted.
    pub fn remove(&self, meta: &ResultMeta) {
        if let Some((_, census)) = self.census.lock().expect("quota lock").as_mut()
            && let Some(usage) = census.get_mut(&meta.tenant)
        {
            usage.bytes = usage.bytes.saturating_sub(meta.num_bytes);
            usage.handles = usage.handles.saturating_sub(1);
        }
    }

    /// Whether some tenant has a quota (otherwise no census is ever taken).
    pub fn enabled(&self) -> bool {
        self.default.is_limited() || self.overrides.values().any(Quota::is_limited)
    }
}
