//! Request/reply: a command handler's typed reply goes to the command's `ce_replyto` (only a
//! `private.reply` topic), in the same flow, and the requester handles it with a reply listener.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll::config::Config;
use atoll::{event_service, handlers, App, Context, Event, HandlerResult, Meta};
use common::header;

use rdkafka::Message;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "asker", partitions = 1)]
#[derive(Clone, Default)]
struct Asker {
    /// (request id, reply meta, reply)
    replies: Arc<Mutex<Vec<(String, Meta, Quote)>>>,
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

#[event_service(company = "acme", namespace = "test", name = "pricer", partitions = 1)]
#[derive(Clone, Default)]
struct Pricer;

/// Starts a flow in the asker.
#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "ask", version = 1, service = Asker)]
struct Ask {
    #[event(key)]
    sku: String,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "price", version = 1, service = Pricer)]
struct Price {
    #[event(key)]
    sku: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(reply, name = "quote", version = 1, service = Pricer)]
struct Quote {
    sku: String,
    cents: u64,
}

#[handlers]
impl Asker {
    #[listener(name = "ask")]
    async fn ask(&self, ctx: Context<Self>, ask: Ask) -> HandlerResult {
        let id = ctx.request(Price { sku: ask.sku }).await?;
        self.requests
            .lock()
            .unwrap()
            .push((id, ctx.meta().correlation_id.clone()));
        Ok(())
    }

    #[listener(name = "quotes")]
    async fn quote(&self, meta: Meta, quote: Quote) -> HandlerResult {
        let request = meta.causation_id.clone().unwrap_or_default();
        self.replies.lock().unwrap().push((request, meta, quote));
        Ok(())
    }
}

