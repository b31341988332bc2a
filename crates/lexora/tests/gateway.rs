//! End-to-end tests of the real `lexora` binary, started on port 0 in
//! front of the built-in mock engine (`lexora mock`, another process).

#[path = "gateway/support.rs"]
mod support;

#[path = "gateway/cli.rs"]
mod cli;
#[path = "gateway/engines.rs"]
mod engines;
#[path = "gateway/errors.rs"]
mod errors;
#[path = "gateway/fuzz.rs"]
mod fuzz;
#[path = "gateway/lifecycle.rs"]
mod lifecycle;
#[path = "gateway/policies.rs"]
mod policies;
#[path = "gateway/providers.rs"]
mod providers;
#[path = "gateway/proxy.rs"]
mod proxy;
#[path = "gateway/resilience.rs"]
mod resilience;
#[path = "gateway/streaming.rs"]
mod streaming;
