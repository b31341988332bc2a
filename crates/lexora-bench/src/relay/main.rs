//! `lexora-relay`: a TCP relay that reads no HTTP, the floor of an
//! event-loop proxy in the benchmark (issue 6).
//!
//! One thread and one event loop (tokio's, as Lexora's), and for each
//! accepted connection one connection of its own to the upstream; bytes
//! are read from one socket and written to the other as they come, with
//! nothing parsed, checked or counted. Pinned where a proxy would be, the
//! latency it adds is what this machine charges for putting an event-loop
//! process in the path at all, and what a proxy adds beyond it is its own
//! work.
//!
//! ```text
//! lexora-relay --to 127.0.0.1:8001 --to http://127.0.0.1:8002
//! listening on http://127.0.0.1:40001 for 127.0.0.1:8001
//! listening on http://127.0.0.1:40002 for 127.0.0.1:8002
//! ```
//!
//! One listener per `--to`, on a free port, printed in the order given.
//! Half-closes are passed on; an error on either side closes both.

use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Parser;
use tokio::net::{TcpListener, TcpStream};

#[cfg(test)]
mod tests;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(
    name = "lexora-relay",
    about = "A TCP relay that reads no HTTP: the floor of an event-loop proxy in the benchmark"
)]
struct Cli {
    /// Upstream `host:port` (or `http://host:port`) to relay to; one listener
    /// for each (repeatable).
    #[arg(long = "to", required = true)]
    to: Vec<String>,
    /// Address to listen on (each listener on a free port).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
}

/// What each direction reads at once: a whole answer or event, as a proxy
/// would.
const BUFFER: usize = 16 * 1024;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lexora-relay: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let mut accepting = Vec::new();
        for to in &cli.to {
            let upstream = upstream(to)?;
            let listener = TcpListener::bind((cli.host.as_str(), 0))
                .await
                .with_context(|| format!("listening on {}", cli.host))?;
            println!(
                "listening on http://{} for {upstream}",
                listener.local_addr()?
            );
            accepting.push(tokio::spawn(serve(listener, upstream)));
        }
        io::stdout().flush()?;
        for task in accepting {
            task.await?;
        }
        Ok(())
    })
}

/// The socket address `--to` names.
fn upstream(to: &str) -> anyhow::Result<SocketAddr> {
    let authority = to.strip_prefix("http://").unwrap_or(to);
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    authority
        .to_socket_addrs()
        .with_context(|| format!("--to {to}"))?
        .next()
        .ok_or_else(|| anyhow!("--to {to}: no address"))
}

/// Accepts connections for ever, relaying each to `upstream`.
async fn serve(listener: TcpListener, upstream: SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(async move {
                    if let Err(error) = relay(client, upstream).await {
                        eprintln!("lexora-relay: {upstream}: {error}");
                    }
                });
            }
            // Out of descriptors, most likely: the listener itself is fine,
            // and trying again at once would only spin.
            Err(error) => {
                eprintln!("lexora-relay: accept: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Connects `client` to `upstream` and relays both ways until both
/// directions have ended (each end of stream passed on as a half-close).
async fn relay(mut client: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, BUFFER, BUFFER).await?;
    Ok(())
}
