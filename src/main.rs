//! `polarway-grpc`: the worker binary.

use clap::Parser;
use polarway::config::{Args, Command, Config, LogFormat};
use polarway::engine::Engine;
use tracing_subscriber::EnvFilter;

/// How long shutdown waits for computations still running after their requests ended.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

fn main() {
    polarway::memory::tune_allocator();
    polarway::config::size_thread_stacks();
    polarway::memory::trim_periodically(polarway::memory::TRIM_INTERVAL);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(polarway::memory::THREAD_STACK_BYTES)
        .build()
        .expect("start the tokio runtime");
    let code = runtime.block_on(run());
    // Polars work cannot be interrupted; a computation that outlived its request timeout must
    // not hold the process after the server has drained.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    std::process::exit(code);
}

async fn run() -> i32 {
    let config = match Args::parse().try_into_config() {
        Ok(config) => config,
        Err(msg) => {
            eprintln!("polarway-grpc: invalid configuration: {msg}");
            return 2;
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match config.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    if let Some(Command::Gc { once }) = &config.command {
        return gc(&config, *once).await;
    }
    let listener = match tokio::net::TcpListener::bind(config.bind_address).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("polarway-grpc: POLARWAY_BIND_ADDRESS: cannot listen on {}: {e}", config.bind_address);
            return 2;
        }
    };
    let metrics_listener = match polarway::metrics::bind(config.metrics_address).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("polarway-grpc: POLARWAY_METRICS_ADDRESS: cannot listen on {}: {e}", config.metrics_address);
            return 2;
        }
    };
    let metrics_address = metrics_listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tokio::spawn(polarway::metrics::serve(metrics_listener));
    polarway::metrics::READY.store(true, std::sync::atomic::Ordering::Relaxed);
    let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(address = %address, metrics = %metrics_address, tls = config.tls.is_some(), store = ?config.store, "polarway-grpc listening");
    if let Err(e) = polarway::server::serve(config, listener, shutdown_signal()).await {
        eprintln!("polarway-grpc: {e}");
        return 1;
    }
    tracing::info!("polarway-grpc stopped");
    0
}

/// `polarway-grpc gc --once`: one sweep of the configured store, for cron.
async fn gc(config: &Config, once: bool) -> i32 {
    if !once {
        eprintln!("polarway-grpc: gc: pass --once (workers sweep on their own while serving)");
        return 2;
    }
    let result = match Engine::try_new(config) {
        Ok(engine) => engine.sweep().await,
        Err(e) => Err(e),
    };
    match result {
        Ok((expired, orphans)) => {
            tracing::info!(expired, orphans, "sweep deleted results");
            println!("deleted {expired} expired results and {orphans} orphans");
            0
        }
        Err(e) => {
            eprintln!("polarway-grpc: gc: {e}");
            1
        }
    }
}

/// Completes on SIGINT or SIGTERM; the server then stops accepting and drains in-flight calls.
async fn shutdown_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    polarway::metrics::READY.store(false, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("shutdown requested; draining");
}
