//! The handler layer: what a handler sees and how it is called — the [`Context`](context::Context)
//! it produces through, the extractors, the [`Listener`](listener::Listener) that decodes a
//! record and calls the handler, what its `Ok` value becomes, how its outputs leave
//! ([`delivery`]), and the hooks of listeners with partition-bound state.

pub(crate) mod batch;
pub(crate) mod context;
pub(crate) mod delivery;
pub(crate) mod hooks;
pub(crate) mod input;
pub(crate) mod layer;
pub(crate) mod listener;
pub(crate) mod output;
pub(crate) mod schedule;
pub(crate) mod transaction;
