use atoll::event_service;

#[event_service(company = "acme", namespace = "shop")]
pub struct Orders;

fn main() {}
