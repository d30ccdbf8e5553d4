//! The worker's error type. It knows nothing of gRPC: the one mapping to status codes is the
//! Flight layer's ([`crate::flight::status`]).
//!
//! Variants say what the caller can do about the failure. Polars errors are classified by their
//! root cause (a `Context` wrapper is looked through), so a user's unknown column is
//! INVALID_ARGUMENT rather than a server fault.

use polars::prelude::PolarsError;

/// Longest message sent to a client.
pub const MAX_MESSAGE_CHARS: usize = 1_000;

/// Result alias used across the worker.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The handle does not exist, has expired, or was dropped.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed: bad JSON, unknown operation or column, bad expression, wrong type.
    #[error("{0}")]
    InvalidArgument(String),
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// The request touches something it may not, such as a path outside the data root.
    #[error("{0}")]
    PermissionDenied(String),
    /// A resource ran out that no setting names (memory, an IPC body's declared size); ask for less.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A configured limit was reached; ask for less, or raise the setting it names.
    #[error("{detail} ({})", limit.option())]
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// By how much.
        detail: String,
    },
    /// The worker is busy right now; the same request will succeed later (RESOURCE_EXHAUSTED
    /// with a `retry-after` hint in seconds).
    #[error("{0}")]
    Overloaded(String),
    /// The operation ran longer than the request timeout.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The worker cannot serve this now (shutting down, a record that vanished mid-read).
    #[error("{0}")]
    Unavailable(String),
    /// A state store call failed: the network, the backend, the disk. UNAVAILABLE, which a retry
    /// can get past; the store's own error is kept as the source, for the log.
    #[error("{message}")]
    Store {
        /// What could not be done, as the client is told.
        message: String,
        /// The store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The state store has no space left (a full disk or quota): RESOURCE_EXHAUSTED, for the
    /// operator rather than the request; space returns as expired results are swept.
    #[error("{0}")]
    StoreFull(String),
    /// A bug in the worker.
    #[error("{0}")]
    Internal(String),
    /// The client cancelled the work (a cancelled batch job).
    #[error("{0}")]
    Cancelled(String),
    /// What the client asked to create exists already (an ingest into an existing table).
    #[error("{0}")]
    AlreadyExists(String),
    /// A protocol feature this service does not offer.
    #[error("{0}")]
    Unimplemented(String),
    /// Stored data failed its checksum and could not be recomputed.
    #[error("{0}")]
    DataLoss(String),
}

impl Error {
    /// A shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// The same error with its message passed through `f` (a data root's location taken out).
    pub fn map_message(self, f: impl Fn(String) -> String) -> Self {
        match self {
            Error::NotFound(m) => Error::NotFound(f(m)),
            Error::InvalidArgument(m) => Error::InvalidArgument(f(m)),
            Error::Unauthenticated(m) => Error::Unauthenticated(f(m)),
            Error::PermissionDenied(m) => Error::PermissionDenied(f(m)),
            Error::ResourceExhausted(m) => Error::ResourceExhausted(f(m)),
            Error::LimitExceeded { limit, detail } => Error::LimitExceeded { limit, detail: f(detail) },
            Error::Overloaded(m) => Error::Overloaded(f(m)),
            Error::DeadlineExceeded(m) => Error::DeadlineExceeded(f(m)),
            Error::Unavailable(m) => Error::Unavailable(f(m)),
            Error::Store { message, source } => Error::Store { message: f(message), source },
            Error::StoreFull(m) => Error::StoreFull(f(m)),
            Error::Internal(m) => Error::Internal(f(m)),
            Error::Cancelled(m) => Error::Cancelled(f(m)),
            Error::AlreadyExists(m) => Error::AlreadyExists(f(m)),
            Error::Unimplemented(m) => Error::Unimplemented(f(m)),
            Error::DataLoss(m) => Error::DataLoss(f(m)),
        }
    }

