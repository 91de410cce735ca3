//! What a handler's `Ok` value becomes: nothing, or a reply to the handled command.

use super::context::Context;
use crate::contract::event::Reply;
use crate::contract::service::Service;
use crate::error::Result;

/// What a handler's `Ok` value becomes: nothing for `()`, the reply for a [`Reply`].
#[diagnostic::on_unimplemented(
    message = "a handler cannot return `{Self}`",
    note = "a handler returns `HandlerResult` (no reply) or `HandlerResult<R>` where `R` is declared with `#[event(reply, …)]`"
)]
pub trait Output: Send + 'static {
    /// Sends the reply, if this is one.
    #[doc(hidden)]
    fn send<S: Service>(
        self,
        ctx: &Context<S>,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
}

impl Output for () {
    async fn send<S: Service>(self, _ctx: &Context<S>) -> Result<()> {
        Ok(())
    }
}

impl<R: Reply> Output for R {
    async fn send<S: Service>(self, ctx: &Context<S>) -> Result<()> {
        ctx.reply(&self).await
    }
}
