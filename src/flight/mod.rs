//! The Arrow Flight adapter: decode the request, call the engine, encode the answer.
//!
//! This is the only module that knows tonic and the Flight protocol. Tickets are handle strings;
//! action bodies and results are JSON (except the two standard protobuf actions); results stream
//! out as stored IPC messages or through arrow-flight's encoder, fed batch by batch from the
//! blocking pool through a bounded channel so a large result is never whole in memory, and DoGet
//! frames them onto the wire without copying their bodies again (`wire`).

pub mod catalog;
pub mod sql;
pub mod status;
pub mod ticket;
pub(crate) mod wire;

pub use wire::FlightRoutes;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, Criteria,
    Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, PollInfo, PutResult, RenewFlightEndpointRequest, SchemaAsIpc, SchemaResult,
    Ticket,
};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, TryStreamExt, stream};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::auth::{Authenticator, Principal};
use crate::convert::{self, ViewTypes};
use crate::sql::SqlEngine;
use crate::engine::{self, Engine};
use crate::{ipc, request};
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::jobs::{Job, JobError, JobState, Jobs};
use crate::limits::Limits;
use crate::metrics::RequestTimer;
use crate::ops::Step;
use crate::store::{IpcStream, ResultMeta};

pub use crate::protocol::{AFFINITY_HEADER, IDEMPOTENCY_KEY_HEADER, REQUEST_ID_HEADER, VIEW_TYPES_HEADER};

/// The header carrying credentials.
const AUTHORIZATION: &str = "authorization";

type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send + 'static>>;

/// The Flight service of one worker.
pub struct PolarwayFlight {
    engine: Arc<Engine>,
    jobs: Arc<Jobs>,
    auth: Option<Arc<Authenticator>>,
    sql: sql::FlightSql,
    views: ViewTypes,
}

/// The command descriptor that names a queued job.
fn job_descriptor(id: &Handle) -> FlightDescriptor {
    FlightDescriptor::new_cmd(serde_json::json!({"job": id.as_str()}).to_string())
}