    /// A stable name for the variant, as a failed batch job's record keeps it.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::InvalidArgument(_) => "invalid_argument",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::PermissionDenied(_) => "permission_denied",
            Error::ResourceExhausted(_) | Error::LimitExceeded { .. } => "resource_exhausted",
            Error::Overloaded(_) => "overloaded",
            Error::DeadlineExceeded(_) => "deadline_exceeded",
            Error::Unavailable(_) | Error::Store { .. } => "unavailable",
            Error::StoreFull(_) => "store_full",
            Error::Internal(_) => "internal",
            Error::Cancelled(_) => "cancelled",
            Error::AlreadyExists(_) => "already_exists",
            Error::Unimplemented(_) => "unimplemented",
            Error::DataLoss(_) => "data_loss",
        }
    }

    /// The error a stored [`Error::kind`] names (a failed batch job's, read back); an unknown
    /// name is [`Error::Internal`].
    pub fn from_kind(kind: &str, msg: String) -> Self {
        match kind {
            "not_found" => Error::NotFound(msg),
            "invalid_argument" => Error::InvalidArgument(msg),
            "unauthenticated" => Error::Unauthenticated(msg),
            "permission_denied" => Error::PermissionDenied(msg),
            "resource_exhausted" => Error::ResourceExhausted(msg),
            "overloaded" => Error::Overloaded(msg),
            "deadline_exceeded" => Error::DeadlineExceeded(msg),
            "unavailable" => Error::Unavailable(msg),
            "store_full" => Error::StoreFull(msg),
            "cancelled" => Error::Cancelled(msg),
            "already_exists" => Error::AlreadyExists(msg),
            "unimplemented" => Error::Unimplemented(msg),
            "data_loss" => Error::DataLoss(msg),
            _ => Error::Internal(msg),
        }
    }

    /// A failed store call: `message` for the client, `source` for the log.
    pub fn store(message: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Store { message: message.into(), source: source.into() }
    }

    /// The message and every error under it, for the log.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            text.push_str(": ");
            text.push_str(&e.to_string());
            next = e.source();
        }
        text
    }

    /// The message, capped at a length fit to send to a client.
    pub fn capped_message(&self) -> String {
        let mut msg = self.to_string();
        if msg.len() > MAX_MESSAGE_CHARS {
            let mut cut = MAX_MESSAGE_CHARS;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
            msg.push_str("...");
        }
        msg
    }

    /// Whether the client caused it (logged at `info`) or the worker did (logged at `warn`).
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            Error::Internal(_) | Error::Unavailable(_) | Error::Store { .. } | Error::StoreFull(_) | Error::DataLoss(_)
        )
    }
}

impl From<PolarsError> for Error {
    fn from(err: PolarsError) -> Error {
        classify_polars(&err, err.to_string())
    }
}

/// Maps a Polars error by its root cause, keeping the full message (which carries the context).
fn classify_polars(err: &PolarsError, msg: String) -> Error {
    match err {
        PolarsError::Context { error, .. } | PolarsError::ExprContext { error, .. } => classify_polars(error, msg),
        PolarsError::ColumnNotFound(_)
        | PolarsError::ComputeError(_)
        | PolarsError::Duplicate(_)
        | PolarsError::InvalidOperation(_)
        | PolarsError::NoData(_)
        | PolarsError::OutOfBounds(_)
        | PolarsError::SchemaFieldNotFound(_)
        | PolarsError::SchemaMismatch(_)
        | PolarsError::ShapeMismatch(_)
        | PolarsError::SQLInterface(_)
        | PolarsError::SQLSyntax(_)
        | PolarsError::StringCacheMismatch(_)
        | PolarsError::StructFieldNotFound(_)
        | PolarsError::AssertionError(_) => Error::InvalidArgument(msg),
        PolarsError::IO { error, .. } => match error.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound("file not found".into()),
            std::io::ErrorKind::PermissionDenied => Error::PermissionDenied("file not accessible".into()),
            _ => Error::InvalidArgument(format!("cannot read or write the file: {}", error.kind())),
        },
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(err: arrow::error::ArrowError) -> Error {
        use arrow::error::ArrowError as A;
        match err {
            A::ExternalError(e) => Error::Internal(e.to_string()),
            A::IoError(msg, e) if out_of_space(&e) => Error::StoreFull(format!("state store is full: {msg}")),
            A::IoError(msg, e) => Error::store(format!("state store I/O: {msg}"), e),
            A::NotYetImplemented(m) => Error::InvalidArgument(format!("unsupported: {m}")),
            A::MemoryError(m) => Error::ResourceExhausted(m),
            A::CastError(m)
            | A::SchemaError(m)
            | A::ComputeError(m)
            | A::InvalidArgumentError(m)
            | A::ParseError(m)
            | A::IpcError(m)
            | A::CDataInterface(m)
            | A::JsonError(m)
            | A::CsvError(m)
            | A::ParquetError(m)
            | A::AvroError(m) => Error::InvalidArgument(m),
            A::DivideByZero => Error::InvalidArgument("divide by zero".into()),
            A::ArithmeticOverflow(m) => Error::InvalidArgument(m),
            A::DictionaryKeyOverflowError => Error::InvalidArgument("dictionary key overflow".into()),
            A::RunEndIndexOverflowError => Error::InvalidArgument("run end index overflow".into()),
            A::OffsetOverflowError(n) => Error::InvalidArgument(format!("offset overflow: {n}")),
        }
    }
}

/// Whether `err`, or an error it wraps, is a device or quota out of space.
pub fn out_of_space(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) {
                return true;
            }
            // `io::Error::source` skips the error it wraps; look at that one too.
            if let Some(inner) = io.get_ref()
                && out_of_space(inner)
            {
                return true;
            }
        }
        next = e.source();
    }
    false
}

