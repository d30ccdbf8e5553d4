//! The Arrow Flight adapter: decode the request, call the engine, encode the answer.
//!
//! This is the only module that knows tonic and the Flight protocol. Each RPC here decodes its
//! descriptor or ticket ([`descriptor`], [`ticket`]), runs inside a [`call::Call`] that gives it
//! the caller's request context, calls the engine, SQL or the job queue, and shapes the answer
//! ([`answer`]). Tables travel through [`stream`]; DoGet and DoPut are framed onto HTTP/2 by
//! [`wire`]; errors become statuses in [`status`] alone.

pub mod answer;
mod call;
pub mod catalog;
pub mod descriptor;
mod encode;
/// Response bytes in flight: the worker's and each connection's budget, and each stream's progress.
pub mod inflight;
pub mod sql;
pub mod status;
mod stream;
pub mod ticket;
pub(crate) mod wire;

pub(crate) use stream::read_table;
pub use wire::FlightRoutes;

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, Criteria, Empty, FlightData,
    FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse, PollInfo, PutResult, RenewFlightEndpointRequest,
    SchemaAsIpc, SchemaResult, Ticket,
};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, TryStreamExt, stream as futures_stream};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::context::RequestContext;
use crate::convert::{self, ViewTypes};
use crate::engine::Engine;
use crate::engine::jobs::{Job, JobError, JobState, Jobs};
use crate::error::{Error, Result};
use crate::flight::inflight::{Budget, ConnectionBudget, Flow};
use crate::handle::Handle;
use crate::sql::SqlEngine;
use crate::store::ResultMeta;
use crate::tenant::auth::Authenticator;
use call::Call;
use descriptor::Descriptor;
use encode::OutgoingData;

pub use crate::protocol::{AFFINITY_HEADER, IDEMPOTENCY_KEY_HEADER, REQUEST_ID_HEADER, VIEW_TYPES_HEADER};

type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send + 'static>>;

/// The Flight service of one worker.
pub struct PolarwayFlight {
    engine: Arc<Engine>,
    jobs: Arc<Jobs>,
    auth: Option<Arc<Authenticator>>,
    sql: sql::FlightSql,
    views: ViewTypes,
    budget: Arc<Budget>,
    readers: Arc<tokio::sync::Semaphore>,
}

/// The worker's budget for response bytes in flight unless set ([`PolarwayFlight::with_budget`]).
pub const DEFAULT_RESPONSE_BUDGET: usize = 512 << 20;

impl PolarwayFlight {
    /// A service over `engine`, queueing batch jobs in `jobs`.
    pub fn new(engine: Arc<Engine>, jobs: Arc<Jobs>) -> Self {
        let sql = sql::FlightSql::new(SqlEngine::new(engine.clone(), engine.limits().max_sql_memory_bytes));
        // Blocking reads for response streams: enough to keep every core's worth of DoGets
        // reading, bounded so that streams cannot take the pool operations run on.
        let readers = 4 * std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
        Self {
            engine,
            jobs,
            auth: None,
            sql,
            views: ViewTypes::default(),
            budget: Arc::new(Budget::new(DEFAULT_RESPONSE_BUDGET)),
            readers: Arc::new(tokio::sync::Semaphore::new(readers)),
        }
    }

    /// Bounds the response bytes in flight on the whole worker by `budget`.
    pub fn with_budget(mut self, budget: Arc<Budget>) -> Self {
        self.budget = budget;
        self
    }

    /// How a response to `request` takes budget and reads: the worker's budget, its connection's
    /// (which the server puts in the request), and the progress of its HTTP/2 stream.
    fn producer<T>(&self, request: &Request<T>) -> stream::Producer {
        let connection = request.extensions().get::<ConnectionBudget>().cloned();
        let flow = Flow::new(self.budget.clone(), connection, crate::flight::inflight::current());
        stream::Producer::new(flow, self.readers.clone())
    }

    /// Sends view-typed columns as `views` unless a call asks otherwise.
    pub fn with_view_types(mut self, views: ViewTypes) -> Self {
        self.views = views;
        self
    }

    /// Requires credentials on every call when `auth` is set.
    pub fn with_auth(mut self, auth: Option<Arc<Authenticator>>) -> Self {
        self.auth = auth;
        self
    }

    /// The routes serving this service, with message limits from the engine's configuration and
    /// request limits from `transport`.
    pub fn into_routes(
        self,
        framing: crate::config::WireFraming,
        transport: &crate::config::Transport,
    ) -> FlightRoutes {
        FlightRoutes::new(self, framing, transport)
    }

