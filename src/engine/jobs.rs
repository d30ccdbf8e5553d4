//! Batch jobs: `PollFlightInfo` on a command queues it in the shared store and answers at once;
//! idle workers claim and run queued jobs; a poll on any worker reports where a job is.
//!
//! A job is three kinds of document in the shared store ([`DocKey`]): its record (command, state,
//! worker, result handle or error); its place in the queue, present while it is pending or
//! running; and its leases, one per generation, created with create-if-absent so one worker wins
//! a generation, renewed by its holder, and once lapsed (the worker died) followed by generation
//! gen+1 claimed by another worker.
//!
//! A job's id is derived from its command, so submitting the same command twice names one job,
//! and because results are keyed by their request, a job that runs twice (a lease lapsed while
//! its worker was alive but stalled) still yields one result.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::RequestContext;
use crate::engine::Engine;
use crate::engine::exec::blocking;
use crate::engine::request::Request;
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::store::{DocKey, DocSet, DocumentStore};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Queued, not yet claimed.
    Pending,
    /// Claimed by a worker.
    Running,
    /// Finished; `result` names the result.
    Done,
    /// Finished with an error.
    Failed,
    /// Cancelled by a client.
    Cancelled,
}

fn internal() -> String {
    "internal".into()
}

/// A job's failure, as the error the client will see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// The error's [`Error::kind`] (a record without one reads as `internal`).
    #[serde(default = "internal")]
    pub kind: String,
    /// The message.
    pub message: String,
}

/// A job record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job id (derived from the command).
    pub id: Handle,
    /// The command: `{"op": ..., ...}`.
    pub command: Value,
    /// Where it is.
    pub state: JobState,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When its record last changed.
    pub updated_at: DateTime<Utc>,
    /// The worker running or that ran it.
    pub worker: Option<String>,
    /// The result, once done.
    pub result: Option<Handle>,
    /// The error, once failed.
    pub error: Option<JobError>,
    /// The tenant that queued it; only it can poll or cancel it.
    #[serde(default)]
    pub tenant: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    worker: String,
    expires_at: DateTime<Utc>,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("job documents serialise")
}

fn read_job(store: &dyn DocumentStore, id: &Handle) -> Result<Option<Job>> {
    match store.get_doc(&DocKey::Job(id.clone()))? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Internal(format!("job record {id} is unreadable: {e}"))),
    }
}

