//! `lexora`: the LLM gateway binary. A thin shell over `lexora-core`:
//! parse the command line, load the config, run the chosen command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Parser, Subcommand};
use lexora_core::config::{self, Config, Layers, MockConfig};
use lexora_core::gateway::{ConfigLoader, Gateway};
use lexora_core::mock::MockEngine;
use lexora_core::{ingress, status, telemetry};
use tokio::net::{TcpListener, TcpSocket, ToSocketAddrs};
use tokio_util::sync::CancellationToken;

/// mimalloc instead of the system allocator: a request makes dozens of small
/// short-lived allocations (hyper, axum, JSON), and mimalloc's per-thread
/// free lists serve them in fewer instructions than glibc's malloc
/// (compare with `scripts/bench-callgrind.sh`). Built without transparent
/// huge pages (`no_thp` in Cargo.toml): with them an idle gateway's arenas
/// took 20 MB instead of 13.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lexora",
    version = status::VERSION,
    about = "Lexora: an LLM gateway in front of vLLM, llama.cpp, SGLang, Ollama and hosted providers",
    long_about = "Lexora speaks the OpenAI and Anthropic APIs to clients and forwards to inference \
                  engines and providers, adding priority queueing, per-user rate limits, retries, circuit \
                  breakers, routing, engine process management, health, statistics and metrics.\n\n\
                  Configuration: built-in defaults < config file (--config, $LEXORA_CONFIG, or \
                  config/lexora_config.yaml) < LEXORA_* environment variables (`__` nests, e.g. \
                  LEXORA_VLLM__URL) < command-line flags."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    #[command(alias = "server")]
    Serve(ServeArgs),
    /// Run the built-in OpenAI-compatible mock engine (for demos, tests, benchmarks).
    Mock(MockArgs),
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate FILE (with the LEXORA_* environment applied) and print the
    /// effective configuration, secrets masked. Exits 1 on error.
    Check {
        /// The YAML config file.
        file: PathBuf,
    },
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Config file (else $LEXORA_CONFIG, else config/lexora_config.yaml if present).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen address; overrides server.host.
    #[arg(long)]
    host: Option<String>,
    /// Listen port (0 picks a free one); overrides server.port.
    #[arg(long)]
    port: Option<u16>,
}

