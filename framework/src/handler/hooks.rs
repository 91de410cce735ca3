//! Partition hooks: how a listener with partition-bound state (a saga) hears about its
//! partitions, and what it gets from the runtime.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::client::Clients;
use crate::produce::Producer;

/// What a listener with partition-bound state needs from the runtime, and hears about its
/// partitions.
pub(crate) trait PartitionHooks: Send + Sync {
    /// The runtime's resources, once at start.
    fn started(&self, rt: HookRuntime);
    /// Partitions of the listener's topic were assigned to this process.
    fn assigned(&self, partitions: &[i32]);
    /// Partitions were revoked (after their in-flight records finished).
    fn revoked(&self, partitions: &[i32]);
}

/// The runtime's resources for [`PartitionHooks`].
#[derive(Clone)]
pub(crate) struct HookRuntime {
    pub(crate) producer: Producer,
    /// The process's Kafka clients; `None` when there is no broker to restore state from (a
    /// unit test's recording producer).
    pub(crate) clients: Option<Clients>,
    pub(crate) source: Arc<str>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) stop: CancellationToken,
    /// How long sagas' state is kept, how long a restore may read, how many sagas are held.
    pub(crate) saga: crate::config::SagaConfig,
    /// The listener's gauge of live sagas.
    pub(crate) sagas_live: prometheus_client::metrics::gauge::Gauge,
}
