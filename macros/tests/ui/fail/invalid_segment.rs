use atoll::event_service;

#[event_service(company = "Acme Corp", namespace = "shop", name = "orders")]
pub struct Orders;

fn main() {}
