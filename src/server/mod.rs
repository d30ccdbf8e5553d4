//! Running a worker: the gRPC server, the expiry sweep, and graceful shutdown.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::engine::Engine;
use crate::engine::jobs::Jobs;
use crate::error::{Error, Result};
use crate::flight::PolarwayFlight;
use crate::server::tls::Tls;

mod http2;
/// TLS and mTLS on the Flight port, with certificates reloaded from disk.
pub mod tls;

/// Serves Flight on `listener` until `shutdown` completes, then drains in-flight calls.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let engine = Arc::new(Engine::try_new(&config)?);
    serve_engine(engine, config, listener, shutdown).await
}

/// Like [`serve`], over an existing engine (tests inspect it).
pub async fn serve_engine(
    engine: Arc<Engine>,
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // TLS files that do not load stop the worker before any of its tasks start.
    let tls = match &config.tls {
        None => None,
        Some(files) => {
            Some(Tls::new(files.clone()).map_err(|e| Error::InvalidArgument(format!("POLARWAY_TLS_CERT: {e}")))?)
        }
    };
    let sweeper = tokio::spawn(sweep_every(engine.clone(), config.gc_interval));
    let worker = format!("{}@{}", std::process::id(), listener.local_addr().map(|a| a.to_string()).unwrap_or_default());
    let jobs = Jobs::new(engine.clone(), worker, config.job_lease, config.job_slots);
    let puller = tokio::spawn(jobs.clone().run(config.job_poll));
    let budget = Arc::new(crate::flight::inflight::Budget::new(config.transport.response_budget_bytes));
    let service = PolarwayFlight::new(engine, jobs)
        .with_auth(config.auth.clone())
        .with_view_types(config.view_types)
        .with_budget(budget)
        .into_routes(config.wire_framing, &config.transport);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<arrow_flight::flight_service_server::FlightServiceServer<PolarwayFlight>>().await;
    let routes = tonic::service::Routes::new(health_service).add_service(service);
    let reloader = tls.clone().map(Tls::keep_reloading);
    http2::serve(routes, listener, tls, config.transport.clone(), shutdown).await;
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    sweeper.abort();
    puller.abort();
    Ok(())
}

/// Sweeps `engine` every `period`, until the task is dropped.
async fn sweep_every(engine: Arc<Engine>, period: std::time::Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match engine.sweep().await {
            Ok((0, 0)) => {}
            Ok((expired, orphans)) => tracing::info!(expired, orphans, "sweep deleted results"),
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
    }
}
