//! What a handler's `Ok` value becomes: nothing, facts of its service (emitted), a reply to the
//! handled command, or several of these (a tuple, an `Option`, a `Vec`).

use std::future::Future;

use super::context::Context;
use crate::contract::event::{FactOf, Reply};
use crate::contract::service::Service;
use crate::error::Result;

/// What a handler of service `S` may return in its `Ok`: `()`, a fact (or result) of `S`, which
/// is emitted as with [`Context::emit`], a reply to the handled command, or several of these as
/// a tuple (up to four), an `Option` or a `Vec`, produced in order.
///
/// ```ignore
/// #[listener(name = "place-order")]
/// async fn place(&self, cmd: PlaceOrder) -> HandlerResult<(OrderPlaced, Option<PriorityOrder>)> {
///     let priority = (cmd.total > 1_000).then(|| PriorityOrder { order_id: cmd.order_id.clone() });
///     Ok((OrderPlaced { order_id: cmd.order_id }, priority))
/// }
/// ```
///
/// `#[derive(Event)]` implements it for facts and results (for their own service only: a
/// service cannot return another's facts) and for replies (for every service). Use
/// [`Context::emit`] for output that depends on what was emitted before, or that streams.
#[diagnostic::on_unimplemented(
    message = "a handler of `{S}` cannot return `{Self}`",
    label = "not something `{S}` can produce",
    note = "a handler returns `HandlerResult` (nothing), `HandlerResult<F>` with a fact `F` of its own service, `HandlerResult<R>` with a reply `R`, or several as a tuple, `Option` or `Vec`; another service's facts are that service's to publish"
)]
pub trait Output<S: Service>: Send + 'static {
    /// Produces the output through the handler's context.
    #[doc(hidden)]
    fn send(self, ctx: &Context<S>) -> impl Future<Output = Result<()>> + Send;
}

impl<S: Service> Output<S> for () {
    async fn send(self, _ctx: &Context<S>) -> Result<()> {
        Ok(())
    }
}

impl<S: Service, T: Output<S>> Output<S> for Option<T> {
    async fn send(self, ctx: &Context<S>) -> Result<()> {
        match self {
            Some(out) => out.send(ctx).await,
            None => Ok(()),
        }
    }
}

impl<S: Service, T: Output<S>> Output<S> for Vec<T> {
    async fn send(self, ctx: &Context<S>) -> Result<()> {
        for out in self {
            out.send(ctx).await?;
        }
        Ok(())
    }
}

/// `Output` for tuples: each part in order.
macro_rules! tuples {
    ($($name:ident)+) => {
        impl<S: Service, $($name: Output<S>),+> Output<S> for ($($name,)+) {
            #[allow(non_snake_case)]
            async fn send(self, ctx: &Context<S>) -> Result<()> {
                let ($($name,)+) = self;
                $($name.send(ctx).await?;)+
                Ok(())
            }
        }
    };
}
tuples!(A B);
tuples!(A B C);
tuples!(A B C D);

/// A returned fact of `S`: emitted. (`#[derive(Event)]` implements `Output` with it.)
#[doc(hidden)]
pub async fn emit_output<S: Service, F: FactOf<S>>(fact: F, ctx: &Context<S>) -> Result<()> {
    ctx.emit(fact).await
}

/// A returned reply: sent to the handled command's `ce_replyto`. (`#[derive(Event)]`
/// implements `Output` with it.)
#[doc(hidden)]
pub async fn reply_output<S: Service, R: Reply>(reply: R, ctx: &Context<S>) -> Result<()> {
    ctx.reply(&reply).await
}
