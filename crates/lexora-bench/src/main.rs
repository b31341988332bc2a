//! `lexora-bench`: a load generator for OpenAI-style chat completions.
//!
//! Open loop (`--rate`, requests on a fixed timeline, latency from the
//! scheduled time) or closed loop (`--connections`, back-to-back requests
//! per connection); non-streamed or streamed (`--stream`: time to first
//! token and inter-event gaps). Prints one JSON object on stdout.
//!
//! ```text
//! lexora-bench --url http://127.0.0.1:8001/v1/chat/completions --rate 1000 --duration 5
//! lexora-bench --url http://127.0.0.1:8001/v1/chat/completions --connections 1
//! lexora-bench --url http://127.0.0.1:8001/v1/chat/completions --requests 2000 --warmup 0
//! ```

mod load;
mod report;
mod request;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use clap::Parser;
use http::header::{HeaderName, HeaderValue};
use serde::Serialize;

use crate::load::Window;
use crate::report::Summary;
use crate::request::Template;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(
    name = "lexora-bench",
    about = "Open/closed-loop load generator for chat completions (JSON out)"
)]
struct Cli {
    /// Full URL to POST to, e.g. http://127.0.0.1:8001/v1/chat/completions.
    #[arg(long)]
    url: String,
    /// Open loop: requests per second on a fixed timeline. Without it, closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Closed loop: concurrent connections, each sending back to back.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Closed loop: stop after this many requests (warm-up included), or at
    /// the end of `--duration`, whichever comes first.
    #[arg(long, conflicts_with = "rate")]
    requests: Option<u64>,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Request a stream (`"stream": true`) and time its events.
    #[arg(long)]
    stream: bool,
    /// Model name in the request body.
    #[arg(long, default_value = "m")]
    model: String,
    /// `max_tokens` in the request body.
    #[arg(long, default_value_t = 16)]
    max_tokens: u32,
    /// Send this file's bytes as the body instead (set `--stream` to match it).
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,
    /// Extra header `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Seconds before a request counts as a timeout.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Open loop: requests in flight at most (later ones wait, charged to latency).
    #[arg(long, default_value_t = 4096)]
    max_inflight: usize,
    /// Runtime worker threads (1 = single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A label copied into the output.
    #[arg(long, default_value = "")]
    label: String,
}

/// The printed result: the settings, then the measurements.
#[derive(Serialize)]
struct Output<'a> {
    label: &'a str,
    url: &'a str,
    mode: &'static str,
    target_rate: Option<f64>,
    connections: Option<usize>,
    stream: bool,
    warmup_s: f64,
    #[serde(flatten)]
    summary: Summary,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lexora-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let template = Arc::new(template(&cli)?);
    let window = Window {
        warmup: seconds(cli.warmup, "--warmup")?,
        duration: seconds(cli.duration, "--duration")?,
    };
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    }
    .context("starting the runtime")?;
    let summary = runtime.block_on(async {
        let client = request::client();
        match cli.rate {
            Some(rate) => load::open_loop(client, template, rate, window, cli.max_inflight).await,
            None => {
                load::closed_loop(client, template, cli.connections, window, cli.requests).await
            }
        }
    })?;
    let output = Output {
        label: &cli.label,
        url: &cli.url,
        mode: if cli.rate.is_some() { "open" } else { "closed" },
        target_rate: cli.rate,
        connections: cli.rate.is_none().then_some(cli.connections),
        stream: cli.stream,
        warmup_s: cli.warmup,
        summary,
    };
    println!("{}", serde_json::to_string(&output)?);
    Ok(())
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow!("{flag} must be a non-negative number of seconds"))
}

/// Builds the request every run sends.
fn template(cli: &Cli) -> anyhow::Result<Template> {
    let uri = cli
        .url
        .parse()
        .with_context(|| format!("--url {}", cli.url))?;
    let body = match &cli.body_file {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => {
            let mut body = serde_json::json!({
                "model": cli.model,
                "messages": [{"role": "user", "content": "Hello there"}],
                "max_tokens": cli.max_tokens,
            });
            if cli.stream {
                body["stream"] = serde_json::Value::Bool(true);
            }
            serde_json::to_vec(&body)?
        }
    };
    let headers = cli
        .headers
        .iter()
        .map(|line| parse_header(line))
        .collect::<anyhow::Result<_>>()?;
    Ok(Template {
        uri,
        body: Bytes::from(body),
        headers,
        stream: cli.stream,
        timeout: seconds(cli.timeout, "--timeout")?,
    })
}

fn parse_header(line: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| anyhow!("--header {line:?} is not `Name: value`"))?;
    Ok((
        HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("header name in {line:?}"))?,
        HeaderValue::from_str(value.trim()).with_context(|| format!("header value in {line:?}"))?,
    ))
}

#[cfg(test)]
mod tests;
