//! The gateway's own headers, written straight into an answer's head.

use http::header::HeaderValue;

use super::*;

/// Answers every request with a map holding headers of the same names as
/// some of its stamp's, and the stamp.
#[derive(Clone)]
struct Stamped(Stamp);

impl Handler for Stamped {
    fn call(&self, _request: Request<Body>) -> BoxFuture<'static, (Response, Option<Stamp>)> {
        let response = Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-request-id", "the-engine's")
            .header("x-ratelimit-limit-requests", "5")
            .header("x-ratelimit-limit-tokens", "9")
            .body(Body::from("{}"))
            .unwrap();
        Box::pin(std::future::ready((response, Some(self.0.clone()))))
    }
}

#[tokio::test]
async fn a_stamp_is_written_into_the_head_and_wins_over_the_map() {
    let stamp = Stamp {
        request_id: HeaderValue::from_static("req-1"),
        rate: Some(crate::limit::RateInfo {
            limit_requests: Some(60),
            remaining_requests: Some(59),
            reset_requests: Some(Duration::from_secs(1)),
            ..Default::default()
        }),
        queue_wait: Some(Duration::from_millis(12)),
    };
    let (address, _closing) = server(Stamped(stamp)).await;
    let mut client = Client::connect(address).await;
    client.send(&post("/v1/chat/completions", "{}")).await;
    let answer = client.answer().await;
    let all = |name: &str| -> Vec<&str> {
        answer
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(all("x-request-id"), ["req-1"]);
    assert_eq!(all("x-ratelimit-limit-requests"), ["60"]);
    assert_eq!(all("x-ratelimit-remaining-requests"), ["59"]);
    assert_eq!(all("x-ratelimit-reset-requests"), ["1s"]);
    assert_eq!(all("x-lexora-queue-wait-ms"), ["12"]);
    // Not one of the stamp's: the map's stays.
    assert_eq!(all("x-ratelimit-limit-tokens"), ["9"]);
    assert_eq!(all("content-type"), ["application/json"]);
    assert_eq!(answer.body, "{}");
}
