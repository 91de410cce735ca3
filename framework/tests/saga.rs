//! Bad input to a saga (on the embedded broker): what is dead-lettered, what is ignored, and
//! that the saga still ends normally afterwards; and a saga listener must retry strictly.

mod common;

use std::time::Duration;

use atoll::config::{Config, RetryMode};
use atoll::contract::owned_topics;
use atoll::envelope::{Outgoing, CAUSATION_ID};
use atoll::{event_service, handlers, App, Context, Event, HandlerResult, Saga, Service, Step};
use common::header;
use rdkafka::Message;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "locker", partitions = 1)]
struct Locker;

#[handlers]
impl Locker {}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "lock", version = 1, service = Locker, reply = Locked)]
struct Lock {
    #[event(key)]
    id: String,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(reply, name = "locked", version = 1, service = Locker)]
struct Locked {
    ok: bool,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "unlock", version = 1, service = Locker, reply = Unlocked)]
struct Unlock {
    #[event(key)]
    id: String,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(reply, name = "unlocked", version = 1, service = Locker)]
struct Unlocked {}

#[event_service(company = "acme", namespace = "test", name = "vault", partitions = 1, sagas = [Locking])]
struct Vault;

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "open", version = 1, service = Vault)]
struct Open {
    #[event(key)]
    id: String,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(fact, name = "opened", version = 1, service = Vault)]
struct Opened {
    #[event(key)]
    id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Locking {
    id: String,
}

impl Saga for Locking {
    const NAME: &'static str = "lock";

    fn id(&self) -> String {
        self.id.clone()
    }

    fn steps() -> Vec<Step<Self>> {
        vec![Step::new(
            "lock",
            |l: &Locking| Lock { id: l.id.clone() },
            |_: &mut Locking, r: Locked| if r.ok { Ok(()) } else { Err("refused".into()) },
        )
        .compensate(|l: &Locking| Unlock { id: l.id.clone() })
        .timeout(Duration::from_secs(120))]
    }

    async fn completed(self, ctx: Context<Vault>) -> HandlerResult {
        ctx.emit(Opened { id: self.id }).await?;
        Ok(())
    }

    async fn failed(self, _ctx: Context<Vault>, _reason: String) -> HandlerResult {
        Ok(())
    }
}

#[handlers]
impl Vault {
    #[listener(name = "open")]
    async fn open(&self, ctx: Context<Self>, cmd: Open) -> HandlerResult {
        ctx.start_saga(Locking { id: cmd.id }).await?;
        Ok(())
    }
}

async fn read(
    running: &atoll::Running,
    topic: String,
    n: usize,
) -> Vec<rdkafka::message::OwnedMessage> {
    let bootstrap = running.bootstrap_servers().to_owned();
    tokio::task::spawn_blocking(move || common::read_topic(&bootstrap, &topic, 1, n))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_replies_are_dead_lettered_or_ignored_and_the_saga_goes_on() {
    let running = App::new(Config::default())
        .service(Vault)
        .topics(owned_topics::<Locker>())
        .start()
        .await
        .unwrap();
    let client = running.client("test");
    client.send(&Open { id: "v1".into() }).await.unwrap();
    // Nobody serves the locker: the saga waits for the reply to its request.
    let lock = read(&running, Locker::ID.commands().to_string(), 1).await;
    assert_eq!(lock.len(), 1);
    assert_eq!(header(&lock[0], "ce_id"), Some("lock/v1@1"));
    assert_eq!(
        header(&lock[0], "ce_replyto"),
        Some("acme.test.vault.private.reply")
    );
    assert_eq!(header(&lock[0], "atoll_reply_partition"), Some("0"));

    let reply_topic = Vault::ID.reply().to_string();
    let send = |ce_type: &'static str, causation: Option<&'static str>, payload: &'static [u8]| {
        let client = client.clone();
        let topic = reply_topic.clone();
        async move {
            let (headers, _) = Outgoing {
                causation_id: causation,
                ..Outgoing::new(ce_type, "test")
            }
            .headers();
            client
                .send_raw(&topic, Some(b"v1"), payload, headers)
                .await
                .unwrap();
        }
    };
    let start = format!("{}.lock_saga_started.v1", Vault::ID);
    let start: &'static str = Box::leak(start.into_boxed_str());
    // Dead-lettered: a start that does not decode, a reply of the wrong type for the pending
    // step, a reply of the right type that does not decode.
    send(start, None, b"not json").await;
    send(Unlocked::ce_type(), Some("lock/v1@1"), b"{}").await;
    send(Locked::ce_type(), Some("lock/v1@1"), b"{bad").await;
    // Ignored: a reply answering no request, and one for a saga that does not exist.
    send(Locked::ce_type(), None, br#"{"ok":true}"#).await;
    send(Locked::ce_type(), Some("lock/nobody@1"), br#"{"ok":true}"#).await;
    // The real reply still completes the saga.
    send(Locked::ce_type(), Some("lock/v1@1"), br#"{"ok":true}"#).await;

    let opened = read(&running, Vault::ID.events().to_string(), 1).await;
    assert_eq!(opened.len(), 1);
    assert_eq!(header(&opened[0], "ce_type"), Some(Opened::ce_type()));
    let dlq = read(&running, Vault::ID.dlq().to_string(), 3).await;
    let errors: Vec<&str> = dlq
        .iter()
        .map(|m| header(m, "atoll_dlq_error").unwrap())
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].contains("saga start does not decode as `lock`"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1]
            .contains("`acme.test.locker.unlocked.v1` does not answer step `lock` of saga `lock`"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("reply does not decode as `acme.test.locker.locked.v1`"),
        "{}",
        errors[2]
    );
    for m in &dlq {
        assert_eq!(
            header(m, "atoll_dlq_attempts"),
            Some("1"),
            "bad input is not retried"
        );
    }
    assert_eq!(header(&dlq[1], CAUSATION_ID), Some("lock/v1@1"));
    // The saga wrote: started (1) and completed (2).
    let states = read(&running, Vault::ID.saga().to_string(), 2).await;
    assert_eq!(states.len(), 2);
    assert!(states.iter().all(|m| m.key() == Some(&b"lock/v1"[..])));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_listener_must_retry_strictly() {
    let mut config = Config::default();
    let settings = atoll::config::ListenerSettings {
        retry: Some(RetryMode::NonBlocking),
        ..Default::default()
    };
    config.listeners.insert("lock-saga".into(), settings);
    let err = App::new(config)
        .service(Vault)
        .start()
        .await
        .map(|_| ())
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("listener `lock-saga` runs a saga") && msg.contains("`strict`"),
        "{msg}"
    );
}