/// Claims the next lease generation of a job if none is held at `now`; `None` when another
/// worker holds it.
fn try_claim(
    store: &dyn DocumentStore,
    id: &Handle,
    worker: &str,
    ttl: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<Option<u64>> {
    let newest = store
        .list_docs(&DocSet::Leases(id.clone()))?
        .iter()
        .filter_map(|key| match key {
            DocKey::Lease(_, generation) => Some(*generation),
            _ => None,
        })
        .max();
    let next = match newest {
        None => 0,
        Some(generation) => {
            let held = store
                .get_doc(&DocKey::Lease(id.clone(), generation))?
                .and_then(|b| serde_json::from_slice::<Lease>(&b).ok())
                .is_some_and(|lease| lease.expires_at > now);
            if held {
                return Ok(None);
            }
            generation + 1
        }
    };
    let lease = Lease { worker: worker.to_string(), expires_at: now + ttl };
    Ok(store.put_doc(&DocKey::Lease(id.clone(), next), encode(&lease), true)?.then_some(next))
}

/// The job queue of one worker.
pub struct Jobs {
    engine: Arc<Engine>,
    store: Arc<dyn DocumentStore>,
    worker: String,
    lease: chrono::Duration,
    running: AtomicUsize,
    max_running: usize,
    /// Rung by a job queued here, so that an idle worker starts it at once instead of at its
    /// next poll; other workers find it by polling the store.
    queued_here: tokio::sync::Notify,
}

impl Jobs {
    /// The queue over `engine`'s store; `worker` names this worker in leases and records, and
    /// it runs up to `slots` jobs at once (by default one per operation slot).
    pub fn new(engine: Arc<Engine>, worker: String, lease: Duration, slots: Option<usize>) -> Arc<Jobs> {
        Arc::new(Jobs {
            store: engine.store() as Arc<dyn DocumentStore>,
            max_running: slots.unwrap_or(engine.limits().max_concurrent_ops),
            engine,
            worker,
            lease: chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(10)),
            running: AtomicUsize::new(0),
            queued_here: tokio::sync::Notify::new(),
        })
    }

    fn now(&self) -> DateTime<Utc> {
        self.engine.catalog().now()
    }

    /// Queues a command (validated first) and returns its record; the same command names the
    /// same job. A failed or cancelled job is queued again.
    pub async fn submit(&self, ctx: &RequestContext, command: &[u8]) -> Result<Job> {
        let job = self.queue(ctx, command).await?;
        if job.state == JobState::Pending {
            self.queued_here.notify_one();
        }
        Ok(job)
    }

    async fn queue(&self, ctx: &RequestContext, command: &[u8]) -> Result<Job> {
        let request = Request::parse_command(command)?;
        if !matches!(request, Request::Transform { .. } | Request::Read { .. }) {
            return Err(Error::invalid("only operations that make a result can run as jobs"));
        }
        let value: Value = serde_json::from_slice(command).expect("parsed above");
        let tenant = ctx.tenant().map(str::to_string);
        let id = Handle::derive(serde_json::json!({"job": value, "tenant": tenant}).to_string().as_bytes());
        let store = self.store.clone();
        let now = self.now();
        blocking(move || {
            let job = Job {
                id: id.clone(),
                command: value,
                state: JobState::Pending,
                created_at: now,
                updated_at: now,
                worker: None,
                result: None,
                error: None,
                tenant,
            };
            if !store.put_doc(&DocKey::Job(id.clone()), encode(&job), true)? {
                let existing = read_job(store.as_ref(), &id)?
                    .ok_or_else(|| Error::Unavailable("job record vanished while being read".into()))?;
                if !matches!(existing.state, JobState::Failed | JobState::Cancelled) {
                    return Ok(existing);
                }
                store.put_doc(&DocKey::Job(id.clone()), encode(&job), false)?;
            }
            store.put_doc(&DocKey::Queued(id.clone()), Vec::new(), false)?;
            crate::metrics::metrics().jobs_queued.inc();
            tracing::info!(job = %id, "job queued");
            Ok(job)
        })
        .await
    }

    /// A job's record, or NOT_FOUND (also for another tenant's job).
    pub async fn get(&self, ctx: &RequestContext, id: &Handle) -> Result<Job> {
        let job = self.record(id).await?;
        if !ctx.owns(&job.tenant) {
            return Err(Error::NotFound(format!("job {id} not found")));
        }
        Ok(job)
    }

    async fn record(&self, id: &Handle) -> Result<Job> {
        let store = self.store.clone();
        let key = id.clone();
        blocking(move || read_job(store.as_ref(), &key))
            .await?
            .ok_or_else(|| Error::NotFound(format!("job {id} not found")))
    }

    /// Cancels a job that has not finished; a running computation completes but its job stays
    /// cancelled.
    pub async fn cancel(&self, ctx: &RequestContext, id: &Handle) -> Result<Job> {
        let mut job = self.get(ctx, id).await?;
        if matches!(job.state, JobState::Pending | JobState::Running) {
            job.state = JobState::Cancelled;
            job.updated_at = self.now();
            let store = self.store.clone();
            let saved = job.clone();
            blocking(move || {
                store.put_doc(&DocKey::Job(saved.id.clone()), encode(&saved), false)?;
                store.delete_doc(&DocKey::Queued(saved.id.clone()))
            })
            .await?;
        }
        Ok(job)
    }

    /// Pulls queued jobs while this worker has free operation slots, every `every` and whenever
    /// a job is queued here, until the task is dropped.
    pub async fn run(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.queued_here.notified() => {}
            }
            if let Err(e) = self.clone().pull().await {
                tracing::warn!(error = %e, "pulling jobs failed");
            }
        }
    }

    async fn pull(self: Arc<Self>) -> Result<()> {
        if self.running.load(Ordering::Relaxed) >= self.max_running {
            return Ok(());
        }
        let store = self.store.clone();
        let queued = blocking(move || store.list_docs(&DocSet::Queue)).await?;
        for key in queued {
            if self.running.load(Ordering::Relaxed) >= self.max_running {
                break;
            }
            let DocKey::Queued(id) = key else { continue };
            let (store, worker, lease, now) = (self.store.clone(), self.worker.clone(), self.lease, self.now());
            let claim_id = id.clone();
            let claimed = blocking(move || try_claim(store.as_ref(), &claim_id, &worker, lease, now)).await?;
            if let Some(generation) = claimed {
                self.running.fetch_add(1, Ordering::Relaxed);
                let this = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = this.execute(&id, generation).await {
                        tracing::warn!(job = %id, error = %e, "job bookkeeping failed");
                    }
                    this.running.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
        Ok(())
    }

    async fn save(&self, job: &Job) -> Result<()> {
        let store = self.store.clone();
        let saved = job.clone();
        blocking(move || store.put_doc(&DocKey::Job(saved.id.clone()), encode(&saved), false).map(|_| ())).await
    }

    async fn execute(&self, id: &Handle, generation: u64) -> Result<()> {
        let mut job = self.record(id).await?;
        if matches!(job.state, JobState::Done | JobState::Failed | JobState::Cancelled) {
            return self.finish(id).await;
        }
        job.state = JobState::Running;
        job.worker = Some(self.worker.clone());
        job.updated_at = self.now();
        self.save(&job).await?;
        tracing::info!(job = %id, generation, "job started");
        let running = crate::metrics::metrics().jobs_running.clone();
        running.inc();

        // Renew the lease while the operation runs.
        let renew = {
            let (store, worker, ttl, key) =
                (self.store.clone(), self.worker.clone(), self.lease, DocKey::Lease(id.clone(), generation));
            let clock = self.engine.catalog().clock();
            let period = (ttl / 3).to_std().unwrap_or(Duration::from_secs(1));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(period).await;
                    let lease = Lease { worker: worker.clone(), expires_at: clock.now() + ttl };
                    let (store, key) = (store.clone(), key.clone());
                    let _ = tokio::task::spawn_blocking(move || store.put_doc(&key, encode(&lease), false)).await;
                }
            })
        };
        let outcome = match Request::parse_command(&serde_json::to_vec(&job.command).expect("json")) {
            // The job runs as the tenant that queued it, with a request's time from its start.
            Ok(request) => {
                let ctx =
                    RequestContext::new(job.tenant.clone(), self.engine.limits().request_timeout, format!("job-{id}"));
                self.engine.produce(&ctx, request).await
            }
            Err(e) => Err(e),
        };
        renew.abort();
        running.dec();

        let mut job = self.record(id).await?;
        if job.state != JobState::Cancelled {
            match outcome {
                Ok(meta) => {
                    job.state = JobState::Done;
                    job.result = Some(meta.handle);
                }
                Err(e) => {
                    crate::metrics::metrics().jobs_failed.inc();
                    job.state = JobState::Failed;
                    job.error = Some(JobError { kind: e.kind().to_string(), message: e.to_string() });
                }
            }
            job.updated_at = self.now();
            self.save(&job).await?;
        }
        tracing::info!(job = %id, state = ?job.state, "job finished");
        self.finish(id).await
    }

    /// Removes a finished job from the queue and drops its leases.
    async fn finish(&self, id: &Handle) -> Result<()> {
        let store = self.store.clone();
        let id = id.clone();
        blocking(move || {
            store.delete_doc(&DocKey::Queued(id.clone()))?;
            for key in store.list_docs(&DocSet::Leases(id.clone()))? {
                store.delete_doc(&key)?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn one_worker_wins_each_lease_generation_and_lapsed_leases_are_taken_over() {
        let store = MemoryStore::new();
        let id = Handle::random();
        let ttl = chrono::Duration::seconds(30);
        let now = Utc::now();
        assert_eq!(try_claim(&store, &id, "a", ttl, now).unwrap(), Some(0));
        assert_eq!(try_claim(&store, &id, "b", ttl, now).unwrap(), None, "held");
        // a's lease lapses (a died): 31 s later b takes the next generation, once.
        let later = now + chrono::Duration::seconds(31);
        assert_eq!(try_claim(&store, &id, "b", ttl, later).unwrap(), Some(1));
        assert_eq!(try_claim(&store, &id, "c", ttl, later).unwrap(), None);
    }
}