/// The job a command descriptor names, if it is `{"job": id}`.
fn job_id(descriptor: &FlightDescriptor) -> Result<Option<Handle>> {
    if descriptor.r#type() != DescriptorType::Cmd {
        return Ok(None);
    }
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice(&descriptor.cmd) else {
        return Ok(None);
    };
    match obj.get("job") {
        Some(serde_json::Value::String(id)) if obj.len() == 1 => Ok(Some(Handle::parse(id)?)),
        Some(_) => Err(Error::invalid(r#"a job descriptor is {"job": "<id>"}"#)),
        None => Ok(None),
    }
}

impl PolarwayFlight {
    /// A service over `engine`, queueing batch jobs in `jobs`.
    pub fn new(engine: Arc<Engine>, jobs: Arc<Jobs>) -> Self {
        let sql = sql::FlightSql::new(SqlEngine::new(engine.clone(), engine.limits().max_sql_memory_bytes));
        Self { engine, jobs, auth: None, sql, views: ViewTypes::default() }
    }

    /// Sends view-typed columns as `views` unless a call asks otherwise.
    pub fn with_view_types(mut self, views: ViewTypes) -> Self {
        self.views = views;
        self
    }

    /// The view-type choice of a call: its header, else the worker's default.
    fn views<T>(&self, request: &Request<T>) -> Result<ViewTypes> {
        match request.metadata().get(VIEW_TYPES_HEADER).map(|v| v.to_str().unwrap_or("")) {
            None => Ok(self.views),
            Some(text) => ViewTypes::parse(text).ok_or_else(|| {
                Error::invalid(format!("{VIEW_TYPES_HEADER}: `{text}` is not one of view, utf8, large_utf8"))
            }),
        }
    }

    /// Requires credentials on every call when `auth` is set.
    pub fn with_auth(mut self, auth: Option<Arc<Authenticator>>) -> Self {
        self.auth = auth;
        self
    }

    fn begin<T>(&self, method: &'static str, request: &Request<T>) -> Call {
        let id = request_id(request.metadata());
        Call {
            authorized: self.authorize(request),
            span: rpc_span(method, &id),
            timer: RequestTimer::start(method),
            id,
        }
    }

    /// The caller, when authentication is on: a client certificate the tokens file names, else
    /// the bearer token; UNAUTHENTICATED without valid credentials.
    fn authorize<T>(&self, request: &Request<T>) -> Result<Option<Principal>> {
        let Some(auth) = &self.auth else { return Ok(None) };
        let certificate = request.peer_certs().and_then(|certs| certs.first().map(|c| c.to_vec()));
        if let Some(principal) = certificate.and_then(|der| auth.certificate(&der)) {
            return Ok(Some(principal));
        }
        let header = request.metadata().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        auth.authenticate(header).map(Some)
    }

    /// The `PollInfo` for a job's current state.
    async fn poll_info(&self, job: Job, views: ViewTypes) -> Result<PollInfo> {
        match job.state {
            JobState::Pending | JobState::Running => {
                let descriptor = job_descriptor(&job.id);
                let info = FlightInfo::new()
                    .with_descriptor(descriptor.clone())
                    .with_app_metadata(serde_json::json!({"job": job.id.as_str(), "state": job.state}).to_string());
                Ok(PollInfo {
                    info: Some(info),
                    flight_descriptor: Some(descriptor),
                    progress: Some(if job.state == JobState::Running { 0.5 } else { 0.0 }),
                    expiration_time: None,
                })
            }
            JobState::Done => {
                let handle = job.result.ok_or_else(|| Error::Internal("done job without a result".into()))?;
                let meta = self.engine.live_meta(&handle).await?;
                Ok(PollInfo {
                    info: Some(self.info_for(&meta, views).await?),
                    flight_descriptor: None,
                    progress: Some(1.0),
                    expiration_time: (!meta.pinned).then(|| timestamp(meta.expires_at)),
                })
            }
            JobState::Failed => {
                let error = job.error.unwrap_or(JobError { kind: "internal".into(), message: "job failed".into() });
                Err(Error::from_kind(&error.kind, error.message))
            }
            JobState::Cancelled => Err(Error::Cancelled(format!("job {} was cancelled", job.id))),
        }
    }

    /// The routes serving this service, with message limits from the engine's configuration.
    pub fn into_routes(self, framing: crate::config::WireFraming) -> FlightRoutes {
        FlightRoutes::new(self, framing)
    }

    /// DoPut over any stream of messages: tonic's, or the one `wire` assembles.
    async fn put(
        &self,
        request: Request<BoxStream<FlightData>>,
    ) -> std::result::Result<Response<BoxStream<PutResult>>, Status> {
        let call = self.begin("DoPut", &request);
        call.run(async move {
            let mut idempotency_key = request
                .metadata()
                .get(IDEMPOTENCY_KEY_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut incoming = request.into_inner();
            let first = incoming
                .next()
                .await
                .transpose()?
                .ok_or_else(|| Status::from(Error::invalid("empty upload stream")))?;
            if let Some(cmd) = first.flight_descriptor.as_ref().and_then(sql_command) {
                let (schema, batches) = read_table(first, incoming, self.engine.limits().clone()).await?;
                let app_metadata = self.sql.put(cmd, schema, batches).await?;
                let result = PutResult { app_metadata };
                return Ok(Response::new(Box::pin(stream::once(async { Ok(result) })) as BoxStream<PutResult>));
            }
            let mut name = None;
            if let Some(descriptor) = &first.flight_descriptor {
                match descriptor.r#type() {
                    DescriptorType::Path => match descriptor.path.as_slice() {
                        [] => {}
                        [n] if !n.is_empty() && n.len() <= 256 => name = Some(n.clone()),
                        _ => {
                            return Err(Error::invalid(
                                "descriptor path must be one name of 1 to 256 characters",
                            )
                            .into());
                        }
                    },
                    DescriptorType::Cmd => {
                        #[derive(serde::Deserialize)]
                        #[serde(deny_unknown_fields)]
                        struct PutCommand {
                            name: Option<String>,
                            idempotency_key: Option<String>,
                        }
                        let cmd: PutCommand = serde_json::from_slice(&descriptor.cmd).map_err(|e| {
                            Error::invalid(format!("upload command is not valid JSON: {e}"))
                        })?;
                        name = cmd.name;
                        idempotency_key = cmd.idempotency_key.or(idempotency_key);
                    }
                    DescriptorType::Unknown => {}
                }
            }
            let (schema, batches) = read_table(first, incoming, self.engine.limits().clone()).await?;
            let meta = self.engine.upload(name, idempotency_key, schema, batches).await?;
            tracing::Span::current().record("handle", meta.handle.as_str());
            let result = PutResult { app_metadata: engine::result_json(&meta).to_string().into() };
            Ok(Response::new(Box::pin(stream::once(async { Ok(result) })) as BoxStream<PutResult>))
        })
        .await
    }

    async fn info_for(&self, meta: &ResultMeta, views: ViewTypes) -> Result<FlightInfo> {
        let schema = self.engine.schema(&meta.handle).await?;
        flight_info(meta, &views.schema(&schema))
    }

    async fn meta_for_descriptor(&self, descriptor: &FlightDescriptor) -> Result<ResultMeta> {
        match descriptor.r#type() {
            DescriptorType::Path => match descriptor.path.as_slice() {
                [one] => self.engine.live_meta(&Handle::parse(one)?).await,
                _ => Err(Error::invalid("descriptor path must be one handle")),
            },
            DescriptorType::Cmd => {
                let request = request::Request::parse_command(&descriptor.cmd)?;
                self.engine.produce(request).await
            }
            DescriptorType::Unknown => Err(Error::invalid("descriptor type is unknown")),
        }
    }
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

fn endpoint(meta: &ResultMeta) -> FlightEndpoint {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(meta.handle.to_string()));
    if meta.pinned { endpoint } else { endpoint.with_expiration_time(timestamp(meta.expires_at)) }
}

