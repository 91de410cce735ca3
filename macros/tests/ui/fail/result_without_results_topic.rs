use atoll::{event_service, Event};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "shop", name = "analytics")]
pub struct Analytics;

#[derive(Serialize, Deserialize, Event)]
#[event(result, name = "daily_sales", version = 1, service = Analytics)]
pub struct DailySales {}

#[derive(Serialize, Deserialize, Event)]
#[event(result, name = "weekly_sales", version = 1, service = Analytics, reply = DailySales)]
pub struct WeeklySales {}

fn main() {}
