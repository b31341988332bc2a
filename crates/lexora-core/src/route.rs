//! Route: which backend serves a request's model.
//!
//! Backends that name the model (in config, or in the list their engine
//! reported) come first, in config order; then backends configured without
//! a model list whose engine has not listed its models yet, which decide
//! for themselves. A model nobody can serve is a 404.

use std::sync::Arc;

use crate::attempt::BackendPolicy;
use crate::config::BackendConfig;
use crate::error::GatewayError;
use crate::upstream::Backend;

/// A backend to try, and the model to ask it for when that differs from
/// the request's (a fallback model).
pub type Candidate = (Arc<Backend>, Option<String>);

/// The backends and how models map to them.
#[derive(Debug)]
pub struct Routes {
    backends: Vec<Arc<Backend>>,
}

impl Routes {
    /// Builds every enabled backend; `policy` gives each its queue and
    /// breaker (kept across reloads by name).
    pub fn new(
        configs: &[BackendConfig],
        mut policy: impl FnMut(&BackendConfig) -> Arc<BackendPolicy>,
    ) -> Result<Self, GatewayError> {
        // What can refuse a backend, for all of them first: building an
        // engine backend touches the live scheduler, and a refused reload
        // must change nothing.
        let headers = configs
            .iter()
            .map(Backend::headers)
            .collect::<Result<Vec<_>, _>>()?;
        let backends = configs
            .iter()
            .zip(headers)
            .map(|(config, headers)| {
                Backend::new(config.clone(), policy(config), headers).map(Arc::new)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { backends })
    }

    /// All backends, in config order.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// The backend for `model`; without a model, the first backend.
    pub fn pick(&self, model: Option<&str>) -> Result<&Arc<Backend>, GatewayError> {
        let Some(model) = model else {
            return self
                .backends
                .first()
                .ok_or_else(|| GatewayError::Unavailable {
                    message: "no backend is configured".into(),
                });
        };
        let named = self.backends.iter().find(|b| {
            b.config.models.iter().any(|m| m == model)
                || b.health().models.iter().any(|m| m == model)
        });
        named
            .or_else(|| self.backends.iter().find(|b| b.serves(model)))
            .ok_or_else(|| GatewayError::ModelNotFound {
                model: model.to_owned(),
            })
    }

    /// Backends to try for `model`, in order: those serving it, then those
    /// serving each fallback model (with the model to ask them for).
    pub fn candidates(
        &self,
        model: Option<&str>,
        fallbacks: &[String],
    ) -> Result<Vec<Candidate>, GatewayError> {
        let Some(model) = model else {
            return Ok(vec![(Arc::clone(self.pick(None)?), None)]);
        };
        // One list, filled in place: this runs for every request.
        let mut out: Vec<Candidate> = Vec::with_capacity(self.backends.len());
        self.serving(model, None, &mut out);
        for fallback in fallbacks.iter().filter(|f| f.as_str() != model) {
            self.serving(fallback, Some(fallback), &mut out);
        }
        if out.is_empty() {
            return Err(GatewayError::ModelNotFound {
                model: model.to_owned(),
            });
        }
        Ok(out)
    }

    /// Backends that name `model`, then those that may serve it, added to
    /// `out` with `ask_for` (the model to ask them for).
    fn serving(&self, model: &str, ask_for: Option<&String>, out: &mut Vec<Candidate>) {
        let names = |b: &Backend| {
            b.config.models.iter().any(|m| m == model)
                || b.health().models.iter().any(|m| m == model)
        };
        let named = self.backends.iter().filter(|b| names(b));
        let open = self
            .backends
            .iter()
            .filter(|b| !names(b) && b.serves(model));
        out.extend(named.chain(open).map(|b| (Arc::clone(b), ask_for.cloned())));
    }

    /// Every model any backend serves (configured or reported), each once,
    /// with the first backend that serves it.
    pub fn models(&self) -> Vec<(String, &str)> {
        let mut seen = std::collections::HashSet::new();
        let mut models = Vec::new();
        for backend in &self.backends {
            let health = backend.health();
            for model in backend.config.models.iter().chain(health.models.iter()) {
                if seen.insert(model.clone()) {
                    models.push((model.clone(), backend.name()));
                }
            }
        }
        models
    }
}
