//! The shop's manifest (its services, topics, events, consumer groups) and the Avro schema of
//! every event (its contracts), as checked into `topics/`.
//!
//! `shop topics --write topics` regenerates them; `shop topics --check topics` (run by the
//! tests, so by CI) fails when the manifest drifts or when an event's schema changed
//! incompatibly with the checked-in one, naming the field and the rule broken.

use std::path::Path;

use atoll::contract::{self, Contract, EventSpec, Manifest};
use atoll::{Event, Request};

use crate::analytics::DailySales;
use crate::inventory::{
    ExpireReservation, ReleaseStock, ReportStock, ReserveStock, StockRelease, StockReleased,
    StockReported, StockReservation, StockReserved,
};
use crate::orders::{OrderCancelled, OrderCompleted, OrderPlaced, PlaceOrder};
use crate::payments::{
    ChargePayment, ChargeResult, PaymentCharged, PaymentDeclined, PaymentRefunded, RefundPayment,
    RefundResult,
};
use crate::shipping::{ArrangeShipment, ShipmentResult, ShipmentScheduled};

/// The directory of the schemas, under `topics/`.
pub const SCHEMAS: &str = "avro";

/// Every event of the shop: its manifest entry (a command answered by a reply names it) and
/// its contract.
fn entries() -> Vec<(EventSpec, Contract)> {
    fn event<E: Event>() -> (EventSpec, Contract) {
        let contract = Contract::of::<E>().expect("every shop event derives AvroSchema");
        (EventSpec::of::<E>(), contract)
    }
    fn request<C: Request>() -> (EventSpec, Contract) {
        (EventSpec::request::<C>(), event::<C>().1)
    }
    vec![
        event::<PlaceOrder>(),
        event::<OrderPlaced>(),
        event::<OrderCompleted>(),
        event::<OrderCancelled>(),
        request::<ReserveStock>(),
        event::<StockReservation>(),
        request::<ReleaseStock>(),
        event::<StockRelease>(),
        event::<StockReserved>(),
        event::<StockReleased>(),
        event::<ReportStock>(),
        event::<StockReported>(),
        event::<ExpireReservation>(),
        request::<ChargePayment>(),
        event::<ChargeResult>(),
        request::<RefundPayment>(),
        event::<RefundResult>(),
        event::<PaymentCharged>(),
        event::<PaymentDeclined>(),
        event::<PaymentRefunded>(),
        request::<ArrangeShipment>(),
        event::<ShipmentResult>(),
        event::<ShipmentScheduled>(),
        event::<DailySales>(),
    ]
}

/// The contract of every event of the shop.
pub fn contracts() -> Vec<Contract> {
    entries().into_iter().map(|(_, c)| c).collect()
}

/// The shop's manifest: its services and the events they own.
pub fn manifest() -> Manifest {
    let events = entries().into_iter().map(|(e, _)| e).collect();
    Manifest::new(crate::descriptions(), events).expect("the shop's declarations are consistent")
}

/// The file name under `topics/`.
pub const FILE: &str = "acme.shop.json";

/// The manifest, as written.
pub fn render() -> String {
    manifest().render()
}

/// Writes the manifest and the schemas into `dir`.
pub fn write(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(FILE), render())?;
    contract::write(&dir.join(SCHEMAS), &contracts())?;
    Ok(())
}

/// `Err` naming the fix when the manifest in `dir` differs from the code.
pub fn check(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(FILE);
    let on_disk = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let fix = "run `cargo run -p example-shop -- topics --write topics`";
    if on_disk != render() {
        anyhow::bail!(
            "{} is out of date with the service declarations; {fix}",
            path.display()
        );
    }
    if let Err(problems) = contract::check(&dir.join(SCHEMAS), &contracts()) {
        let incompatible = problems.iter().any(|p| p.contains("breaks"));
        let advice = if incompatible {
            "an incompatible change needs a new event version (`version = 2`) instead"
        } else {
            fix
        };
        anyhow::bail!("event contracts:\n  {}\n{advice}", problems.join("\n  "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_spots_drift() {
        let dir = std::env::temp_dir().join(format!("shop-topics-{}", std::process::id()));
        write(&dir).unwrap();
        check(&dir).unwrap();
        std::fs::write(dir.join(FILE), "[]\n").unwrap();
        let e = check(&dir).unwrap_err().to_string();
        assert!(e.contains("topics --write"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(check(&dir).is_err(), "a missing file is an error");
    }
}