#[derive(Args)]
struct MockArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Model names served (repeatable).
    #[arg(long = "model", default_value = "mock")]
    models: Vec<String>,
    /// Milliseconds before every answer's first byte.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Streaming pace; 0 sends all chunks at once.
    #[arg(long, default_value_t = 0.0)]
    tokens_per_second: f64,
    /// Completion tokens per answer.
    #[arg(long, default_value_t = 16)]
    chunks: u32,
    /// Embedding vector length.
    #[arg(long, default_value_t = 8)]
    embedding_dim: u32,
    /// Stamp each stream event with the time it was written
    /// (`"mock_sent_us"`) and the time its request arrived
    /// (`"mock_received_us"`), for `lexora-bench` to time the way through a
    /// proxy.
    #[arg(long)]
    stamp_events: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => config_check(&file),
        Command::Serve(args) => runtime().and_then(|rt| rt.block_on(serve(args))),
        Command::Mock(args) => runtime().and_then(|rt| rt.block_on(mock(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lexora: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime, sized to the CPUs this process may run on
/// (`available_parallelism` honours the affinity mask: taskset, cpusets).
///
/// On one CPU, a single-threaded runtime: the thread that accepts
/// connections also serves them, so a new connection is not handed from
/// the main thread to a worker sharing the same core (a futex wake and a
/// context switch), and the work-stealing scheduler's bookkeeping on every
/// wake-up is gone: callgrind counts 7.6 % fewer instructions per
/// 64-chunk stream. On more CPUs, one worker thread per CPU, as tokio's
/// default.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn config_check(file: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(Some(file)).map_err(|e| anyhow!("{e}"))?;
    let text = config::to_yaml(&config.raw).context("printing the configuration")?;
    println!(
        "# {} is valid. Effective configuration (secrets masked):",
        file.display()
    );
    print!("{text}");
    Ok(())
}

fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let file = config::resolve_path(args.config.as_deref());
    let mut layers = Layers::from_file(file.as_deref()).map_err(|e| anyhow!("{e}"))?;
    layers
        .apply_env(std::env::vars(), &config::defaults_tree())
        .map_err(|e| anyhow!("{e}"))?;
    apply_flags(&mut layers, args);
    Config::from_layers(layers).map_err(|e| anyhow!("{e}"))
}

fn apply_flags(layers: &mut Layers, args: &ServeArgs) {
    if let Some(host) = &args.host {
        layers.set_flag(&["server", "host"], host.clone().into(), "--host");
    }
    if let Some(port) = args.port {
        layers.set_flag(&["server", "port"], port.into(), "--port");
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    let _log_guard = telemetry::init_logging(&config.logging);
    let metrics = if config.metrics.enabled {
        Some(
            telemetry::init_metrics()
                .map_err(|e| anyhow!("installing the metrics recorder: {e}"))?,
        )
    } else {
        None
    };

    let listeners = bind_listeners(&config.server).await?;
    let metrics_listener = match config.metrics.port.filter(|_| config.metrics.enabled) {
        Some(port) => Some(
            listen((config.server.host.as_str(), port))
                .await
                .with_context(|| format!("listening for metrics on port {port} (metrics.port)"))?,
        ),
        None => None,
    };
    let locals = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<Result<Vec<_>, _>>()
        .context("reading the listen address")?;

    match &config.file {
        Some(file) => tracing::info!(file = %file.display(), "configuration loaded"),
        None => tracing::info!("no config file; using defaults and LEXORA_* variables"),
    }
    for backend in &config.backends {
        let target = backend.url.as_ref().map_or_else(
            || "in-process".to_owned(),
            // Never log credentials embedded in a URL.
            |u| config::secret::without_userinfo(u.as_str()).into_owned(),
        );
        tracing::info!(backend = %backend.name, target = %target, models = ?backend.models, "backend configured");
    }
    let reload_args = args.clone();
    let loader: ConfigLoader = Arc::new(move || {
        let file = config::resolve_path(reload_args.config.as_deref());
        let mut layers = Layers::from_file(file.as_deref())?;
        layers.apply_env(std::env::vars(), &config::defaults_tree())?;
        apply_flags(&mut layers, &reload_args);
        Config::from_layers(layers)
    });
    let gateway = Gateway::new(config, metrics, loader).map_err(|e| anyhow!("{e}"))?;

    for local in locals {
        announce("lexora listening on", local);
        tracing::info!(address = %local, version = status::VERSION, "lexora listening");
    }
    let shutdown = CancellationToken::new();
    let signals = shutdown_on_signal(shutdown.clone());
    let reloads = reload_on_sighup(Arc::clone(&gateway));
    let result = ingress::serve(gateway, listeners, metrics_listener, shutdown).await;
    signals.abort();
    reloads.abort();
    tracing::info!("lexora stopped");
    result.context("serving")
}

async fn mock(args: MockArgs) -> anyhow::Result<()> {
    let engine = MockEngine::new(MockConfig {
        models: args.models,
        latency: Duration::from_millis(args.latency_ms),
        tokens_per_second: args.tokens_per_second,
        chunks: args.chunks,
        embedding_dim: args.embedding_dim.max(1),
        stamp_events: args.stamp_events,
    });
    let listener = listen((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("listening on {}:{}", args.host, args.port))?;
    let local = listener
        .local_addr()
        .context("reading the listen address")?;
    announce("lexora mock engine listening on", local);
    let shutdown = CancellationToken::new();
    let signals = shutdown_on_signal(shutdown.clone());
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let served = axum::serve(listener, engine.router())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    signals.abort();
    served.context("serving")
}

/// The one line on stdout: scripts and tests read the bound address here
/// (useful with `--port 0`).
/// `server.listen_v4` / `listen_v6` when set (seed 004), else
/// `server.host:port`.
async fn bind_listeners(server: &config::ServerConfig) -> anyhow::Result<Vec<TcpListener>> {
    if server.listen.is_empty() {
        let address = (server.host.as_str(), server.port);
        let listener = listen(address).await.with_context(|| {
            format!(
                "listening on {}:{} (server.host, server.port)",
                address.0, address.1
            )
        })?;
        return Ok(vec![listener]);
    }
    let mut listeners = Vec::with_capacity(server.listen.len());
    for address in &server.listen {
        let key = if address.is_ipv4() {
            "server.listen_v4"
        } else {
            "server.listen_v6"
        };
        listeners.push(
            listen(*address)
                .await
                .with_context(|| format!("listening on {address} ({key})"))?,
        );
    }
    Ok(listeners)
}

/// Connections the kernel completes and queues for a listener before it
/// accepts them (clamped to `net.core.somaxconn`). std's and tokio's 128
/// overflowed when 1,000 clients connected at once to a busy gateway: the
/// SYNs beyond were dropped, and those clients waited a second for their
/// retransmission (+1 s to the first token; nginx's default is 511).
const LISTEN_BACKLOG: u32 = 4096;

/// Listens on the first address `address` resolves to that can be bound,
/// as `TcpListener::bind` does, with a backlog of [`LISTEN_BACKLOG`].
async fn listen(address: impl ToSocketAddrs) -> std::io::Result<TcpListener> {
    let mut last = None;
    for address in tokio::net::lookup_host(address).await? {
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As std's bind: a restarted gateway can listen again at once,
        // without waiting out its old connections' TIME_WAIT.
        socket.set_reuseaddr(true)?;
        match socket
            .bind(address)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    }))
}

fn announce(what: &str, address: SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{what} http://{address}");
    let _ = out.flush();
}

/// Cancels `token` on SIGTERM or SIGINT.
fn shutdown_on_signal(token: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        token.cancel();
    })
}

/// Reloads the configuration on every SIGHUP; a bad file is logged and the
/// running configuration stays.
fn reload_on_sighup(gateway: Arc<Gateway>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hangups) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP; use POST /admin/reload");
                return;
            };
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                if let Err(error) = gateway.reload().await {
                    tracing::error!(%error, "reload refused; the running configuration stays");
                }
            }
        }
        #[cfg(not(unix))]
        drop(gateway);
    })
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