#[handlers]
impl Pricer {
    #[listener(name = "price")]
    async fn price(&self, price: Price) -> HandlerResult<Quote> {
        Ok(Quote {
            cents: 100 * price.sku.len() as u64,
            sku: price.sku,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_reaches_the_requester_in_the_same_flow() {
    let asker = Asker::default();
    let running = App::new(Config::default())
        .service(asker.clone())
        .service(Pricer)
        .start()
        .await
        .unwrap();
    let client = running.client("test");
    client
        .send(&Ask {
            sku: "apple".into(),
        })
        .await
        .unwrap();
    // A command naming a topic that is not a reply topic is bad input.
    let (headers, _) = atoll::envelope::Outgoing {
        reply_to: Some("acme.test.asker.events"),
        ..atoll::envelope::Outgoing::new(Price::ce_type(), "test")
    }
    .headers();
    client
        .send_raw(
            "acme.test.pricer.commands",
            Some(b"pear"),
            br#"{"sku":"pear"}"#,
            headers,
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while asker.replies.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bootstrap = running.bootstrap_servers().to_owned();
    let dlq = tokio::task::spawn_blocking(move || {
        common::read_topic(&bootstrap, "acme.test.pricer.private.dlq", 1, 1)
    })
    .await
    .unwrap();
    running.shutdown().await;

    let replies = asker.replies.lock().unwrap().clone();
    assert_eq!(replies.len(), 1);
    let (request, meta, quote) = &replies[0];
    assert_eq!(
        quote,
        &Quote {
            sku: "apple".into(),
            cents: 500
        }
    );
    assert_eq!(
        meta.topic, "acme.test.asker.private.reply",
        "on the requester's reply topic"
    );
    let (sent, flow) = asker.requests.lock().unwrap()[0].clone();
    assert_eq!(request, &sent, "the reply is caused by the request");
    assert_eq!(
        meta.correlation_id, flow,
        "the reply belongs to the requester's flow"
    );
    assert_eq!(meta.key.as_deref(), Some("apple"));

    assert_eq!(dlq.len(), 1);
    assert_eq!(header(&dlq[0], "atoll_dlq_error_kind"), Some("decode"));
    assert!(header(&dlq[0], "atoll_dlq_error")
        .unwrap()
        .contains("not a reply topic"));
    assert_eq!(dlq[0].key(), Some(&b"pear"[..]));
}

/// Sends a `price` command with these reply headers, raw.
async fn price_with(client: &atoll::Client, sku: &str, to: &str, partition: Option<i32>) {
    let (headers, _) = atoll::envelope::Outgoing {
        reply_to: Some(to),
        reply_partition: partition,
        ..atoll::envelope::Outgoing::new(Price::ce_type(), "test")
    }
    .headers();
    let payload = format!(r#"{{"sku":"{sku}"}}"#);
    client
        .send_raw(
            "acme.test.pricer.commands",
            Some(sku.as_bytes()),
            payload.as_bytes(),
            headers,
        )
        .await
        .unwrap();
}

/// A reply that cannot be delivered (to a reply topic that does not exist, or a partition it
/// does not have) makes its command bad input: dead-lettered with the cause, and the
/// partition moves on (a reply retried forever would stall it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_address_that_does_not_exist_is_dead_lettered_not_retried_forever() {
    let asker = Asker::default();
    let running = App::new(Config::default())
        .service(asker.clone())
        .service(Pricer)
        .start()
        .await
        .unwrap();
    let client = running.client("test");
    price_with(&client, "ghost", "acme.test.ghost.private.reply", None).await;
    price_with(&client, "far", "acme.test.asker.private.reply", Some(99)).await;
    price_with(&client, "near", "acme.test.asker.private.reply", Some(0)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while asker.replies.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bootstrap = running.bootstrap_servers().to_owned();
    let dlq = tokio::task::spawn_blocking(move || {
        common::read_topic_within(
            &bootstrap,
            "acme.test.pricer.private.dlq",
            1,
            2,
            Duration::from_secs(10),
        )
    })
    .await
    .unwrap();
    running.shutdown().await;
    let replies = asker.replies.lock().unwrap().clone();
    assert_eq!(replies.len(), 1, "the command after them is handled");
    assert_eq!(replies[0].2.sku, "near");
    let errors: Vec<(&str, &str)> = dlq
        .iter()
        .map(|m| {
            (
                header(m, "atoll_dlq_error_kind").unwrap(),
                header(m, "atoll_dlq_error").unwrap(),
            )
        })
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0]
            .1
            .contains("`acme.test.ghost.private.reply` names a reply topic that does not exist"),
        "{errors:?}"
    );
    assert!(
        errors[1]
            .1
            .contains("atoll_reply_partition 99 is out of range"),
        "{errors:?}"
    );
    assert!(
        errors.iter().all(|(kind, _)| *kind == "decode"),
        "{errors:?}"
    );
}

/// A key that is not UTF-8 is kept as it is in the reply (rewriting it would merge distinct
/// keys and move the reply to another partition).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_is_not_utf8_is_kept_as_bytes_in_the_reply() {
    let asker = Asker::default();
    let running = App::new(Config::default())
        .service(asker.clone())
        .service(Pricer)
        .start()
        .await
        .unwrap();
    let client = running.client("test");
    let key: &[u8] = b"\xffpe\x00ar\xfe";
    let (headers, _) = atoll::envelope::Outgoing {
        reply_to: Some("acme.test.asker.private.reply"),
        ..atoll::envelope::Outgoing::new(Price::ce_type(), "test")
    }
    .headers();
    client
        .send_raw(
            "acme.test.pricer.commands",
            Some(key),
            br#"{"sku":"pear"}"#,
            headers,
        )
        .await
        .unwrap();
    let bootstrap = running.bootstrap_servers().to_owned();
    let replies = tokio::task::spawn_blocking(move || {
        common::read_topic(&bootstrap, "acme.test.asker.private.reply", 1, 1)
    })
    .await
    .unwrap();
    running.shutdown().await;
    assert_eq!(replies.len(), 1);
    assert_eq!(
        replies[0].key(),
        Some(key),
        "the reply keeps the command's key bytes"
    );
}
