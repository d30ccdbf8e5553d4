//! Flight SQL on the Flight port, beside the DataFrame protocol.
//!
//! A descriptor command or ticket that is a protobuf `Any` of a Flight SQL message is answered
//! here; everything else goes on to the DataFrame handlers. Statement results are persisted as
//! handles, so the ticket in their `FlightInfo` is an ordinary handle that any worker streams.
//! Metadata (catalogs, schemas, tables, table types, SQL info) is computed on `DoGet` from the
//! shared store, so its tickets (the command itself) also work on any worker. Prepared
//! statements keep no state on the worker: the statement handle carries the query and, after a
//! parameter `DoPut`, the bound parameters (`DoPutPreparedStatementResult` returns the new handle).

use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    Any, Command, CommandGetTables, CommandPreparedStatementQuery, CommandStatementIngest,
    DoPutPreparedStatementResult, DoPutUpdateResult, ProstMessageExt, SqlInfo, SqlSupportedCaseSensitivity,
    SqlSupportedTransaction, TableExistsOption, TableNotExistOption,
};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket};
use base64::Engine as _;
use bytes::Bytes;
use datafusion::common::ScalarValue;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::context::RequestContext;
use crate::error::{Error, Result};
use crate::sql::{CATALOG, IfExists, IngestMode, SCHEMA, SqlEngine};
use crate::store::ResultMeta;

const TYPE_PREFIX: &str = "type.googleapis.com/arrow.flight.protocol.sql.";
/// The Flight SQL action types.
pub const CREATE_PREPARED_STATEMENT: &str = "CreatePreparedStatement";
/// Closing a prepared statement: nothing to free, statements live in their handles.
pub const CLOSE_PREPARED_STATEMENT: &str = "ClosePreparedStatement";
const TRANSACTION_ACTIONS: &[&str] = &[
    "BeginTransaction",
    "EndTransaction",
    "BeginSavepoint",
    "EndSavepoint",
    "CancelQuery",
    "CreatePreparedSubstraitPlan",
];

/// The Flight SQL message in `bytes`, if it is one.
pub fn decode(bytes: &[u8]) -> Option<Command> {
    let any = Any::decode(bytes).ok()?;
    if !any.type_url.starts_with(TYPE_PREFIX) {
        return None;
    }
    Command::try_from(any).ok()
}

/// Whether an action type belongs to Flight SQL.
pub fn is_sql_action(kind: &str) -> bool {
    kind == CREATE_PREPARED_STATEMENT || kind == CLOSE_PREPARED_STATEMENT || TRANSACTION_ACTIONS.contains(&kind)
}

/// What a prepared statement handle holds.
#[derive(Serialize, Deserialize)]
struct Prepared {
    query: String,
    /// One row of parameters as an Arrow IPC stream, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params: Option<String>,
}

impl Prepared {
    fn parse(bytes: &[u8]) -> Result<Prepared> {
        serde_json::from_slice(bytes).map_err(|_| Error::invalid("not a prepared statement handle of this service"))
    }

    fn encode(&self) -> Bytes {
        serde_json::to_vec(self).expect("serialisable").into()
    }

    fn values(&self) -> Result<Vec<ScalarValue>> {
        let Some(encoded) = &self.params else { return Ok(Vec::new()) };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| Error::invalid("prepared statement handle: bad parameters"))?;
        parameter_values(&bytes)
    }
}

/// The first row of an Arrow IPC stream of parameters, as scalars.
pub(crate) fn parameter_values(ipc_stream: &[u8]) -> Result<Vec<ScalarValue>> {
    // One row of parameters: a few megabytes is generous.
    crate::store::ipc::check_stream(ipc_stream, 64 << 20)?;
    let bad = |panic| Error::invalid(format!("parameters: malformed Arrow IPC: {panic}"));
    let batches = crate::contain::guard(bad, || {
        let reader = StreamReader::try_new(std::io::Cursor::new(ipc_stream), None)?;
        Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
    })?;
    let mut values = Vec::new();
    for batch in batches {
        if batch.num_rows() == 0 {
            continue;
        }
        for column in batch.columns() {
            values.push(ScalarValue::try_from_array(column, 0).map_err(|e| Error::invalid(format!("parameter: {e}")))?);
        }
    }
    Ok(values)
}