fn flight_info(meta: &ResultMeta, schema: &SchemaRef) -> Result<FlightInfo> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)?
        .with_descriptor(FlightDescriptor::new_path(vec![meta.handle.to_string()]))
        .with_endpoint(endpoint(meta))
        .with_total_records(meta.num_rows as i64)
        .with_total_bytes(meta.num_bytes as i64)
        .with_ordered(true)
        .with_app_metadata(engine::result_json(meta).to_string()))
}

/// The Flight SQL command a descriptor carries, if any.
fn sql_command(descriptor: &FlightDescriptor) -> Option<arrow_flight::sql::Command> {
    (descriptor.r#type() == DescriptorType::Cmd).then(|| sql::decode(&descriptor.cmd)).flatten()
}

fn flight_error(err: FlightError) -> Status {
    match err {
        FlightError::Tonic(status) => *status,
        FlightError::Arrow(e) => Error::from(e).into(),
        FlightError::DecodeError(m) | FlightError::ProtocolError(m) => {
            Error::invalid(format!("malformed Flight data: {m}")).into()
        }
        FlightError::NotYetImplemented(m) => Error::invalid(format!("unsupported: {m}")).into(),
        FlightError::ExternalError(e) => Error::Internal(e.to_string()).into(),
    }
}

/// Reads a client's FlightData stream into batches, counting bytes against the upload limit.
pub(crate) async fn read_table(
    first: FlightData,
    rest: impl Stream<Item = std::result::Result<FlightData, Status>> + Send + Unpin + 'static,
    limits: Limits,
) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), Status> {
    let received = Arc::new(AtomicU64::new(0));
    let counted = stream::once(async { Ok(first) }).chain(rest).map(move |item| {
        let data = item.map_err(|s| FlightError::Tonic(Box::new(s)))?;
        // Compressed bodies count at the size they claim to decompress to, checked before the
        // decoder allocates it: a small body cannot ask for terabytes.
        // Its schema is checked too: arrow-rs panics on some malformed ones.
        let body = if data.data_header.is_empty() {
            data.data_body.len() as u64
        } else {
            ipc::check_message(&data.data_header, &data.data_body).map_err(|e| FlightError::Tonic(Box::new(e.into())))?
        };
        let size = (data.data_header.len() as u64).saturating_add(body);
        let total = received.fetch_add(size, Ordering::Relaxed).saturating_add(size);
        limits.check_put_bytes(total).map_err(|e| FlightError::Tonic(Box::new(e.into())))?;
        Ok(data)
    });
    // A message with no IPC header carries only the descriptor or app metadata (pyarrow's
    // DoExchange opens that way): nothing to decode.
    let counted = counted.filter(|item| {
        let keep = !matches!(item, Ok(data) if data.data_header.is_empty());
        async move { keep }
    });
    let mut decoder = crate::contain::Guarded::new(FlightDataDecoder::new(counted), |panic| {
        FlightError::Tonic(Box::new(Error::invalid(format!("malformed Arrow IPC: {panic}")).into()))
    });
    let mut schema = None;
    let mut batches = Vec::new();
    while let Some(decoded) = decoder.next().await {
        match decoded.map_err(flight_error)?.payload {
            DecodedPayload::Schema(s) => {
                if schema.as_ref().is_some_and(|first| first != &s) {
                    return Err(Error::invalid("the stream changed its schema part way").into());
                }
                schema = Some(s)
            }
            DecodedPayload::RecordBatch(b) => batches.push(b),
            DecodedPayload::None => {}
        }
    }
    let schema = schema.ok_or_else(|| Status::from(Error::invalid("the stream carried no schema")))?;
    Ok((schema, batches))
}

