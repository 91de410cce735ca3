//! The retry tiers already on the broker. A listener's ladder may change between versions
//! (or lose a delay to configuration): the records waiting on a tier no ladder has any more
//! must still be handled, or dead-lettered in their listener's name, so the tiers of each
//! service found on the broker are read with those of the ladders.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::client::{Clients, Hooked};
use crate::contract::topic::{ServiceId, TopicName};
use crate::error::{Error, Result};

/// How long the broker's metadata is waited for.
const METADATA: Duration = Duration::from_secs(10);

/// The retry tiers (their delays, ms) of `services` on the broker. A broker that does not
/// answer leaves them unknown: logged, and the tiers of the ladders are read alone (the
/// others' records wait, retained, for the next start).
pub(super) async fn on_broker(
    clients: &Clients,
    services: &[ServiceId],
) -> BTreeMap<ServiceId, BTreeSet<u64>> {
    let clients = clients.clone();
    let services = services.to_vec();
    let listed = tokio::task::spawn_blocking(move || list(&clients)).await;
    let names = match listed {
        Ok(Ok(names)) => names,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot list the retry tiers on the broker: only the ladders' tiers are read");
            return BTreeMap::new();
        }
        Err(e) => {
            tracing::warn!(error = %e, "listing the retry tiers panicked: only the ladders' tiers are read");
            return BTreeMap::new();
        }
    };
    of_services(&services, names.iter().map(String::as_str))
}

/// The topic names on the broker (blocking).
fn list(clients: &Clients) -> Result<Vec<String>> {
    let consumer: BaseConsumer<Hooked> = clients
        .with(|c| {
            c.remove("group.instance.id");
            c.set("group.id", "atoll-retry-tiers");
        })
        .create("retry tiers")
        .map_err(|e| Error::kafka("creating a consumer to list the retry tiers", e))?;
    // Serves the request for a first OAUTHBEARER token, before the blocking call below.
    let _ = consumer.poll(Duration::ZERO);
    let md = consumer
        .fetch_metadata(None, METADATA)
        .map_err(|e| Error::kafka("reading the broker's topics", e))?;
    Ok(md.topics().iter().map(|t| t.name().to_owned()).collect())
}

/// The retry tiers of `services` among the topic `names`.
fn of_services<'a>(
    services: &[ServiceId],
    names: impl Iterator<Item = &'a str>,
) -> BTreeMap<ServiceId, BTreeSet<u64>> {
    let mut tiers: BTreeMap<ServiceId, BTreeSet<u64>> = BTreeMap::new();
    for name in names {
        let Ok(topic) = name.parse::<TopicName>() else {
            continue;
        };
        let (Some(ms), Some(service)) = (
            topic.retry_tier_ms(),
            services
                .iter()
                .find(|s| topic.service_prefix() == s.to_string()),
        ) else {
            continue;
        };
        tiers.entry(*service).or_default().insert(ms);
    }
    tiers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_services_tiers_are_taken() {
        let orders = ServiceId::new_unchecked("acme", "shop", "orders");
        let payments = ServiceId::new_unchecked("acme", "shop", "payments");
        let names = [
            "acme.shop.orders.private.retry-500",
            "acme.shop.orders.private.retry-60000",
            "acme.shop.orders.private.retry",
            "acme.shop.orders.events",
            "acme.shop.orders.private.retry-50",
            "acme.shop.ordersx.private.retry-500",
            "acme.shop.inventory.private.retry-500",
            "not a topic",
            "acme.shop.payments.private.retry-1000",
        ];
        let got = of_services(&[orders, payments], names.into_iter());
        let want = BTreeMap::from([
            (orders, BTreeSet::from([500, 60_000])),
            (payments, BTreeSet::from([1_000])),
        ]);
        assert_eq!(got, want);
    }
}
