//! The idle unloader: a background task per manager that stops an engine
//! nobody has leased for the configured TTL, freeing its memory.

use std::sync::Weak;

use tokio::time::{sleep, Duration};
use tokio_util::sync::CancellationToken;

use super::EngineManager;

/// Check a few times per TTL so an engine unloads at most a quarter TTL
/// late; bounded so tiny TTLs do not spin and huge ones still react.
fn tick(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
}

/// Runs until `cancel` (shutdown) or until the manager is dropped; it holds
/// only a weak reference so it never keeps the manager alive.
pub(super) async fn run(manager: Weak<EngineManager>, ttl: Duration, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = sleep(tick(ttl)) => {}
            () = cancel.cancelled() => return,
        }
        let Some(manager) = manager.upgrade() else {
            return;
        };
        manager.unload_if_idle(ttl).await;
    }
}
