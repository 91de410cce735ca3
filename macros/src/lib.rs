//! Procedural macros of [atoll](https://docs.rs/atoll). Use them through the `atoll` crate.
//!
//! Each macro parses its attribute, checks it, and expands; every error is reported at once,
//! spanned on the offending tokens, and the annotated item is still emitted so that one
//! mistake does not cascade into unrelated errors.

mod errors;
mod event;
mod handlers;
mod segment;
mod service;

use proc_macro::TokenStream;

/// Declares a service: `#[event_service(company = "acme", namespace = "shop", name = "orders")]`
/// on a struct. Optional: `partitions = 6` (the partition count of its topics).
#[proc_macro_attribute]
pub fn event_service(attr: TokenStream, item: TokenStream) -> TokenStream {
    service::expand(attr.into(), item.into()).into()
}

/// Declares a service's listeners: on an `impl` block of the service, each method marked
/// `#[listener(name = "…")]` is an `async fn(&self, extractors…, event) -> HandlerResult`.
#[proc_macro_attribute]
pub fn handlers(attr: TokenStream, item: TokenStream) -> TokenStream {
    handlers::expand(attr.into(), item.into()).into()
}

/// Declares an event: `#[event(fact | command, name = "order_placed", version = 1, service = Orders)]`,
/// with `#[event(key)]` on the field holding the aggregate id.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(item: TokenStream) -> TokenStream {
    event::expand(item.into()).into()
}
