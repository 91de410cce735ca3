use atoll::{event_service, App};
use atoll::config::Config;

#[event_service(company = "acme", namespace = "shop", name = "orders")]
pub struct Orders;

fn main() {
    let _ = App::new(Config::default()).service(Orders);
}