    fn begin<T>(&self, method: &'static str, request: &Request<T>) -> Call {
        Call::begin(method, request, self.auth.as_deref(), self.engine.limits().request_timeout)
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

    /// The `PollInfo` of a finished result.
    async fn done(&self, ctx: &RequestContext, meta: &ResultMeta, views: ViewTypes) -> Result<PollInfo> {
        Ok(PollInfo {
            info: Some(self.info_for(ctx, meta, views).await?),
            flight_descriptor: None,
            progress: Some(1.0),
            expiration_time: (!meta.pinned).then(|| answer::timestamp(meta.expires_at)),
        })
    }

    /// The `PollInfo` for a job's current state.
    async fn poll_info(&self, ctx: &RequestContext, job: Job, views: ViewTypes) -> Result<PollInfo> {
        match job.state {
            JobState::Pending | JobState::Running => {
                let descriptor = Descriptor::job(&job.id);
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
                let meta = self.engine.catalog().live_meta(ctx, &handle).await?;
                self.done(ctx, &meta, views).await
            }
            JobState::Failed => {
                let error = job.error.unwrap_or(JobError { kind: "internal".into(), message: "job failed".into() });
                Err(Error::from_kind(&error.kind, error.message))
            }
            JobState::Cancelled => Err(Error::Cancelled(format!("job {} was cancelled", job.id))),
        }
    }

    /// DoGet with each message's body in parts, for `wire` to send as they are; tonic's codec gets
    /// them joined ([`FlightService::do_get`]).
    async fn get(&self, request: Request<Ticket>) -> std::result::Result<Response<BoxStream<OutgoingData>>, Status> {
        let call = self.begin("DoGet", &request);
        call.run_streaming(|ctx| async move {
            let views = self.views(&request)?;
            let producer = self.producer(&request);
            let handle = match ticket::Ticket::parse(&request.get_ref().ticket)? {
                ticket::Ticket::Result(handle) => handle,
                ticket::Ticket::SqlMetadata(cmd) => {
                    let batch = self.sql.metadata(&ctx, cmd).await?;
                    let schema = batch.schema();
                    let batches = Box::new(std::iter::once(Ok(batch)));
                    return Ok(Response::new(stream::stream_batches(schema, batches, views, producer)));
                }
            };
            tracing::Span::current().record("handle", handle.as_str());
            // Opening takes one of the readers too: a burst of DoGets opens files a few at a
            // time rather than on as many blocking threads.
            let _reader = producer.reader().await;
            // A stored file's record batches go out as they are stored, without decoding and
            // encoding them again, unless the client asked for other string types.
            if views == ViewTypes::View
                && let Some(stored) = self.engine.catalog().open_messages(&ctx, &handle).await?
            {
                return Ok(Response::new(stream::stream_messages(stored, producer)));
            }
            let result = self.engine.catalog().open(&ctx, &handle).await?;
            Ok(Response::new(stream::stream_batches(result.schema, result.batches, views, producer)))
        })
        .await
    }

    /// DoPut over any stream of messages: tonic's, or the one `wire` assembles.
    async fn put(
        &self,
        request: Request<BoxStream<FlightData>>,
    ) -> std::result::Result<Response<BoxStream<PutResult>>, Status> {
        let call = self.begin("DoPut", &request);
        call.run(|ctx| async move {
            let header_key =
                request.metadata().get(IDEMPOTENCY_KEY_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
            let mut incoming = request.into_inner();
            let first = incoming.next().await.transpose()?.ok_or_else(|| Error::invalid("empty upload stream"))?;
            let descriptor = Descriptor::parse_optional(first.flight_descriptor.as_ref())?;
            let limits = self.engine.limits().clone();
            let app_metadata = if let Descriptor::Sql(cmd) = descriptor {
                let (schema, batches) = stream::read_table(first, incoming, limits).await?;
                self.sql.put(&ctx.restarted(), *cmd, schema, batches).await?
            } else {
                let upload = descriptor.upload()?;
                let (schema, batches) = stream::read_table(first, incoming, limits).await?;
                // A streamed request's time starts once its input has arrived.
                let ctx = ctx.restarted();
                let key = upload.idempotency_key.or(header_key);
                let meta = self.engine.upload(&ctx, upload.name, key, schema, batches).await?;
                tracing::Span::current().record("handle", meta.handle.as_str());
                answer::result_json(&meta).to_string().into()
            };
            let result = PutResult { app_metadata };
            Ok(Response::new(Box::pin(futures_stream::once(async { Ok(result) })) as BoxStream<PutResult>))
        })
        .await
    }

    async fn info_for(&self, ctx: &RequestContext, meta: &ResultMeta, views: ViewTypes) -> Result<FlightInfo> {
        let schema = self.engine.catalog().schema(ctx, &meta.handle).await?;
        answer::flight_info(meta, &views.schema(&schema))
    }

    /// The result a path or an operation command names (computed if need be).
    async fn meta_for(&self, ctx: &RequestContext, descriptor: Descriptor) -> Result<ResultMeta> {
        match descriptor {
            Descriptor::Path(path) => self.engine.catalog().live_meta(ctx, &Descriptor::handle(&path)?).await,
            Descriptor::Json(command) => self.engine.produce(ctx, Descriptor::operation(&command)?).await,
            Descriptor::Job(_) => Err(Error::invalid("a job is polled with PollFlightInfo")),
            Descriptor::Sql(_) | Descriptor::Empty => Err(Error::invalid("descriptor type is unknown")),
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
                let header = request.metadata().get(call::AUTHORIZATION).and_then(|v| v.to_str().ok());
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
            Response::new(Box::pin(futures_stream::once(async { Ok(reply) })));
        if let Some(token) = issued {
            let value =
                format!("Bearer {token}").parse().map_err(|_| Error::Internal("token is not a valid header".into()))?;
            response.metadata_mut().insert(call::AUTHORIZATION, value);
        }
        Ok(response)
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> std::result::Result<Response<Self::ListFlightsStream>, Status> {
        let call = self.begin("ListFlights", &request);
        call.run(|ctx| async move {
            let views = self.views(&request)?;
            let prefix = String::from_utf8_lossy(&request.get_ref().expression).to_string();
            let mut infos = Vec::new();
            for meta in self.engine.catalog().list(&ctx).await? {
                if !prefix.is_empty() && !meta.name.as_deref().unwrap_or("").starts_with(&prefix) {
                    continue;
                }
                match self.info_for(&ctx, &meta, views).await {
                    Ok(info) => infos.push(Ok(info)),
                    // Dropped or expired since the listing: not an error.
                    Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            // The datasets the caller may use, after its results.
            let names: Vec<String> = self.engine.data().datasets().visible(&ctx).map(|(n, _)| n.to_string()).collect();
            for name in names.into_iter().filter(|n| n.starts_with(&prefix)) {
                // A dataset with no files yet (a sink's target) lists with no columns.
                let schema = match self.engine.dataset_schema(&ctx, &name).await {
                    Err(Error::NotFound(_)) => Arc::new(arrow::datatypes::Schema::empty()),
                    other => other?,
                };
                let dataset = self.engine.data().datasets().get(&ctx, &name)?;
                infos.push(Ok(answer::dataset_info(&name, dataset, &views.schema(&schema))?));
            }
            Ok(Response::new(Box::pin(futures_stream::iter(infos)) as Self::ListFlightsStream))
        })
        .await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let call = self.begin("GetFlightInfo", &request);
        call.run(|ctx| async move {
            let views = self.views(&request)?;
            let descriptor = request.get_ref();
            let meta = match Descriptor::parse(descriptor)? {
                Descriptor::Sql(cmd) => match self.sql.info(&ctx, *cmd).await? {
                    sql::Info::Result(meta) => *meta,
                    sql::Info::Metadata(schema, ticket) => {
                        return Ok(Response::new(sql::metadata_info(descriptor.clone(), &schema, ticket)?));
                    }
                },
                other => self.meta_for(&ctx, other).await?,
            };
            tracing::Span::current().record("handle", meta.handle.as_str());
            Ok(Response::new(self.info_for(&ctx, &meta, views).await?))
        })
        .await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<PollInfo>, Status> {
        let call = self.begin("PollFlightInfo", &request);
        call.run(|ctx| async move {
            let views = self.views(&request)?;
            let job = match Descriptor::parse(request.get_ref())? {
                // A poll of a queued job.
                Descriptor::Job(id) => self.jobs.get(&ctx, &id).await?,
                // A command: queued as a batch job, answered at once.
                Descriptor::Json(command) => self.jobs.submit(&ctx, &command).await?,
                Descriptor::Sql(_) => {
                    return Err(Error::invalid("a Flight SQL command runs with GetFlightInfo, not as a job").into());
                }
                // A path names an existing result: already complete.
                other => {
                    let meta = self.meta_for(&ctx, other).await?;
                    return Ok(Response::new(self.done(&ctx, &meta, views).await?));
                }
            };
            Ok(Response::new(self.poll_info(&ctx, job, views).await?))
        })
        .await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<SchemaResult>, Status> {
        let call = self.begin("GetSchema", &request);
        call.run(|ctx| async move {
            let views = self.views(&request)?;
            let schema = match Descriptor::parse(request.get_ref())? {
                Descriptor::Sql(cmd) => self.sql.schema(&ctx, *cmd).await?,
                other => {
                    let meta = self.meta_for(&ctx, other).await?;
                    self.engine.catalog().schema(&ctx, &meta.handle).await?
                }
            };
            let schema = views.schema(&schema);
            let options = arrow::ipc::writer::IpcWriteOptions::default();
            let result = SchemaResult::try_from(SchemaAsIpc::new(&schema, &options)).map_err(Error::from)?;
            Ok(Response::new(result))
        })
        .await
    }

    async fn do_get(&self, request: Request<Ticket>) -> std::result::Result<Response<Self::DoGetStream>, Status> {
        let messages = self.get(request).await?;
        Ok(messages.map(|m| Box::pin(m.map_ok(OutgoingData::into_flight_data)) as BoxStream<FlightData>))
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
        call.run(|ctx| async move {
            let views = self.views(&request)?;
            let producer = self.producer(&request);
            let mut incoming = request.into_inner();
            let first = incoming.message().await?.ok_or_else(|| Error::invalid("empty exchange stream"))?;
            let steps = Descriptor::parse_optional(first.flight_descriptor.as_ref())?.exchange()?;
            let (schema, batches) = stream::read_table(first, incoming, self.engine.limits().clone()).await?;
            // A streamed request's time starts once its input has arrived.
            let ctx = ctx.restarted();
            let frame = self.engine.exchange(&ctx, steps, schema, batches).await?;
            let (schema, batches) = convert::frame_to_batches(&frame)?;
            let messages = stream::stream_batches(schema, Box::new(batches.into_iter().map(Ok)), views, producer);
            Ok(Response::new(Box::pin(messages.map_ok(OutgoingData::into_flight_data)) as BoxStream<FlightData>))
        })
        .await
    }

    async fn do_action(&self, request: Request<Action>) -> std::result::Result<Response<Self::DoActionStream>, Status> {
        let call = self.begin("DoAction", &request);
        let action = request.into_inner();
        call.span.record("action", action.r#type.as_str());
        call.run(|ctx| async move {
            if sql::is_sql_action(&action.r#type) {
                let answer = self.sql.action(&ctx, &action.r#type, action.body).await?;
                let results: Vec<_> = answer.map(|body| Ok(arrow_flight::Result { body })).into_iter().collect();
                return Ok(Response::new(Box::pin(futures_stream::iter(results)) as Self::DoActionStream));
            }
            let body: bytes::Bytes = match action.r#type.as_str() {
                catalog::RENEW_FLIGHT_ENDPOINT => {
                    let req = RenewFlightEndpointRequest::decode(action.body)
                        .map_err(|e| Error::invalid(format!("RenewFlightEndpointRequest: {e}")))?;
                    let endpoint_in = req.endpoint.unwrap_or_default();
                    let ticket = endpoint_in.ticket.clone().unwrap_or_default();
                    let handle = Handle::from_ticket(&ticket.ticket)?;
                    let until = endpoint_in
                        .expiration_time
                        .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.max(0) as u32));
                    let meta = self.engine.catalog().renew(&ctx, &handle, until).await?;
                    answer::endpoint(&meta).encode_to_vec().into()
                }
                catalog::CANCEL_FLIGHT_INFO => {
                    let req = CancelFlightInfoRequest::decode(action.body)
                        .map_err(|e| Error::invalid(format!("CancelFlightInfoRequest: {e}")))?;
                    let info = req.info.unwrap_or_default();
                    if let Descriptor::Job(id) = Descriptor::parse_optional(info.flight_descriptor.as_ref())? {
                        self.jobs.cancel(&ctx, &id).await?;
                    }
                    for ep in &info.endpoint {
                        let ticket = ep.ticket.clone().unwrap_or_default();
                        self.engine.catalog().drop_handle(&ctx, &Handle::from_ticket(&ticket.ticket)?).await?;
                    }
                    CancelFlightInfoResult { status: CancelStatus::Cancelled as i32 }.encode_to_vec().into()
                }
                op => answer::outcome_json(&self.engine.action(&ctx, op, &action.body).await?).to_string().into(),
            };
            let result = arrow_flight::Result { body };
            Ok(Response::new(Box::pin(futures_stream::once(async { Ok(result) })) as Self::DoActionStream))
        })
        .await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> std::result::Result<Response<Self::ListActionsStream>, Status> {
        call::authorize(self.auth.as_deref(), &request)?;
        let sql_actions = [
            (sql::CREATE_PREPARED_STATEMENT, "Flight SQL: ActionCreatePreparedStatementRequest"),
            (sql::CLOSE_PREPARED_STATEMENT, "Flight SQL: ActionClosePreparedStatementRequest"),
        ];
        let actions = catalog::actions().into_iter().chain(sql_actions.iter().copied()).map(|(name, description)| {
            Ok(ActionType { r#type: name.to_string(), description: description.to_string() })
        });
        Ok(Response::new(Box::pin(futures_stream::iter(actions.collect::<Vec<_>>()))))
    }
}
