use atoll::event_service;

#[event_service(company = "acme", namespace = "shop", name = "orders", codec = "xml")]
pub struct Orders;

fn main() {}