/// Decodes a prepared statement handle and its bound parameters, as a query would.
pub(crate) fn prepared_statement(handle: &[u8]) -> Result<(String, Vec<ScalarValue>)> {
    let prepared = Prepared::parse(handle)?;
    let values = prepared.values()?;
    Ok((prepared.query, values))
}

fn schema_bytes(schema: &SchemaRef) -> Result<Bytes> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into()?;
    Ok(bytes)
}

fn sql_info() -> &'static SqlInfoData {
    static INFO: OnceLock<SqlInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "Polarway");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
        b.append(SqlInfo::FlightSqlServerReadOnly, false);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(SqlInfo::FlightSqlServerTransaction, SqlSupportedTransaction::None as i32);
        b.append(SqlInfo::FlightSqlServerCancel, false);
        b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
        b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
        b.append(SqlInfo::SqlDdlCatalog, false);
        b.append(SqlInfo::SqlDdlSchema, false);
        b.append(SqlInfo::SqlDdlTable, false);
        b.append(SqlInfo::SqlIdentifierCase, SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32);
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.append(
            SqlInfo::SqlQuotedIdentifierCase,
            SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
        );
        b.append(SqlInfo::SqlAllTablesAreSelectable, true);
        b.append(SqlInfo::SqlTransactionsSupported, false);
        b.build().expect("valid SQL info")
    })
}

fn ingest_mode(cmd: &CommandStatementIngest) -> Result<(IfExists, bool)> {
    let options = cmd.table_definition_options.unwrap_or_default();
    let create = match TableNotExistOption::try_from(options.if_not_exist).unwrap_or(TableNotExistOption::Unspecified) {
        TableNotExistOption::Fail => false,
        TableNotExistOption::Create | TableNotExistOption::Unspecified => true,
    };
    let if_exists = match TableExistsOption::try_from(options.if_exists).unwrap_or(TableExistsOption::Unspecified) {
        TableExistsOption::Fail | TableExistsOption::Unspecified => IfExists::Fail,
        TableExistsOption::Append => IfExists::Append,
        TableExistsOption::Replace => IfExists::Replace,
    };
    Ok((if_exists, create))
}

fn check_scope(catalog: Option<&str>, schema: Option<&str>) -> Result<()> {
    if catalog.is_some_and(|c| !c.is_empty() && c != CATALOG) {
        return Err(Error::NotFound(format!(
            "catalog `{}`: the only catalog is `{CATALOG}`",
            catalog.unwrap_or_default()
        )));
    }
    if schema.is_some_and(|s| !s.is_empty() && s != SCHEMA) {
        return Err(Error::NotFound(format!("schema `{}`: the only schema is `{SCHEMA}`", schema.unwrap_or_default())));
    }
    Ok(())
}

fn refused(cmd: &Command) -> Error {
    match cmd {
        Command::CommandStatementUpdate(_) | Command::CommandPreparedStatementUpdate(_) => Error::invalid(
            "updates, DDL and DML are not accepted: datasets change by upload, ingest or DataFrame operations",
        ),
        Command::CommandStatementSubstraitPlan(_) => Error::Unimplemented("Substrait plans are not supported".into()),
        other => Error::Unimplemented(format!("{} is not supported", other.type_url().trim_start_matches(TYPE_PREFIX))),
    }
}

/// Flight SQL over the worker's SQL engine.
pub struct FlightSql {
    sql: SqlEngine,
}

/// What `GetFlightInfo` answers: a persisted result or a metadata ticket.
pub enum Info {
    /// A query result, streamed by handle.
    Result(Box<ResultMeta>),
    /// Metadata computed at `DoGet`: its schema and ticket.
    Metadata(SchemaRef, Ticket),
}

impl FlightSql {
    /// Flight SQL over `sql`.
    pub fn new(sql: SqlEngine) -> Self {
        FlightSql { sql }
    }

