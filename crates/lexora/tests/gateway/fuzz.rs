//! Fuzzing the real binary, from both sides and in time.
//!
//! - [`engine`]: an engine that answers with anything.
//! - [`client`]: a client that asks anything.
//! - [`storm`]: clients that leave at any moment.

#[path = "fuzz/client.rs"]
mod client;
#[path = "fuzz/engine.rs"]
mod engine;
#[path = "fuzz/storm.rs"]
mod storm;

/// Cases per test, each a request through the gateway.
const CASES: usize = 300;
/// The Anthropic provider's key: no answer and no log line may show it.
const PROVIDER_KEY: &str = "sk-ant-fuzz-provider-key";
