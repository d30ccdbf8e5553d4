//! Flight SQL from Rust with arrow-flight's client: metadata, a query, a prepared statement.
//!
//!     cargo run --example flight_sql -- http://127.0.0.1:50051
//!
//! Uploads a small table first (plain Flight DoPut with path `["example_points"]`), so it runs
//! against an empty worker.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::pretty::pretty_format_batches;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::CommandGetTables;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::{FlightClient, FlightDescriptor};
use futures::TryStreamExt;
use tonic::transport::Endpoint;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let channel = Endpoint::from_shared(url)?.connect().await?;

    // A table to query: uploaded under a name.
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("score", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from(vec![1, 2, 3, 4])), Arc::new(Float64Array::from(vec![0.5, 2.5, 1.5, 3.5]))],
    )?;
    let upload = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["example_points".into()])))
        .build(futures::stream::iter(vec![Ok(batch)]));
    let _: Vec<_> = FlightClient::new(channel.clone()).do_put(upload).await?.try_collect().await?;

    let mut sql = FlightSqlServiceClient::new(channel);

    // Metadata: the table is listed with its schema.
    let tables = CommandGetTables { include_schema: true, ..Default::default() };
    let info = sql.get_tables(tables).await?;
    let mut listed = Vec::new();
    for endpoint in info.endpoint {
        let batches: Vec<_> = sql.do_get(endpoint.ticket.expect("ticket")).await?.try_collect().await?;
        listed.extend(batches);
    }
    println!("{}", pretty_format_batches(&listed)?);
    assert!(pretty_format_batches(&listed)?.to_string().contains("example_points"));

    // A query.
    let info = sql.execute("SELECT COUNT(*) AS n, SUM(score) AS total FROM example_points".into(), None).await?;
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let batches: Vec<_> = sql.do_get(ticket).await?.try_collect().await?;
    println!("{}", pretty_format_batches(&batches)?);
    let n = batches[0].column(0).as_any().downcast_ref::<Int64Array>().expect("count").value(0);
    assert_eq!(n, 4);

    // A prepared statement with a parameter.
    let mut prepared = sql.prepare("SELECT id FROM example_points WHERE score > $1 ORDER BY id".into(), None).await?;
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("$1", DataType::Float64, false)])),
        vec![Arc::new(Float64Array::from(vec![1.0]))],
    )?;
    prepared.set_parameters(params)?;
    let info = prepared.execute().await?;
    let batches: Vec<_> = sql.do_get(info.endpoint[0].ticket.clone().expect("ticket")).await?.try_collect().await?;
    println!("{}", pretty_format_batches(&batches)?);
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().expect("ids").values().to_vec())
        .collect();
    assert_eq!(ids, vec![2, 3, 4]);
    prepared.close().await?;
    println!("flight_sql: OK");
    Ok(())
}
