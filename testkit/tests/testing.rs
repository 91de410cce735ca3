//! `atoll::testing`'s own behaviour, where it is more than a call through the runtime's code:
//! a set-based handler's batch delivered in one call, its marked record failed alone.

use atoll::testing::TestBed;
use atoll::{event_service, handlers, Batch, Event, HandlerError, HandlerResult};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "ledger")]
#[derive(Debug, Default)]
struct Ledger {
    calls: std::sync::Mutex<Vec<usize>>,
}

/// Book `cents`; a negative amount is refused (its record marked failed).
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(command, name = "book", version = 1, service = Ledger)]
struct Book {
    #[event(key)]
    id: String,
    cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(fact, name = "booked", version = 1, service = Ledger)]
struct Booked {
    #[event(key)]
    id: String,
}

#[handlers]
impl Ledger {
    #[listener(name = "book")]
    async fn book(&self, batch: Batch<Self, Book>) -> HandlerResult<()> {
        self.calls.lock().unwrap().push(batch.len());
        if batch.events().any(|b| b.id == "boom") {
            return Err(HandlerError::transient("the whole call failed"));
        }
        for record in &batch {
            if record.event.cents < 0 {
                record.fail(HandlerError::permanent("a negative amount"));
                continue;
            }
            let booked = Booked {
                id: record.event.id.clone(),
            };
            record.ctx.emit(booked).await?;
        }
        Ok(())
    }
}

fn book(id: &str, cents: i64) -> Book {
    Book {
        id: id.into(),
        cents,
    }
}

#[tokio::test]
async fn a_batch_is_one_call_and_a_marked_record_fails_alone() {
    let bed = TestBed::new(Ledger::default());
    let results = bed
        .handle_batch(vec![book("a", 1), book("b", -1), book("c", 3)])
        .await
        .unwrap();
    assert_eq!(*bed.service().calls.lock().unwrap(), [3], "one call");
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    let marked = results[1].as_ref().unwrap_err();
    assert!(marked.is_permanent() && marked.to_string() == "a negative amount");
    let ids: Vec<String> = bed.emitted::<Booked>().into_iter().map(|b| b.id).collect();
    assert_eq!(ids, ["a", "c"]);

    // The whole call failing is the call's error; nothing settles.
    bed.clear();
    let err = bed
        .handle_batch(vec![book("d", 1), book("boom", 1)])
        .await
        .unwrap_err();
    assert!(!err.is_permanent(), "{err}");
    assert!(bed.emitted::<Booked>().is_empty());
    // An empty batch is no call.
    assert!(bed
        .handle_batch(Vec::<Book>::new())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(bed.service().calls.lock().unwrap().len(), 2);
}
