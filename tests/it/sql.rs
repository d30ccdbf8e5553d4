//! Flight SQL with arrow-flight's client, on both stores: a query over uploaded tables equals
//! Polars, metadata lists them, ingest creates and appends, and DDL, DML and file access are
//! refused without touching the data.

use arrow::util::pretty::pretty_format_batches;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetTables, CommandStatementIngest, TableDefinitionOptions, TableExistsOption, TableNotExistOption,
};
use futures::TryStreamExt;
use polars::prelude::*;
use tonic::Code;
use tonic::transport::Channel;

use crate::fixture::*;

async fn sql_client(server: &TestServer) -> FlightSqlServiceClient<Channel> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap();
    FlightSqlServiceClient::new(channel)
}

async fn run(client: &mut FlightSqlServiceClient<Channel>, query: &str) -> Result<DataFrame, tonic::Status> {
    let info = client.execute(query.to_string(), None).await.map_err(to_status)?;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<_> = client.do_get(ticket).await.map_err(to_status)?.try_collect().await.map_err(to_status)?;
    let schema =
        batches.first().map(|b| b.schema()).unwrap_or_else(|| std::sync::Arc::new(info.try_decode_schema().unwrap()));
    Ok(polarway::convert::batches_to_frame(&schema, &batches).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_named_datasets() {
    for mode in MODES {
        let server = TestServer::start(mode).await;
        let mut flight = server.client().await;
        let trades = df!("sym" => ["a", "b", "a", "c"], "qty" => [1i64, 2, 3, 4]).unwrap();
        let names = df!("sym" => ["a", "b", "c"], "name" => ["Alpha", "Beta", "Gamma"]).unwrap();
        flight.upload("trades", &trades).await;
        flight.upload("names", &names).await;
        let mut sql = sql_client(&server).await;

        let got = run(&mut sql, "SELECT n.name, SUM(t.qty) AS total FROM trades t JOIN names n ON t.sym = n.sym GROUP BY n.name ORDER BY n.name").await.unwrap();
        let want = df!("name" => ["Alpha", "Beta", "Gamma"], "total" => [4i64, 2, 4]).unwrap();
        assert_same(&got, &want, &format!("{mode:?} join"));

        // Metadata lists both tables with schemas.
        let info = sql.get_tables(CommandGetTables { include_schema: true, ..Default::default() }).await.unwrap();
        let batches: Vec<_> =
            sql.do_get(info.endpoint[0].ticket.clone().unwrap()).await.unwrap().try_collect().await.unwrap();
        let text = pretty_format_batches(&batches).unwrap().to_string();
        assert!(text.contains("trades") && text.contains("names"), "{text}");

        // Ingest creates, then appends.
        let (schema, batches) = polarway::convert::frame_to_batches(&df!("k" => [1i64, 2]).unwrap()).unwrap();
        let options = |not_exist: TableNotExistOption, exists: TableExistsOption| CommandStatementIngest {
            table_definition_options: Some(TableDefinitionOptions {
                if_not_exist: not_exist as i32,
                if_exists: exists as i32,
            }),
            table: "ingested".into(),
            ..Default::default()
        };
        let _ = schema;
        let stream = |batches: Vec<arrow::array::RecordBatch>| futures::stream::iter(batches.into_iter().map(Ok));
        let n = sql
            .execute_ingest(options(TableNotExistOption::Create, TableExistsOption::Fail), stream(batches.clone()))
            .await
            .unwrap();
        assert_eq!(n, 2);
        let again = sql
            .execute_ingest(options(TableNotExistOption::Create, TableExistsOption::Fail), stream(batches.clone()))
            .await;
        assert!(again.is_err(), "{mode:?}: a second create fails");
        sql.execute_ingest(options(TableNotExistOption::Fail, TableExistsOption::Append), stream(batches))
            .await
            .unwrap();
        let count = run(&mut sql, "SELECT COUNT(*) AS n FROM ingested").await.unwrap();
        assert_eq!(count.column("n").unwrap().i64().unwrap().get(0), Some(4));

        // Refusals, with the data untouched.
        for bad in [
            "CREATE EXTERNAL TABLE x (a INT) STORED AS CSV LOCATION '/etc/passwd'",
            "COPY trades TO '/tmp/polarway-it-copy.csv'",
            "INSERT INTO trades VALUES ('z', 9)",
            "DROP TABLE trades",
            "SELECT * FROM '/etc/passwd'",
            "SET datafusion.execution.batch_size = 1",
        ] {
            let err = run(&mut sql, bad).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{mode:?} {bad}: {err}");
            if !bad.starts_with("SELECT") {
                assert!(err.message().contains("only queries run here"), "refused by its kind: {err}");
            }
        }
        let unknown = run(&mut sql, "SELECT * FROM nowhere").await.unwrap_err();
        assert_eq!(unknown.code(), Code::InvalidArgument, "{unknown}");
        assert!(unknown.message().contains("nowhere"), "{unknown}");
        let still = run(&mut sql, "SELECT COUNT(*) AS n FROM trades").await.unwrap();
        assert_eq!(still.column("n").unwrap().i64().unwrap().get(0), Some(4));
        server.stop().await;
    }
}

/// A cross join streams past DataFusion's memory pool: the result is stopped at the row limit
/// while it arrives, and the worker keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_join_is_stopped_at_the_result_limit() {
    let server = TestServer::start_with(Mode::Memory, |c| c.limits.max_result_rows = 1_000_000).await;
    let mut flight = server.client().await;
    let wide = df!("k" => (0..5_000i64).collect::<Vec<_>>()).unwrap();
    flight.upload("wide", &wide).await;
    let mut sql = sql_client(&server).await;
    let started = std::time::Instant::now();
    let err = run(&mut sql, "SELECT a.k, b.k AS k2 FROM wide a CROSS JOIN wide b").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("POLARWAY_MAX_RESULT_ROWS"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "stopped early: {:?}", started.elapsed());
    let got = run(&mut sql, "SELECT count(*) AS n FROM wide").await.unwrap();
    assert_eq!(
        got.column("n").unwrap().u64().map(|c| c.get(0)).ok().flatten().or_else(|| got
            .column("n")
            .unwrap()
            .i64()
            .ok()
            .and_then(|c| c.get(0))
            .map(|v| v as u64)),
        Some(5_000)
    );
    server.stop().await;
}

/// An object store whose whole-object reads of result files fail as an unreachable S3 would,
/// once armed: the reads DataFusion makes of a table, not the ranged reads Polarway makes itself.
#[derive(Debug, Default)]
struct Unreachable {
    inner: object_store::memory::InMemory,
    armed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Unreachable({})", self.inner)
    }
}

