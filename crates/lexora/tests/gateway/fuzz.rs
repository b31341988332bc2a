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

/// Sends `request` and reads the whole answer, its status and body;
/// `shown` says what was asked when none comes in time or it breaks off.
async fn exchange(request: reqwest::RequestBuilder, shown: &str) -> (u16, Vec<u8>) {
    let exchange = async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, body.to_vec()))
    };
    tokio::time::timeout(std::time::Duration::from_secs(15), exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer in time: {shown}"))
        .unwrap_or_else(|e| panic!("a broken answer ({e}): {shown}"))
}

/// An answer shows no key, and an error answer is JSON with a message,
/// in Anthropic's shape for clients of its API.
fn check_answer(status: u16, body: &[u8], anthropic: bool, shown: &str) {
    let text = String::from_utf8_lossy(body);
    assert!(
        !text.contains(PROVIDER_KEY),
        "the key in an answer: {shown}"
    );
    if status >= 400 {
        let error: serde_json::Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("a {status} that is not JSON ({e}): {text}: {shown}"));
        assert!(
            error["error"]["message"].is_string(),
            "{status} {error}: {shown}"
        );
        if anthropic {
            assert_eq!(error["type"], "error", "{error}: {shown}");
        }
    }
}

/// The gateway neither panicked nor logged the provider's key.
fn check_log(gw: &crate::support::Process) {
    let log = gw.stderr();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains(PROVIDER_KEY), "the key in the log: {log}");
}
