//! Handler failures on the embedded broker: transient failures are retried in place, timeouts
//! are transient, panics and permanent failures are dead-lettered, and a fact the broker can
//! never take fails permanently.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll::config::Config;
use atoll::{event_service, handlers, App, Context, Event, HandlerError, HandlerResult};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "flaky", partitions = 1)]
#[derive(Default, Clone)]
struct Flaky {
    attempts: Arc<Mutex<HashMap<String, u32>>>,
    handled: Arc<Mutex<Vec<String>>>,
}

#[derive(Debug, Default, Serialize, Deserialize, Event)]
#[event(command, name = "task", version = 1, service = Flaky)]
struct Task {
    #[event(key)]
    id: String,
    /// Fail transiently this many times first.
    fail_times: u32,
    /// Sleep this long on the first attempt.
    first_sleep_ms: u64,
    panic: bool,
    permanent: bool,
    /// Emit a fact of this many bytes.
    emit_bytes: usize,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(fact, name = "task_done", version = 1, service = Flaky)]
struct TaskDone {
    blob: String,
}

#[handlers]
impl Flaky {
    #[listener(name = "tasks")]
    async fn task(&self, ctx: Context<Self>, task: Task) -> HandlerResult {
        let attempt = {
            let mut a = self.attempts.lock().unwrap();
            let n = a.entry(task.id.clone()).or_default();
            *n += 1;
            *n
        };
        if attempt == 1 && task.first_sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(task.first_sleep_ms)).await;
        }
        if task.panic {
            panic!("task {} exploded", task.id);
        }
        if task.permanent {
            return Err(HandlerError::permanent(format!(
                "task {} is invalid",
                task.id
            )));
        }
        if attempt <= task.fail_times {
            return Err(HandlerError::transient(format!(
                "attempt {attempt} of {} failed",
                task.id
            )));
        }
        if task.emit_bytes > 0 {
            ctx.emit(TaskDone {
                blob: "x".repeat(task.emit_bytes),
            })
            .await?;
        }
        self.handled.lock().unwrap().push(task.id);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_or_dead_lettered_by_kind() {
    let mut config = Config::default();
    config.listener.handler_timeout_ms = 300;
    // Facts above 2 kB can never be produced: a permanent failure.
    config
        .kafka
        .properties
        .insert("message.max.bytes".into(), "2000".into());
    let svc = Flaky::default();
    let running = App::new(config).service(svc.clone()).start().await.unwrap();
    let client = running.client("test");
    let tasks = [
        Task {
            id: "flaky".into(),
            fail_times: 2,
            ..Default::default()
        },
        Task {
            id: "slow".into(),
            first_sleep_ms: 1_000,
            ..Default::default()
        },
        Task {
            id: "boom".into(),
            panic: true,
            ..Default::default()
        },
        Task {
            id: "invalid".into(),
            permanent: true,
            ..Default::default()
        },
        Task {
            id: "huge".into(),
            emit_bytes: 10_000,
            ..Default::default()
        },
        Task {
            id: "last".into(),
            emit_bytes: 10,
            ..Default::default()
        },
    ];
    for t in &tasks {
        client.send(t).await.unwrap();
    }
    let bootstrap = running.bootstrap_servers().to_owned();
    let dlq = tokio::task::spawn_blocking(move || {
        common::read_topic(&bootstrap, "acme.test.flaky.private.dlq", 1, 3)
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !svc.handled.lock().unwrap().contains(&"last".to_owned()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown().await;

    assert_eq!(
        *svc.handled.lock().unwrap(),
        ["flaky", "slow", "last"],
        "handled once each, in order"
    );
    let attempts = svc.attempts.lock().unwrap().clone();
    assert_eq!(attempts["flaky"], 3, "two transient failures, then success");
    assert_eq!(attempts["slow"], 2, "a timeout is transient: retried once");
    assert_eq!(attempts["boom"], 1, "a panic is not retried");
    assert_eq!(attempts["invalid"], 1, "a permanent failure is not retried");
    assert_eq!(
        attempts["huge"], 1,
        "a fact that can never be produced is permanent"
    );

    let by_key: HashMap<String, &OwnedMessage> = dlq
        .iter()
        .map(|m| (String::from_utf8(m.key().unwrap().to_vec()).unwrap(), m))
        .collect();
    assert_eq!(by_key.len(), 3, "{:?}", by_key.keys());
    assert_eq!(hdr(by_key["boom"], "atoll_dlq_error_kind"), "panic");
    assert!(hdr(by_key["boom"], "atoll_dlq_error").contains("task boom exploded"));
    assert_eq!(hdr(by_key["invalid"], "atoll_dlq_error_kind"), "handler");
    assert_eq!(
        hdr(by_key["invalid"], "atoll_dlq_error"),
        "task invalid is invalid"
    );
    assert_eq!(hdr(by_key["huge"], "atoll_dlq_error_kind"), "handler");
    assert!(hdr(by_key["huge"], "atoll_dlq_error").contains("acme.test.flaky.events"));
    for m in by_key.values() {
        assert_eq!(hdr(m, "atoll_dlq_attempts"), "1");
    }
}

fn hdr(m: &OwnedMessage, key: &str) -> String {
    common::header(m, key).unwrap().to_owned()
}