#[tonic::async_trait]
impl object_store::ObjectStore for Unreachable {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        let whole_file = !options.head && options.range.is_none() && location.as_ref().ends_with(".arrow");
        if whole_file && self.armed.load(std::sync::atomic::Ordering::SeqCst) {
            let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
            return Err(object_store::Error::Generic { store: "S3", source: Box::new(refused) });
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_unreachable_from_a_query_is_unavailable_and_loses_nothing() {
    let backend = std::sync::Arc::new(Unreachable::default());
    let store = polarway::store::ObjectStateStore::new(
        backend.clone(),
        object_store::path::Path::default(),
        None,
        tokio::runtime::Handle::current(),
    );
    let config = polarway::config::Config::with_store(polarway::config::StoreConfig::Url {
        url: "s3://polarway/results".into(),
        options: Default::default(),
    });
    let engine =
        std::sync::Arc::new(polarway::engine::Engine::try_with_store(&config, std::sync::Arc::new(store)).unwrap());
    let server = TestServer::start_on(engine, config).await;
    let mut flight = server.client().await;
    let trades = df!("sym" => ["a", "b"], "qty" => [1i64, 2]).unwrap();
    flight.upload("trades", &trades).await;
    let mut sql = sql_client(&server).await;
    assert_same(&run(&mut sql, "SELECT * FROM trades ORDER BY sym").await.unwrap(), &trades, "reachable");

    backend.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = run(&mut sql, "SELECT sym, qty + 1 AS q FROM trades").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    backend.armed.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_same(&run(&mut sql, "SELECT * FROM trades ORDER BY sym").await.unwrap(), &trades, "the data is intact");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_io_threads_answer_while_a_heavy_query_runs() {
    use arrow_flight::flight_service_client::FlightServiceClient;
    use std::time::{Duration, Instant};
    // The worker on this test's runtime: two I/O threads, as on a 2-core machine.
    let server = TestServer::start(Mode::Memory).await;
    let mut flight = server.client().await;
    let n = 4_000_000i64;
    flight.upload("t", &df!("x" => (0..n).collect::<Vec<_>>()).unwrap()).await;
    let mut sql = sql_client(&server).await;
    let query = tokio::spawn(async move {
        let started = Instant::now();
        let got = run(
            &mut sql,
            "SELECT CAST(max(r) AS BIGINT) AS rows FROM (SELECT row_number() OVER (PARTITION BY x % 2 ORDER BY (x * 7919) % 1000003) AS r FROM t)",
        )
        .await;
        (got, started.elapsed())
    });
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap();
    let mut raw = FlightServiceClient::new(channel);
    let mut waits = Vec::new();
    while !query.is_finished() {
        let asked = Instant::now();
        let actions: Vec<_> =
            raw.list_actions(arrow_flight::Empty {}).await.unwrap().into_inner().try_collect().await.unwrap();
        waits.push(asked.elapsed());
        assert!(!actions.is_empty());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (got, took) = query.await.unwrap();
    assert_eq!(got.unwrap().column("rows").unwrap().i64().unwrap().get(0), Some(n / 2));
    assert!(waits.len() >= 10, "the query took {took:?}, too short to watch");
    waits.sort();
    let (median, slowest) = (waits[waits.len() / 2], *waits.last().unwrap());
    eprintln!("ListActions during a {took:?} query: median {median:?}, slowest {slowest:?}, {} calls", waits.len());
    // Polled on these two threads, the query's two sorting partitions held both for as long as a
    // sort takes (the slowest call waited 128 ms); on the computation runtime, none waits.
    assert!(slowest < Duration::from_millis(50), "ListActions waited {slowest:?} while the query ran: {waits:?}");
}
