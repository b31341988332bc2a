//! Lexora: an LLM gateway in front of inference engines and hosted providers.
//!
//! The modules follow the request path of `DESIGN.md`:
//! [`ingress`] (the HTTP/1.1 server connection of [`h1`], axum routes, graceful
//! shutdown) → [`identify`] (request id,
//! API key, user) → [`parse`] (raw body, extension fields) → [`route`]
//! (model to backends) → [`limit`] (per-user requests and tokens) →
//! [`attempt`] ([`queue`], breaker, retries, failover; [`upstream`] sends to
//! the engine) → [`respond`] (pass answers and SSE streams through, settle
//! usage) → [`record`] (stats, metrics, access log). [`gateway`] orders the
//! stages and owns hot reload; [`admin`] serves `/admin/*`. [`config`] loads the settings, [`error`] is the one error
//! type, [`mock`] is the built-in test engine, [`status`] serves health,
//! stats and metrics.

pub mod admin;
pub mod attempt;
pub mod body;
pub mod config;
pub mod engine;
pub mod error;
pub mod gateway;
pub mod h1;
pub mod identify;
pub mod ingress;
pub mod limit;
pub mod mock;
pub mod parse;
pub mod probe;
pub mod queue;
pub mod record;
pub mod respond;
pub mod route;
pub mod status;
pub mod telemetry;
pub mod translate;
pub mod upstream;
