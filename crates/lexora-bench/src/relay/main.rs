//! `lexora-relay`: a TCP relay that reads no HTTP, the floor of any proxy in
//! the benchmark (issue 6).
//!
//! Each accepted connection gets one connection to its upstream and two
//! threads that do nothing but `read` from one socket and `write` what came
//! to the other, so a byte crosses it with the fewest system calls and
//! wake-ups a user-space proxy can have. Pinned where a proxy would be, the
//! latency it adds is what the machine charges for putting a process in the
//! path at all: a proxy's added time to first token cannot go below it.
//!
//! ```text
//! lexora-relay --to 127.0.0.1:8001 --to http://127.0.0.1:8002
//! listening on http://127.0.0.1:40001 for 127.0.0.1:8001
//! listening on http://127.0.0.1:40002 for 127.0.0.1:8002
//! ```
//!
//! One listener per `--to`, on a free port, printed in the order given.
//! Half-closes are passed on; an error on either side closes both. It is a
//! floor for the time a byte takes through a proxy, not for anything else: a
//! thread and an engine connection per client connection make it slow to
//! take many connections at once and heavy in memory.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::thread;

use anyhow::{anyhow, Context};
use clap::Parser;

#[cfg(test)]
mod tests;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(
    name = "lexora-relay",
    about = "A TCP relay that reads no HTTP: the floor of any proxy in the benchmark"
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

/// What each direction reads at once: a whole event or answer, as a proxy
/// would.
const BUFFER: usize = 16 * 1024;

/// Each relaying thread needs little more than its buffer, kept on its
/// stack: a small stack keeps a thousand connections (two thousand threads)
/// in a few MB, and no heap means no per-thread malloc arenas left behind.
const STACK: usize = 64 * 1024;

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
    let mut accepting = Vec::new();
    for to in &cli.to {
        let upstream = upstream(to)?;
        let listener = TcpListener::bind((cli.host.as_str(), 0))
            .with_context(|| format!("listening on {}", cli.host))?;
        println!(
            "listening on http://{} for {upstream}",
            listener.local_addr()?
        );
        accepting.push(thread::spawn(move || serve(&listener, upstream)));
    }
    io::stdout().flush()?;
    for thread in accepting {
        thread
            .join()
            .map_err(|_| anyhow!("an accepting thread panicked"))??;
    }
    Ok(())
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
fn serve(listener: &TcpListener, upstream: SocketAddr) -> anyhow::Result<()> {
    loop {
        let (client, _) = match listener.accept() {
            Ok(accepted) => accepted,
            // Out of descriptors or a connection reset before it was
            // taken: the listener itself is fine.
            Err(error) => {
                eprintln!("lexora-relay: accept: {error}");
                continue;
            }
        };
        thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || {
                if let Err(error) = connect(client, upstream) {
                    eprintln!("lexora-relay: {upstream}: {error}");
                }
            })
            .context("starting a relaying thread")?;
    }
}

/// Connects `client` to `upstream` and relays both ways until both
/// directions have ended.
fn connect(client: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_out, server_in) = (client.try_clone()?, server.try_clone()?);
    let answers = thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || pass(server_in, client_out))?;
    pass(client, server);
    // The other direction ends on its own: at the server's end of stream,
    // or at once when `pass` shut both sockets down after an error.
    let _ = answers.join();
    Ok(())
}

/// Copies `from` to `to` until `from` ends, then half-closes `to`. On an
/// error either way both sockets are shut down, which ends the other
/// direction too.
fn pass(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0; BUFFER];
    loop {
        match from.read(&mut buffer) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
