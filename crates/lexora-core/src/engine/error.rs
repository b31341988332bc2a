//! What can go wrong selecting, starting or swapping an engine.

use std::time::Duration;

/// An engine lifecycle failure. [`EngineError::is_client_error`] says which
/// the gateway answers with 400; the rest become 503 with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The request needs more context than the largest variant has.
    #[error(
        "model `{model}` cannot serve {needed} tokens: the largest context of its variants is {largest}"
    )]
    NoVariantFits {
        model: String,
        needed: u32,
        largest: u32,
    },
    /// The caller named a variant the model does not have.
    #[error("model `{model}` has no variant `{variant}`")]
    UnknownVariant { model: String, variant: String },
    /// The engine binary could not be spawned.
    #[error("could not start engine {model}/{variant}: {reason}")]
    Spawn {
        model: String,
        variant: String,
        reason: String,
    },
    /// The engine exited before it became ready.
    #[error("engine {model}/{variant} exited while starting ({status})")]
    ExitedDuringStart {
        model: String,
        variant: String,
        status: String,
    },
    /// The engine did not answer `GET /health` with 200 in time.
    #[error("engine {model}/{variant} was not ready within {}s", .after.as_secs_f64())]
    NotReady {
        model: String,
        variant: String,
        after: Duration,
    },
    /// [`super::EngineManager::shutdown`] was called.
    #[error("engine manager for model `{model}` is shutting down")]
    ShuttingDown { model: String },
}

impl EngineError {
    /// True when the request itself is at fault (no variant fits): answer
    /// 400, retrying cannot help.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::NoVariantFits { .. } | Self::UnknownVariant { .. }
        )
    }
}