/// A configured limit: the setting that raises it and the label its refusals are counted under
/// (`limits` makes the error for it, and counts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Bytes one upload may send.
    PutBytes,
    /// Bytes of one gRPC message.
    MessageBytes,
    /// Bytes of the one request message of a unary call (a ticket, an action body).
    RequestBytes,
    /// Rows of one result.
    ResultRows,
    /// Columns of one result.
    ResultColumns,
    /// Bytes of one result.
    ResultBytes,
    /// Rows one join may produce.
    JoinRows,
    /// Memory of one SQL query.
    SqlMemoryBytes,
    /// How deep an expression or query may nest (fixed: [`crate::ops::sqltext::MAX_DEPTH`]).
    ExpressionDepth,
    /// Bytes a tenant's live results may hold (tokens file, else POLARWAY_TENANT_MAX_BYTES).
    TenantBytes,
    /// Live results a tenant may hold (tokens file, else POLARWAY_TENANT_MAX_HANDLES).
    TenantHandles,
    /// Files one scan may list.
    ScanFiles,
    /// Bytes of files one scan may read.
    ScanBytes,
}

impl Limit {
    /// The setting that raises the limit.
    pub fn option(self) -> &'static str {
        match self {
            Limit::PutBytes => "POLARWAY_MAX_PUT_BYTES",
            Limit::MessageBytes => "POLARWAY_MAX_MESSAGE_BYTES",
            Limit::RequestBytes => "POLARWAY_MAX_REQUEST_BYTES",
            Limit::ResultRows => "POLARWAY_MAX_RESULT_ROWS",
            Limit::ResultColumns => "POLARWAY_MAX_RESULT_COLUMNS",
            Limit::ResultBytes => "POLARWAY_MAX_RESULT_BYTES",
            Limit::JoinRows => "POLARWAY_MAX_JOIN_ROWS",
            Limit::SqlMemoryBytes => "POLARWAY_MAX_SQL_MEMORY_BYTES",
            Limit::ExpressionDepth => "a fixed limit",
            Limit::TenantBytes => "POLARWAY_TENANT_MAX_BYTES",
            Limit::TenantHandles => "POLARWAY_TENANT_MAX_HANDLES",
            Limit::ScanFiles => "POLARWAY_MAX_SCAN_FILES",
            Limit::ScanBytes => "POLARWAY_MAX_SCAN_BYTES",
        }
    }

    /// The `limit` label of `polarway_limit_rejections_total`.
    pub fn label(self) -> &'static str {
        match self {
            Limit::PutBytes => "put_bytes",
            Limit::MessageBytes => "message_bytes",
            Limit::RequestBytes => "request_bytes",
            Limit::ResultRows => "result_rows",
            Limit::ResultColumns => "result_columns",
            Limit::ResultBytes => "result_bytes",
            Limit::JoinRows => "join_rows",
            Limit::SqlMemoryBytes => "sql_memory",
            Limit::ExpressionDepth => "expression_depth",
            Limit::TenantBytes => "tenant_bytes",
            Limit::TenantHandles => "tenant_handles",
            Limit::ScanFiles => "scan_files",
            Limit::ScanBytes => "scan_bytes",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    #[test]
    fn column_not_found_is_invalid_argument_through_context() {
        let df = df!("a" => [1, 2]).unwrap();
        let err = df.lazy().select([col("nope")]).collect().unwrap_err();
        let err = Error::from(err);
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().contains("nope"));
    }

    #[test]
    fn a_full_disk_is_found_through_wrappers() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert!(out_of_space(&full));
        let wrapped = std::io::Error::other(std::io::Error::from(std::io::ErrorKind::QuotaExceeded));
        assert!(out_of_space(&wrapped));
        assert!(!out_of_space(&std::io::Error::from(std::io::ErrorKind::PermissionDenied)));
        let arrow = arrow::error::ArrowError::IoError("write".into(), std::io::Error::other(full));
        let err = Error::from(arrow);
        assert!(matches!(err, Error::StoreFull(_)), "{err:?}");
        assert!(!err.is_client_error(), "a full store is the operator's to fix, logged as a warning");
    }

    #[test]
    fn long_messages_are_capped() {
        assert!(Error::invalid("x".repeat(5_000)).capped_message().len() <= MAX_MESSAGE_CHARS + 3);
    }

    #[test]
    fn kinds_read_back_as_the_same_variant() {
        let all = [
            Error::NotFound(String::new()),
            Error::InvalidArgument(String::new()),
            Error::Unauthenticated(String::new()),
            Error::PermissionDenied(String::new()),
            Error::ResourceExhausted(String::new()),
            Error::Overloaded(String::new()),
            Error::DeadlineExceeded(String::new()),
            Error::Unavailable(String::new()),
            Error::StoreFull(String::new()),
            Error::Internal(String::new()),
            Error::Cancelled(String::new()),
            Error::AlreadyExists(String::new()),
            Error::Unimplemented(String::new()),
            Error::DataLoss(String::new()),
        ];
        for err in all {
            assert_eq!(Error::from_kind(err.kind(), String::new()).kind(), err.kind());
        }
    }
}
