//! `TestServer`: an in-process worker on 127.0.0.1:0 with its own temporary store, and a client
//! wrapper that speaks the handle/JSON conventions.

use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use futures::{StreamExt, TryStreamExt};
use polars::prelude::*;
use polarway::config::{Config, StoreConfig};
use polarway::convert;
use polarway::engine::Engine;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Status;

/// Which store a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Memory,
    External,
}

pub const MODES: [Mode; 2] = [Mode::Memory, Mode::External];

pub struct TestServer {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    pub data_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    pub state_dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(mode: Mode) -> TestServer {
        Self::start_with(mode, |_| {}).await
    }

    pub async fn start_with(mode: Mode, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let state_dir = tempfile::tempdir().unwrap();
        let data_dir = tempfile::tempdir().unwrap();
        let store = match mode {
            Mode::Memory => StoreConfig::Memory,
            Mode::External => StoreConfig::Directory(state_dir.path().to_path_buf()),
        };
        let mut config = Config::with_store(store);
        config.data_dir = Some(data_dir.path().canonicalize().unwrap());
        adjust(&mut config);
        let engine = Arc::new(Engine::try_new(&config).unwrap());
        Self::serve(engine, config, state_dir, data_dir).await
    }

    /// A server over an engine the test built itself (a store of its own).
    pub async fn start_on(engine: Arc<Engine>, config: Config) -> TestServer {
        Self::serve(engine, config, tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()).await
    }

    async fn serve(
        engine: Arc<Engine>,
        config: Config,
        state_dir: tempfile::TempDir,
        data_dir: tempfile::TempDir,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(polarway_serve(engine.clone(), config, listener, rx));
        TestServer { addr, engine, data_dir, shutdown: Some(tx), task: Some(task), state_dir }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Tells the server to stop accepting and drain; [`TestServer::stop`] waits for it.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn stop(mut self) {
        self.begin_stop();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

async fn polarway_serve(
    engine: Arc<Engine>,
    config: Config,
    listener: tokio::net::TcpListener,
    rx: oneshot::Receiver<()>,
) {
    polarway::server::serve_engine(engine, config, listener, async {
        let _ = rx.await;
    })
    .await
    .unwrap();
}

/// A Flight client with Polarway conventions.
pub struct Client {
    pub inner: FlightClient,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        Client { inner: FlightClient::new(channel) }
    }

    /// Uploads a frame with DoPut under `name`; returns the result JSON.
    pub async fn upload(&mut self, name: &str, df: &DataFrame) -> Value {
        self.try_upload(FlightDescriptor::new_path(vec![name.to_string()]), df).await.unwrap()
    }

    pub async fn try_upload(&mut self, descriptor: FlightDescriptor, df: &DataFrame) -> Result<Value, Status> {
        let (schema, batches) = convert::frame_to_batches(df).unwrap();
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_flight_descriptor(Some(descriptor))
            .build(futures::stream::iter(batches.into_iter().map(Ok)));
        let results: Vec<_> =
            self.inner.do_put(stream).await.map_err(to_status)?.try_collect().await.map_err(to_status)?;
        assert_eq!(results.len(), 1);
        Ok(serde_json::from_slice(&results[0].app_metadata).unwrap())
    }

    /// DoAction with a JSON body; returns the JSON answer.
    pub async fn action(&mut self, op: &str, body: Value) -> Result<Value, Status> {
        let action = Action::new(op, body.to_string());
        let mut results: Vec<_> =
            self.inner.do_action(action).await.map_err(to_status)?.try_collect().await.map_err(to_status)?;
        assert_eq!(results.len(), 1, "one result per action");
        Ok(serde_json::from_slice(&results.remove(0)).unwrap())
    }

    /// DoGet of a handle into a frame.
    pub async fn get(&mut self, handle: &str) -> Result<DataFrame, Status> {
        let mut stream = self.inner.do_get(Ticket::new(handle.to_string())).await.map_err(to_status)?;
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            batches.push(batch.map_err(to_status)?);
        }
        let schema = stream.schema().cloned().expect("schema is sent first");
        Ok(convert::batches_to_frame(&schema, &batches).unwrap())
    }

    /// An action whose result is a handle, then DoGet of it.
    pub async fn run(&mut self, op: &str, body: Value) -> Result<DataFrame, Status> {
        let result = self.action(op, body).await?;
        self.get(result["handle"].as_str().unwrap()).await
    }
}

pub fn to_status(err: arrow_flight::error::FlightError) -> Status {
    match err {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => Status::internal(other.to_string()),
    }
}

pub fn handle_of(v: &Value) -> String {
    v["handle"].as_str().expect("a handle").to_string()
}

/// Frames equal after sorting both by every column (for operations without a defined order).
pub fn assert_same_rows(got: &DataFrame, want: &DataFrame, context: &str) {
    let sort = |df: &DataFrame| {
        let names: Vec<PlSmallStr> = df.get_column_names().into_iter().cloned().collect();
        if names.is_empty() {
            return df.clone();
        }
        df.sort(names, SortMultipleOptions::default().with_nulls_last(true)).unwrap()
    };
    assert_same(&sort(got), &sort(want), context);
}

pub fn assert_same(got: &DataFrame, want: &DataFrame, context: &str) {
    assert_eq!(got.schema(), want.schema(), "{context}: schema\n got {got}\nwant {want}");
    assert!(got.equals_missing(want), "{context}: values differ\n got {got}\nwant {want}");
}

/// Polls a descriptor (a command, then the job it became) until the job is done.
pub async fn poll_until_done(c: &mut Client, descriptor: arrow_flight::FlightDescriptor) -> arrow_flight::PollInfo {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut descriptor = descriptor;
    loop {
        let poll = c.inner.poll_flight_info(descriptor.clone()).await.map_err(to_status).unwrap();
        match poll.flight_descriptor.clone() {
            None => return poll,
            Some(next) => descriptor = next,
        }
        assert!(std::time::Instant::now() < deadline, "job not done in time");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