    /// Runs a statement (or plans a metadata answer) for `GetFlightInfo`.
    pub async fn info(&self, ctx: &RequestContext, cmd: Command) -> Result<Info> {
        match cmd {
            Command::CommandStatementQuery(q) => {
                if q.transaction_id.is_some() {
                    return Err(Error::invalid("transactions are not supported"));
                }
                Ok(Info::Result(Box::new(self.sql.query(ctx, &q.query, Vec::new()).await?)))
            }
            Command::CommandPreparedStatementQuery(p) => {
                let prepared = Prepared::parse(&p.prepared_statement_handle)?;
                Ok(Info::Result(Box::new(self.sql.query(ctx, &prepared.query, prepared.values()?).await?)))
            }
            cmd @ (Command::CommandGetCatalogs(_)
            | Command::CommandGetDbSchemas(_)
            | Command::CommandGetTables(_)
            | Command::CommandGetTableTypes(_)
            | Command::CommandGetSqlInfo(_)) => {
                let schema = self.metadata_schema(&cmd);
                Ok(Info::Metadata(schema, Ticket::new(cmd.into_any().encode_to_vec())))
            }
            other => Err(refused(&other)),
        }
    }

    fn metadata_schema(&self, cmd: &Command) -> SchemaRef {
        match cmd {
            Command::CommandGetCatalogs(c) => (*c).into_builder().schema(),
            Command::CommandGetDbSchemas(c) => c.clone().into_builder().schema(),
            Command::CommandGetTables(c) => c.clone().into_builder().schema(),
            Command::CommandGetTableTypes(c) => (*c).into_builder().schema(),
            Command::CommandGetSqlInfo(c) => c.clone().into_builder(sql_info()).schema(),
            _ => Arc::new(arrow::datatypes::Schema::empty()),
        }
    }

    /// The schema a command's answer will have (`GetSchema`).
    pub async fn schema(&self, ctx: &RequestContext, cmd: Command) -> Result<SchemaRef> {
        match cmd {
            Command::CommandStatementQuery(q) => Ok(self.sql.prepare(ctx, &q.query).await?.0),
            Command::CommandPreparedStatementQuery(p) => {
                Ok(self.sql.prepare(ctx, &Prepared::parse(&p.prepared_statement_handle)?.query).await?.0)
            }
            cmd @ (Command::CommandGetCatalogs(_)
            | Command::CommandGetDbSchemas(_)
            | Command::CommandGetTables(_)
            | Command::CommandGetTableTypes(_)
            | Command::CommandGetSqlInfo(_)) => Ok(self.metadata_schema(&cmd)),
            other => Err(refused(&other)),
        }
    }

    /// The answer to a metadata ticket (`DoGet`).
    pub async fn metadata(&self, ctx: &RequestContext, cmd: Command) -> Result<RecordBatch> {
        Ok(match cmd {
            Command::CommandGetCatalogs(c) => {
                let mut builder = c.into_builder();
                builder.append(CATALOG);
                builder.build().map_err(metadata_error)?
            }
            Command::CommandGetDbSchemas(c) => {
                let mut builder = c.into_builder();
                builder.append(CATALOG, SCHEMA);
                builder.build().map_err(metadata_error)?
            }
            Command::CommandGetTables(c) => {
                let include_schema = c.include_schema;
                let CommandGetTables { catalog, .. } = &c;
                let in_scope = catalog.as_deref().is_none_or(|cat| cat.is_empty() || cat == CATALOG);
                let mut builder = c.into_builder();
                if in_scope {
                    for (name, schema) in self.sql.tables(ctx).await? {
                        let schema = if include_schema { schema } else { Arc::new(arrow::datatypes::Schema::empty()) };
                        builder.append(CATALOG, SCHEMA, name, "TABLE", &schema).map_err(metadata_error)?;
                    }
                }
                builder.build().map_err(metadata_error)?
            }
            Command::CommandGetTableTypes(c) => {
                let mut builder = c.into_builder();
                builder.append("TABLE");
                builder.build().map_err(metadata_error)?
            }
            Command::CommandGetSqlInfo(c) => c.into_builder(sql_info()).build().map_err(metadata_error)?,
            other => return Err(refused(&other)),
        })
    }

