use atoll::event_service;

// A topic the service does not own (no `results = true`), a config given twice, a name that
// is not a config's, the status and control topics' policies, and entries of the wrong shape.
#[event_service(
    company = "acme",
    namespace = "shop",
    name = "orders",
    topic_config = [
        ("results", "retention.ms", "1000"),
        ("events", "retention.ms", "1000"),
        ("events", "retention.ms", "2000"),
        ("events", "Retention", "1"),
        ("private.status", "cleanup.policy", "delete"),
        ("private.control", "cleanup.policy", "delete"),
        ("events", "retention.ms"),
        "retention.ms",
    ]
)]
pub struct Orders;

#[event_service(company = "acme", namespace = "shop", name = "billing", topic_config = "events")]
pub struct Billing;

fn main() {}