/// Streams batches to the client through the encoder, reading them on the blocking pool.
fn stream_batches(
    schema: SchemaRef,
    batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
    views: ViewTypes,
) -> BoxStream<FlightData> {
    let schema_out = views.schema(&schema);
    let target = schema_out.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<RecordBatch, FlightError>>(2);
    tokio::task::spawn_blocking(move || {
        let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for batch in batches {
                let batch = batch
                    .and_then(|b| views.batch(b, &target))
                    .map_err(|e| FlightError::Tonic(Box::new(e.into())))?;
                for part in convert::split_batch(&batch, convert::BATCH_TARGET_BYTES) {
                    if tx.blocking_send(Ok(part)).is_err() {
                        return Ok(()); // the client went away
                    }
                }
            }
            Ok(())
        }));
        let failure = match sent {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(FlightError::Tonic(Box::new(
                Error::Internal("reading the result failed unexpectedly".into()).into(),
            ))),
        };
        if let Some(e) = failure {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let batches = tokio_stream::wrappers::ReceiverStream::new(rx);
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema_out)
        .with_max_flight_data_size(convert::BATCH_TARGET_BYTES)
        .build(batches)
        .map_err(flight_error);
    Box::pin(encoded)
}

/// Streams stored IPC messages to the client as FlightData, reading them on the blocking pool:
/// the schema first, then each record batch's header and body as read (and checked) from the
/// store.
fn stream_messages(stored: IpcStream) -> BoxStream<FlightData> {
    let IpcStream { schema, messages } = stored;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<FlightData, Status>>(2);
    let schema_message = FlightData::from(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()));
    tokio::task::spawn_blocking(move || {
        let send = |item| tx.blocking_send(item).is_ok();
        // A panic must end the stream with an error: a stream that just stops would look
        // complete to the client.
        let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if !send(Ok(schema_message)) {
                return;
            }
            for message in messages {
                let data = message.map(|m| FlightData { data_header: m.header, data_body: m.body, ..Default::default() });
                let failed = data.is_err();
                if !send(data.map_err(Status::from)) || failed {
                    return;
                }
            }
        }));
        if sent.is_err() {
            send(Err(Error::Internal("reading the result failed unexpectedly".into()).into()));
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

fn rpc_span(method: &'static str, request_id: &str) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        method,
        request_id,
        action = tracing::field::Empty,
        handle = tracing::field::Empty
    )
}

