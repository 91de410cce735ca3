use atoll::event_service;

#[event_service(company = "acme", namespace = "shop", name = "orders", partition = 3, owner = 1)]
pub struct Orders;

fn main() {}
