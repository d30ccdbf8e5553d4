//! Every Flight method answers: ListActions, ListFlights, GetFlightInfo, GetSchema,
//! PollFlightInfo, DoExchange, Handshake and the standard actions.

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, Criteria, FlightDescriptor, FlightEndpoint,
    RenewFlightEndpointRequest,
};
use futures::{StreamExt, TryStreamExt};
use polars::prelude::*;
use prost::Message;
use serde_json::json;
use tonic::Code;

use crate::fixture::*;

fn frame() -> DataFrame {
    df!("sym" => ["a", "b", "a"], "qty" => [1i64, 2, 3]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_actions_names_every_operation() {
    let server = TestServer::start(Mode::Memory).await;
    let mut c = server.client().await;
    let actions: Vec<_> = c.inner.list_actions().await.unwrap().try_collect().await.unwrap();
    let names: Vec<&str> = actions.iter().map(|a| a.r#type.as_str()).collect();
    for op in [
        "filter",
        "select",
        "with_columns",
        "sort",
        "group_by",
        "join",
        "head",
        "tail",
        "slice",
        "pipeline",
        "read_csv",
        "read_parquet",
        "read_ipc",
        "write_csv",
        "write_parquet",
        "drop",
        "rename",
        "cast",
        "unique",
        "limit",
        "drop_nulls",
        "fill_null",
        "fill_nan",
        "interpolate",
        "concat",
        "pivot",
        "unpivot",
        "describe",
        "asof_join",
        "resample",
        "rolling",
        "shift",
        "diff",
        "pct_change",
        "cum_sum",
        "schema",
        "shape",
        "explain",
        "drop_handle",
        "pin",
        "unpin",
        "RenewFlightEndpoint",
        "CancelFlightInfo",
    ] {
        assert!(names.contains(&op), "ListActions lacks {op}");
    }
    assert!(actions.iter().all(|a| !a.description.is_empty()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_info_list_schema_and_poll() {
    for mode in MODES {
        let server = TestServer::start(mode).await;
        let mut c = server.client().await;
        let up = c.upload("trades", &frame()).await;
        let h = handle_of(&up);

        let info = c.inner.get_flight_info(FlightDescriptor::new_path(vec![h.clone()])).await.unwrap();
        assert_eq!(info.total_records, 3);
        assert!(info.total_bytes > 0);
        assert_eq!(info.endpoint.len(), 1);
        assert_eq!(info.endpoint[0].ticket.as_ref().unwrap().ticket, h.as_bytes());
        assert!(info.endpoint[0].expiration_time.is_some());
        let schema = info.clone().try_decode_schema().unwrap();
        assert_eq!(schema.fields().len(), 2);

        // A command descriptor runs the operation and describes its result.
        let cmd = json!({"op": "filter", "input": h, "predicate": "qty > 1"}).to_string();
        let info = c.inner.get_flight_info(FlightDescriptor::new_cmd(cmd.clone())).await.unwrap();
        assert_eq!(info.total_records, 2);
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let rows: usize =
            c.inner.do_get(ticket).await.unwrap().map(|b| b.unwrap().num_rows()).collect::<Vec<_>>().await.iter().sum();
        assert_eq!(rows, 2);

        let poll = poll_until_done(&mut c, FlightDescriptor::new_cmd(cmd)).await;
        assert_eq!(poll.progress, Some(1.0));
        assert_eq!(poll.info.unwrap().total_records, 2);

        let schema = c.inner.get_schema(FlightDescriptor::new_path(vec![h.clone()])).await.unwrap();
        assert_eq!(schema.field(1).name(), "qty");

        let listed: Vec<_> =
            c.inner.list_flights(Criteria::default().expression).await.unwrap().try_collect().await.unwrap();
        assert_eq!(listed.len(), 2, "{mode:?}: the upload and the filter result");
        let named = listed.iter().find(|i| i.endpoint[0].ticket.as_ref().unwrap().ticket == h.as_bytes()).unwrap();
        let meta: serde_json::Value = serde_json::from_slice(&named.app_metadata).unwrap();
        assert_eq!(meta["name"], "trades");

        let err = c.inner.get_flight_info(FlightDescriptor::new_cmd("{\"op\": 1}")).await.unwrap_err();
        assert_eq!(to_status(err).code(), Code::InvalidArgument);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_actions() {
    let server = TestServer::start(Mode::External).await;
    let mut c = server.client().await;
    let h = handle_of(&c.upload("t", &frame()).await);
    let schema = c.action("schema", json!({"input": h})).await.unwrap();
    assert_eq!(schema["schema"], json!([{"name": "sym", "type": "str"}, {"name": "qty", "type": "i64"}]));
    let shape = c.action("shape", json!({"input": h})).await.unwrap();
    assert_eq!(shape["rows"], 3);
    assert_eq!(shape["columns"], 2);
    let plan =
        c.action("explain", json!({"input": h, "steps": [{"op": "filter", "predicate": "qty > 1"}]})).await.unwrap();
    assert!(plan["plan"].as_str().unwrap().contains("qty"), "{plan}");
    let pinned = c.action("pin", json!({"handle": h})).await.unwrap();
    assert_eq!(pinned["pinned"], true);
    let dropped = c.action("drop_handle", json!({"handle": h})).await.unwrap();
    assert_eq!(dropped["dropped"], true);
    assert_eq!(c.get(&h).await.unwrap_err().code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_renew_and_cancel_actions() {
    for mode in MODES {
        let server = TestServer::start(mode).await;
        let mut c = server.client().await;
        let up = c.upload("t", &frame()).await;
        let h = handle_of(&up);
        let info = c.inner.get_flight_info(FlightDescriptor::new_path(vec![h.clone()])).await.unwrap();
        let before = info.endpoint[0].expiration_time.unwrap();

        let mut wanted = info.endpoint[0].clone();
        let later = before.seconds + 7 * 86_400;
        wanted.expiration_time = Some(prost_types::Timestamp { seconds: later, nanos: 0 });
        let req = RenewFlightEndpointRequest { endpoint: Some(wanted) };
        let body: Vec<_> = c
            .inner
            .do_action(Action::new("RenewFlightEndpoint", req.encode_to_vec()))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let renewed = FlightEndpoint::decode(body[0].clone()).unwrap();
        assert_eq!(renewed.expiration_time.unwrap().seconds, later, "{mode:?}");

        let req = CancelFlightInfoRequest { info: Some(info) };
        let body: Vec<_> = c
            .inner
            .do_action(Action::new("CancelFlightInfo", req.encode_to_vec()))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let result = CancelFlightInfoResult::decode(body[0].clone()).unwrap();
        assert_eq!(result.status, CancelStatus::Cancelled as i32);
        assert_eq!(c.get(&h).await.unwrap_err().code(), Code::NotFound);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_runs_a_pipeline_without_persisting() {
    let server = TestServer::start(Mode::Memory).await;
    let mut c = server.client().await;
    let df = frame();
    let (schema, batches) = polarway::convert::frame_to_batches(&df).unwrap();
    let cmd =
        json!({"steps": [{"op": "filter", "predicate": "qty > 1"}, {"op": "select", "columns": ["qty * 10 AS q"]}]});
    let input = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(cmd.to_string())))
        .build(futures::stream::iter(batches.into_iter().map(Ok)));
    let out = c.inner.do_exchange(input).await.unwrap();
    let batches: Vec<_> = out.try_collect().await.unwrap();
    let schema = batches[0].schema();
    let got = polarway::convert::batches_to_frame(&schema, &batches).unwrap();
    assert_same(&got, &df!("q" => [20i64, 30]).unwrap(), "exchange");
    let listed: Vec<_> = c.inner.list_flights(vec![]).await.unwrap().try_collect().await.unwrap();
    assert!(listed.is_empty(), "nothing is stored");

    let token = c.inner.handshake(vec![1u8, 2, 3]).await.unwrap();
    assert_eq!(token.as_ref(), &[1u8, 2, 3]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_port_answers_grpc_health() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let server = TestServer::start(Mode::Memory).await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    let overall = health.check(HealthCheckRequest { service: String::new() }).await.unwrap();
    assert_eq!(overall.into_inner().status, 1, "SERVING");
    let flight =
        health.check(HealthCheckRequest { service: "arrow.flight.protocol.FlightService".into() }).await.unwrap();
    assert_eq!(flight.into_inner().status, 1, "SERVING");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_comes_back_on_answers_and_errors() {
    use arrow_flight::flight_service_client::FlightServiceClient;
    let server = TestServer::start(Mode::Memory).await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap();
    let mut raw = FlightServiceClient::new(channel);
    let mut request = tonic::Request::new(Action::new("shape", r#"{"input": "nope"}"#));
    request.metadata_mut().insert("x-request-id", "trace-42".parse().unwrap());
    let status = raw.do_action(request).await.unwrap_err();
    assert_eq!(status.metadata().get("x-request-id").unwrap(), "trace-42");
    let mut request = tonic::Request::new(arrow_flight::Criteria::default());
    request.metadata_mut().insert("x-request-id", "trace-43".parse().unwrap());
    let answer = raw.list_flights(request).await.unwrap();
    assert_eq!(answer.metadata().get("x-request-id").unwrap(), "trace-43");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_before_it_is_read_is_counted_and_named_on_both_framings() {
    use arrow_flight::flight_service_client::FlightServiceClient;
    use polarway::config::WireFraming;
    for framing in [WireFraming::Direct, WireFraming::Tonic] {
        let server = TestServer::start_with(Mode::Memory, |c| {
            c.wire_framing = framing;
            c.transport.max_request_bytes = 1024;
        })
        .await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut raw = FlightServiceClient::new(channel);
        let refused =
            || polarway::metrics::metrics().requests.with_label_values(&["DoAction", "RESOURCE_EXHAUSTED"]).get();
        let before = refused();
        let mut request = tonic::Request::new(Action::new("shape", "x".repeat(4096)));
        request.metadata_mut().insert("x-request-id", "trace-44".parse().unwrap());
        let status = raw.do_action(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{framing:?}: {status}");
        assert_eq!(status.metadata().get("x-request-id").unwrap(), "trace-44", "{framing:?}");
        assert!(refused() > before, "{framing:?}: the refusal is counted");
        server.stop().await;
    }
}