    /// A `DoPut` with a Flight SQL command: ingest, or parameters for a prepared statement.
    /// Returns the `PutResult` metadata.
    pub async fn put(
        &self,
        ctx: &RequestContext,
        cmd: Command,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<Bytes> {
        match cmd {
            Command::CommandStatementIngest(c) => {
                if c.transaction_id.is_some() {
                    return Err(Error::invalid("transactions are not supported"));
                }
                check_scope(c.catalog.as_deref(), c.schema.as_deref())?;
                let (if_exists, create) = ingest_mode(&c)?;
                let table = c.table.to_ascii_lowercase();
                let rows = self
                    .sql
                    .ingest(ctx, &table, IngestMode { if_exists, create, pin: !c.temporary }, schema, batches)
                    .await?;
                Ok(DoPutUpdateResult { record_count: rows }.encode_to_vec().into())
            }
            Command::CommandPreparedStatementQuery(CommandPreparedStatementQuery { prepared_statement_handle }) => {
                let mut prepared = Prepared::parse(&prepared_statement_handle)?;
                let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                prepared.params = match rows {
                    0 => None,
                    1 => {
                        let batch = batches.into_iter().find(|b| b.num_rows() == 1).expect("one row");
                        let mut bytes = Vec::new();
                        let mut writer = StreamWriter::try_new(&mut bytes, &schema)?;
                        writer.write(&batch)?;
                        writer.finish()?;
                        drop(writer);
                        Some(base64::engine::general_purpose::STANDARD.encode(bytes))
                    }
                    n => {
                        return Err(Error::invalid(format!(
                            "{n} parameter rows: bind one row per execution of a query"
                        )));
                    }
                };
                let handle = prepared.encode();
                Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(handle) }.encode_to_vec().into())
            }
            other => Err(refused(&other)),
        }
    }

    /// A Flight SQL action; the answer body.
    pub async fn action(&self, ctx: &RequestContext, kind: &str, body: Bytes) -> Result<Option<Bytes>> {
        match kind {
            CREATE_PREPARED_STATEMENT => {
                let request: ActionCreatePreparedStatementRequest = unpack(&body)?;
                if request.transaction_id.is_some() {
                    return Err(Error::invalid("transactions are not supported"));
                }
                let (dataset, parameters) = self.sql.prepare(ctx, &request.query).await?;
                let result = ActionCreatePreparedStatementResult {
                    prepared_statement_handle: Prepared { query: request.query, params: None }.encode(),
                    dataset_schema: schema_bytes(&dataset)?,
                    parameter_schema: schema_bytes(&parameters)?,
                };
                Ok(Some(result.as_any().encode_to_vec().into()))
            }
            CLOSE_PREPARED_STATEMENT => {
                let request: ActionClosePreparedStatementRequest = unpack(&body)?;
                Prepared::parse(&request.prepared_statement_handle)?;
                Ok(None)
            }
            other => {
                Err(Error::invalid(format!("{other}: transactions, savepoints and cancellation are not supported")))
            }
        }
    }
}

fn metadata_error(e: arrow_flight::error::FlightError) -> Error {
    Error::Internal(format!("building a metadata answer: {e}"))
}

fn unpack<M: ProstMessageExt>(body: &[u8]) -> Result<M> {
    let any = Any::decode(body).map_err(|e| Error::invalid(format!("action body: {e}")))?;
    any.unpack::<M>()
        .map_err(|e| Error::invalid(format!("action body: {e}")))?
        .ok_or_else(|| Error::invalid(format!("action body is not a {}", M::type_url())))
}

/// A `FlightInfo` for a metadata answer.
pub fn metadata_info(descriptor: FlightDescriptor, schema: &SchemaRef, ticket: Ticket) -> Result<FlightInfo> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)?
        .with_descriptor(descriptor)
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_ordered(true))
}
