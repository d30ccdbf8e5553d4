//! Batch jobs: queued by PollFlightInfo, claimed by idle workers with leases, polled anywhere.

use std::collections::HashSet;
use std::time::Duration;

use arrow_flight::{Action, CancelFlightInfoRequest, FlightDescriptor};
use futures::{StreamExt, TryStreamExt};
use polars::prelude::*;
use prost::Message;
use serde_json::json;
use tonic::Code;

use crate::fixture::*;

fn frame() -> DataFrame {
    df!("i" => (0..1000i64).collect::<Vec<_>>()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_answers_at_once_and_completes_in_the_background() {
    for mode in MODES {
        let server = TestServer::start_with(mode, |c| c.job_poll = Duration::from_millis(20)).await;
        let mut c = server.client().await;
        let h = handle_of(&c.upload("t", &frame()).await);
        let cmd = json!({"op": "filter", "input": h, "predicate": "i >= 990"}).to_string();
        let first = c.inner.poll_flight_info(FlightDescriptor::new_cmd(cmd.clone())).await.unwrap();
        let job = first.flight_descriptor.clone().expect("queued, not finished within the call");
        assert!(first.info.unwrap().endpoint.is_empty());
        let done = poll_until_done(&mut c, job).await;
        let info = done.info.unwrap();
        assert_eq!(info.total_records, 10, "{mode:?}");
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let rows: usize =
            c.inner.do_get(ticket).await.unwrap().map(|b| b.unwrap().num_rows()).collect::<Vec<_>>().await.iter().sum();
        assert_eq!(rows, 10);
        // The same command names the same, finished job.
        let again = c.inner.poll_flight_info(FlightDescriptor::new_cmd(cmd)).await.unwrap();
        assert!(again.flight_descriptor.is_none());
        // A command that cannot run is refused at once.
        let err = c.inner.poll_flight_info(FlightDescriptor::new_cmd(r#"{"op": "filter"}"#)).await.unwrap_err();
        assert_eq!(to_status(err).code(), Code::InvalidArgument);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_reports_its_status_and_a_cancelled_one_cancelled() {
    let server = TestServer::start_with(Mode::Memory, |c| c.job_poll = Duration::from_millis(20)).await;
    let mut c = server.client().await;
    let h = handle_of(&c.upload("t", &frame()).await);
    let bad = json!({"op": "filter", "input": h, "predicate": "nope > 1"}).to_string();
    let first = c.inner.poll_flight_info(FlightDescriptor::new_cmd(bad)).await.unwrap();
    let job = first.flight_descriptor.unwrap();
    let status = loop {
        match c.inner.poll_flight_info(job.clone()).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => break to_status(e),
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("nope"));
    server.stop().await;

    // This worker runs no jobs: the job stays pending until cancelled.
    let server = TestServer::start_with(Mode::Memory, |c| c.job_slots = Some(0)).await;
    let mut c = server.client().await;
    let h = handle_of(&c.upload("t", &frame()).await);
    let cmd = json!({"op": "head", "input": h, "n": 1}).to_string();
    let first = c.inner.poll_flight_info(FlightDescriptor::new_cmd(cmd)).await.unwrap();
    let req = CancelFlightInfoRequest { info: first.info.clone() };
    let _: Vec<_> = c
        .inner
        .do_action(Action::new("CancelFlightInfo", req.encode_to_vec()))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let err = c.inner.poll_flight_info(first.flight_descriptor.unwrap()).await.unwrap_err();
    assert_eq!(to_status(err).code(), Code::Cancelled);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_queued_on_an_idle_worker_starts_without_waiting_for_its_poll() {
    // An hour between polls: only the wake-up of the submit can start the job in time.
    let server = TestServer::start_with(Mode::External, |c| c.job_poll = Duration::from_secs(3600)).await;
    let mut c = server.client().await;
    let h = handle_of(&c.upload("t", &frame()).await);
    let cmd = json!({"op": "head", "input": h, "n": 1}).to_string();
    let started = std::time::Instant::now();
    let done = poll_until_done(&mut c, FlightDescriptor::new_cmd(cmd)).await;
    assert_eq!(done.info.unwrap().total_records, 1);
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_race_over_200_jobs_and_each_runs_once() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_path_buf();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let dir = dir.clone();
        workers.push(
            TestServer::start_with(Mode::External, move |c| {
                c.store = polarway::config::StoreConfig::Directory(dir);
                c.job_poll = Duration::from_millis(20);
            })
            .await,
        );
    }
    let mut clients = Vec::new();
    for w in &workers {
        clients.push(w.client().await);
    }
    let h = handle_of(&clients[0].upload("t", &frame()).await);
    let mut jobs = Vec::new();
    for i in 0..200 {
        let cmd = json!({"op": "filter", "input": h, "predicate": format!("i < {i}")}).to_string();
        let poll = clients[i % 4].inner.poll_flight_info(FlightDescriptor::new_cmd(cmd)).await.unwrap();
        jobs.push(poll.flight_descriptor.unwrap_or_else(|| panic!("job {i} finished within the call")));
    }
    let mut results = HashSet::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let done = poll_until_done(&mut clients[(i + 1) % 4], job).await;
        let info = done.info.unwrap();
        assert_eq!(info.total_records, i as i64, "job {i}");
        results.insert(info.endpoint[0].ticket.clone().unwrap().ticket);
    }
    assert_eq!(results.len(), 200, "one result per job");
    let runs: Vec<u64> = workers.iter().map(|w| w.engine.executions()).collect();
    assert_eq!(runs.iter().sum::<u64>(), 200, "each job ran once: {runs:?}");
    assert!(runs.iter().filter(|&&n| n > 0).count() >= 2, "the work was shared: {runs:?}");
    let leftovers = std::fs::read_dir(dir.join("queue")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "the queue is empty");
    for w in workers {
        w.stop().await;
    }
}