/// What every RPC does around its own work: name it (request id, span), authenticate it, run it
/// as the caller's tenant, count it, and echo the request id.
struct Call {
    id: String,
    authorized: Result<Option<Principal>>,
    span: tracing::Span,
    timer: RequestTimer,
}

impl Call {
    async fn run<T>(
        self,
        work: impl Future<Output = std::result::Result<Response<T>, Status>>,
    ) -> std::result::Result<Response<T>, Status> {
        let Call { id, authorized, span, timer } = self;
        let result = match authorized {
            Err(e) => Err(e.into()),
            Ok(principal) => crate::tenant::scope(principal.map(|p| p.tenant), work.instrument(span)).await,
        };
        let result = result.map_err(message_limit_as_exhausted);
        timer.finish(result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok));
        with_request_id(result, &id)
    }
}

/// tonic refuses a streamed message over the size limit with OUT_OF_RANGE; to a client that is a
/// limit like the others, so it is RESOURCE_EXHAUSTED naming the setting.
fn message_limit_as_exhausted(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("message length too large") {
        Error::ResourceExhausted(format!("{} (POLARWAY_MAX_MESSAGE_BYTES)", status.message())).into()
    } else {
        status
    }
}

/// The client's `x-request-id`, or a new one: it names the call in logs and comes back in the
/// response metadata.
fn request_id(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// Echoes the request id on the answer, success or error.
fn with_request_id<T>(
    result: std::result::Result<Response<T>, Status>,
    id: &str,
) -> std::result::Result<Response<T>, Status> {
    let Ok(value) = tonic::metadata::MetadataValue::try_from(id) else { return result };
    match result {
        Ok(mut response) => {
            response.metadata_mut().insert(REQUEST_ID_HEADER, value);
            Ok(response)
        }
        Err(mut status) => {
            status.metadata_mut().insert(REQUEST_ID_HEADER, value);
            Err(status)
        }
    }
}

#[tonic::async_trait]
impl FlightService for PolarwayFlight {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> std::result::Result<Response<Self::HandshakeStream>, Status> {
        let issued = match &self.auth {
            None => None,
            Some(auth) => {
                let header = request.metadata().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
                let (principal, token) = auth.handshake(header)?;
                tracing::info!(tenant = %principal.tenant, "handshake authenticated");
                Some(token)
            }
        };
        let mut incoming = request.into_inner();
        let first = incoming.message().await?.unwrap_or_default();
        let reply = HandshakeResponse {
            protocol_version: first.protocol_version,
            payload: issued.clone().map(bytes::Bytes::from).unwrap_or(first.payload),
        };
        let mut response: Response<Self::HandshakeStream> =
            Response::new(Box::pin(stream::once(async { Ok(reply) })));
        if let Some(token) = issued {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::from(Error::Internal("token is not a valid header".into())))?;
            response.metadata_mut().insert(AUTHORIZATION, value);
        }
        Ok(response)
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> std::result::Result<Response<Self::ListFlightsStream>, Status> {
        let call = self.begin("ListFlights", &request);
        call.run(async move {
            let views = self.views(&request)?;
            let prefix = String::from_utf8_lossy(&request.get_ref().expression).to_string();
            let mut infos = Vec::new();
            for meta in self.engine.list().await? {
                if !prefix.is_empty() && !meta.name.as_deref().unwrap_or("").starts_with(&prefix) {
                    continue;
                }
                match self.info_for(&meta, views).await {
                    Ok(info) => infos.push(Ok(info)),
                    // Dropped or expired since the listing: not an error.
                    Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(Response::new(Box::pin(stream::iter(infos)) as Self::ListFlightsStream))
        })
        .await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let call = self.begin("GetFlightInfo", &request);
        call.run(async move {
            let views = self.views(&request)?;
            let descriptor = request.get_ref();
            if let Some(cmd) = sql_command(descriptor) {
                return Ok(Response::new(match self.sql.info(cmd).await? {
                    sql::Info::Result(meta) => {
                        tracing::Span::current().record("handle", meta.handle.as_str());
                        self.info_for(&meta, views).await?
                    }
                    sql::Info::Metadata(schema, ticket) => sql::metadata_info(descriptor.clone(), &schema, ticket)?,
                }));
            }
            let meta = self.meta_for_descriptor(descriptor).await?;
            tracing::Span::current().record("handle", meta.handle.as_str());
            Ok(Response::new(self.info_for(&meta, views).await?))
        })
        .await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<PollInfo>, Status> {
        let call = self.begin("PollFlightInfo", &request);
        call.run(async move {
            let views = self.views(&request)?;
            let descriptor = request.get_ref();
            let job = match job_id(descriptor)? {
                // A poll of a queued job.
                Some(id) => self.jobs.get(&id).await?,
                // A command: queued as a batch job, answered at once.
                None if descriptor.r#type() == DescriptorType::Cmd => self.jobs.submit(&descriptor.cmd).await?,
                // A path names an existing result: already complete.
                None => {
                    let meta = self.meta_for_descriptor(descriptor).await?;
                    return Ok(Response::new(PollInfo {
                        info: Some(self.info_for(&meta, views).await?),
                        flight_descriptor: None,
                        progress: Some(1.0),
                        expiration_time: (!meta.pinned).then(|| timestamp(meta.expires_at)),
                    }));
                }
            };
            Ok(Response::new(self.poll_info(job, views).await?))
        })
        .await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<SchemaResult>, Status> {
        let call = self.begin("GetSchema", &request);
        call.run(async move {
            let views = self.views(&request)?;
            let schema = match sql_command(request.get_ref()) {
                Some(cmd) => self.sql.schema(cmd).await?,
                None => {
                    let meta = self.meta_for_descriptor(request.get_ref()).await?;
                    self.engine.schema(&meta.handle).await?
                }
            };
            let schema = views.schema(&schema);
            let options = arrow::ipc::writer::IpcWriteOptions::default();
            let result = SchemaResult::try_from(SchemaAsIpc::new(&schema, &options))
                .map_err(|e| Status::from(Error::from(e)))?;
            Ok(Response::new(result))
        })
        .await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<Self::DoGetStream>, Status> {
        let call = self.begin("DoGet", &request);
        call.run(async move {
            let views = self.views(&request)?;
            let handle = match ticket::Ticket::parse(&request.get_ref().ticket)? {
                ticket::Ticket::Result(handle) => handle,
                ticket::Ticket::SqlMetadata(cmd) => {
                    let batch = self.sql.metadata(cmd).await?;
                    let schema = batch.schema();
                    return Ok(Response::new(stream_batches(schema, Box::new(std::iter::once(Ok(batch))), views)));
                }
            };
            tracing::Span::current().record("handle", handle.as_str());
            // A stored file's record batches go out as they are stored, without decoding and
            // encoding them again, unless the client asked for other string types.
            if views == ViewTypes::View
                && let Some(stored) = self.engine.open_messages(&handle).await?
            {
                return Ok(Response::new(stream_messages(stored)));
            }
            let result = self.engine.open(&handle).await?;
            Ok(Response::new(stream_batches(result.schema, result.batches, views)))
        })
        .await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoPutStream>, Status> {
        self.put(request.map(|messages| Box::pin(messages) as BoxStream<FlightData>)).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoExchangeStream>, Status> {
        let call = self.begin("DoExchange", &request);
        call.run(async move {
            let views = self.views(&request)?;
            let mut incoming = request.into_inner();
            let first = incoming
                .message()
                .await?
                .ok_or_else(|| Status::from(Error::invalid("empty exchange stream")))?;
            let cmd = first
                .flight_descriptor
                .as_ref()
                .filter(|d| d.r#type() == DescriptorType::Cmd)
                .map(|d| d.cmd.clone())
                .ok_or_else(|| {
                    Status::from(Error::invalid(
                        r#"DoExchange needs a command descriptor: {"steps": [...]}"#,
                    ))
                })?;
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct ExchangeCommand {
                steps: Vec<Step>,
            }
            let command: ExchangeCommand = serde_json::from_slice(&cmd)
                .map_err(|e| Error::invalid(format!("exchange command: {e}")))?;
            let (schema, batches) = read_table(first, incoming, self.engine.limits().clone()).await?;
            let frame = self.engine.exchange(command.steps, schema, batches).await?;
            let (schema, batches) = convert::frame_to_batches(&frame)?;
            Ok(Response::new(stream_batches(schema, Box::new(batches.into_iter().map(Ok)), views)))
        })
        .await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> std::result::Result<Response<Self::DoActionStream>, Status> {
        let call = self.begin("DoAction", &request);
        let action = request.into_inner();
        call.span.record("action", action.r#type.as_str());
        call.run(async move {
            if sql::is_sql_action(&action.r#type) {
                let answer = self.sql.action(&action.r#type, action.body).await?;
                let results: Vec<_> = answer.map(|body| Ok(arrow_flight::Result { body })).into_iter().collect();
                return Ok(Response::new(Box::pin(stream::iter(results)) as Self::DoActionStream));
            }
            let body: bytes::Bytes = match action.r#type.as_str() {
                catalog::RENEW_FLIGHT_ENDPOINT => {
                    let req = RenewFlightEndpointRequest::decode(action.body)
                        .map_err(|e| Error::invalid(format!("RenewFlightEndpointRequest: {e}")))?;
                    let endpoint_in = req.endpoint.unwrap_or_default();
                    let ticket = endpoint_in.ticket.clone().unwrap_or_default();
                    let handle = Handle::from_ticket(&ticket.ticket)?;
                    let until = endpoint_in.expiration_time.and_then(|t| {
                        DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.max(0) as u32)
                    });
                    let meta = self.engine.renew(&handle, until).await?;
                    endpoint(&meta).encode_to_vec().into()
                }
                catalog::CANCEL_FLIGHT_INFO => {
                    let req = CancelFlightInfoRequest::decode(action.body)
                        .map_err(|e| Error::invalid(format!("CancelFlightInfoRequest: {e}")))?;
                    let info = req.info.unwrap_or_default();
                    if let Some(id) = info.flight_descriptor.as_ref().map(job_id).transpose()?.flatten() {
                        self.jobs.cancel(&id).await?;
                    }
                    for ep in &info.endpoint {
                        let ticket = ep.ticket.clone().unwrap_or_default();
                        self.engine.drop_handle(&Handle::from_ticket(&ticket.ticket)?).await?;
                    }
                    CancelFlightInfoResult { status: CancelStatus::Cancelled as i32 }
                        .encode_to_vec()
                        .into()
                }
                op => self.engine.action(op, &action.body).await?.to_string().into(),
            };
            let result = arrow_flight::Result { body };
            Ok(Response::new(Box::pin(stream::once(async { Ok(result) })) as Self::DoActionStream))
        })
        .await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> std::result::Result<Response<Self::ListActionsStream>, Status> {
        self.authorize(&request)?;
        let sql_actions = [
            (sql::CREATE_PREPARED_STATEMENT, "Flight SQL: ActionCreatePreparedStatementRequest"),
            (sql::CLOSE_PREPARED_STATEMENT, "Flight SQL: ActionClosePreparedStatementRequest"),
        ];
        let actions = catalog::actions().into_iter().chain(sql_actions.iter().copied()).map(|(name, description)| {
            Ok(ActionType { r#type: name.to_string(), description: description.to_string() })
        });
        Ok(Response::new(Box::pin(stream::iter(actions.collect::<Vec<_>>()))))
    }
}
