//! DoPut -> DoGet round trips of the types Polars supports, in both store modes, framed by the
//! worker and by tonic's fallback path.

use polars::prelude::*;
use polarway::config::WireFraming;

const FRAMINGS: [WireFraming; 2] = [WireFraming::Direct, WireFraming::Tonic];

use crate::fixture::*;

fn all_types() -> DataFrame {
    let n = 3;
    let dt = |s: Series, t: DataType| s.cast(&t).unwrap().into_column();
    let list = Series::new(
        "list".into(),
        [Some(Series::new("".into(), [1i64, 2])), None, Some(Series::new("".into(), Vec::<i64>::new()))],
    );
    let a = Series::new("a".into(), [Some(1i32), None, Some(3)]);
    let b = Series::new("b".into(), [Some("x"), Some("y"), None]);
    let strukt = StructChunked::from_series("strukt".into(), n, [a, b].iter()).unwrap().into_series();
    let columns = vec![
        Column::new("i8".into(), [Some(-1i8), None, Some(127)]),
        Column::new("i16".into(), [Some(-1i16), None, Some(300)]),
        Column::new("i32".into(), [Some(-1i32), None, Some(70000)]),
        Column::new("i64".into(), [Some(i64::MIN), None, Some(i64::MAX)]),
        Column::new("u8".into(), [Some(0u8), None, Some(255)]),
        Column::new("u16".into(), [Some(0u16), None, Some(65535)]),
        Column::new("u32".into(), [Some(0u32), None, Some(u32::MAX)]),
        Column::new("u64".into(), [Some(0u64), None, Some(u64::MAX)]),
        Column::new("f32".into(), [Some(1.5f32), None, Some(-0.25)]),
        Column::new("f64".into(), [Some(1e300f64), None, Some(-2.5)]),
        Column::new("str".into(), [Some("short"), None, Some("a string longer than twelve bytes")]),
        Column::new("bool".into(), [Some(true), None, Some(false)]),
        Column::new("binary".into(), [Some(&b"\x00\x01"[..]), None, Some(&b"bytes"[..])]),
        dt(Series::new("date".into(), [Some(0i32), None, Some(19_000)]), DataType::Date),
        dt(
            Series::new("datetime_tz".into(), [Some(0i64), None, Some(1_700_000_000_000_000)]),
            DataType::Datetime(TimeUnit::Microseconds, TimeZone::opt_try_new(Some("Europe/Paris")).unwrap()),
        ),
        dt(
            Series::new("datetime_ns".into(), [Some(1i64), None, Some(2)]),
            DataType::Datetime(TimeUnit::Nanoseconds, None),
        ),
        dt(
            Series::new("duration".into(), [Some(1_000i64), None, Some(-5)]),
            DataType::Duration(TimeUnit::Milliseconds),
        ),
        dt(Series::new("time".into(), [Some(0i64), None, Some(3_600_000_000_000)]), DataType::Time),
        dt(Series::new("decimal".into(), [Some(1.25f64), None, Some(-3.5)]), DataType::Decimal(10, 2)),
        list.into_column(),
        strukt.into_column(),
        Column::full_null("nulls".into(), n, &DataType::Null),
    ];
    DataFrame::new(n, columns).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_in_both_stores() {
    for (mode, framing) in MODES.into_iter().flat_map(|m| FRAMINGS.map(|f| (m, f))) {
        let server = TestServer::start_with(mode, |c| c.wire_framing = framing).await;
        let mut client = server.client().await;
        let df = all_types();
        let result = client.upload("types", &df).await;
        assert_eq!(result["num_rows"], 3);
        assert_eq!(result["schema"].as_array().unwrap().len(), df.width());
        let back = client.get(&handle_of(&result)).await.unwrap();
        assert_same(&back, &df, &format!("{mode:?} {framing:?} round trip"));

        let empty = df.head(Some(0));
        let result = client.upload("empty", &empty).await;
        assert_eq!(result["num_rows"], 0);
        let back = client.get(&handle_of(&result)).await.unwrap();
        assert_eq!(back.height(), 0);
        assert_eq!(back.schema(), empty.schema(), "{mode:?}: schema arrives with zero rows");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_connections_and_lets_a_stream_in_flight_finish() {
    use futures::StreamExt;
    let mut server = TestServer::start(Mode::Memory).await;
    let mut client = server.client().await;
    let n = 400_000i64;
    let df =
        df!("i" => (0..n).collect::<Vec<_>>(), "s" => (0..n).map(|i| format!("value number {i}")).collect::<Vec<_>>())
            .unwrap();
    let h = handle_of(&client.upload("big", &df).await);
    let mut stream = client.inner.do_get(arrow_flight::Ticket::new(h)).await.unwrap();
    let mut rows = stream.next().await.unwrap().unwrap().num_rows();
    assert!((rows as i64) < n, "the result comes in more than one message");

    server.begin_stop();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::net::TcpStream::connect(server.addr).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "still accepting connections after shutdown");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    while let Some(batch) = stream.next().await {
        rows += batch.unwrap().num_rows();
    }
    assert_eq!(rows as i64, n, "the stream in flight finished whole");
    drop(stream);
    drop(client);
    tokio::time::timeout(std::time::Duration::from_secs(30), server.stop()).await.expect("the drain ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_stream_in_many_messages() {
    for (mode, framing) in MODES.into_iter().flat_map(|m| FRAMINGS.map(|f| (m, f))) {
        let server = TestServer::start_with(mode, |c| c.wire_framing = framing).await;
        let mut client = server.client().await;
        let n = 400_000i64;
        let df = df!(
            "i" => (0..n).collect::<Vec<_>>(),
            "s" => (0..n).map(|i| format!("value number {i}")).collect::<Vec<_>>(),
        )
        .unwrap();
        let h = handle_of(&client.upload("big", &df).await);
        let mut stream = client.inner.do_get(arrow_flight::Ticket::new(h.clone())).await.unwrap();
        let mut batches = 0;
        let mut rows = 0;
        use futures::StreamExt;
        while let Some(batch) = stream.next().await {
            let batch = batch.unwrap();
            batches += 1;
            rows += batch.num_rows();
        }
        assert_eq!(rows as i64, n);
        assert!(batches > 2, "{mode:?} {framing:?}: {batches} batches; a large result must be split");
        let back = client.get(&h).await.unwrap();
        assert_same(&back, &df, "big");
        server.stop().await;
    }
}
