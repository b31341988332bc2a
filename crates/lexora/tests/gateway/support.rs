//! Starting and stopping `lexora` processes for tests.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_lexora");

/// A running `lexora` process, killed on drop.
pub struct Process {
    child: Child,
    pub url: String,
    pub stderr_path: PathBuf,
    _dir: TempDir,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends the signal `name` (`TERM`, `STOP`, `CONT` …).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("lexora-it-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spawn(args: &[&str], env: &[(&str, &str)], dir: TempDir) -> Process {
    spawn_listening(&[], args, env, dir, 1).0
}

/// Starts `lexora` (through `launcher`, a command that execs it, such as
/// `taskset -c 0`, when given) and reads the URLs of its first `listeners`
/// announce lines (one per listener).
fn spawn_listening(
    launcher: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
    dir: TempDir,
    listeners: usize,
) -> (Process, Vec<String>) {
    let stderr_path = dir.0.join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut command = match launcher.split_first() {
        Some((program, launcher_args)) => {
            let mut command = Command::new(program);
            command.args(launcher_args).arg(BIN);
            command
        }
        None => Command::new(BIN),
    };
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("LEXORA_") {
            command.env_remove(key);
        }
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("start lexora");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut urls = Vec::with_capacity(listeners);
    for _ in 0..listeners {
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .split_whitespace()
            .last()
            .filter(|u| u.starts_with("http://"))
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("lexora did not announce its address: {line:?}\n{log}")
            })
            .to_owned();
        urls.push(url);
    }
    let process = Process {
        child,
        url: urls[0].clone(),
        stderr_path,
        _dir: dir,
    };
    (process, urls)
}

/// `lexora serve --config FILE` without address flags, for configs that
/// name their own listeners; returns each listener's URL.
pub fn gateway_listening(config: &str, listeners: usize) -> (Process, Vec<String>) {
    let dir = TempDir::new();
    let path = write_config(&dir, config);
    spawn_listening(&[], &["serve", "--config", &path], &[], dir, listeners)
}

/// `lexora serve` with `config`, allowed to run on CPU 0 only (`taskset`).
pub fn gateway_on_one_cpu(config: &str) -> Process {
    let dir = TempDir::new();
    let path = write_config(&dir, config);
    spawn_listening(&["taskset", "-c", "0"], &serve_args(&path), &[], dir, 1).0
}

/// `lexora mock` with extra flags.
pub fn mock(flags: &[&str]) -> Process {
    let mut args = vec![
        "mock",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--model",
        "m1",
        "--model",
        "m2",
    ];
    args.extend_from_slice(flags);
    spawn(&args, &[], TempDir::new())
}

/// `lexora serve` with `config` (YAML) written to a temp file.
pub fn gateway_with_env(config: &str, env: &[(&str, &str)]) -> Process {
    let dir = TempDir::new();
    let path = write_config(&dir, config);
    spawn(&serve_args(&path), env, dir)
}

/// `lexora serve --config PATH` for a file the test keeps editing.
pub fn gateway_at(path: &std::path::Path) -> Process {
    let path = path.to_str().expect("utf8 path").to_owned();
    spawn(&serve_args(&path), &[], TempDir::new())
}

/// `serve --config PATH` on a free loopback port.
fn serve_args(path: &str) -> [&str; 7] {
    [
        "serve",
        "--config",
        path,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ]
}

fn write_config(dir: &TempDir, config: &str) -> String {
    let path = dir.0.join("lexora.yaml");
    std::fs::write(&path, config).expect("write config");
    path.to_str().expect("utf8 path").to_owned()
}

pub fn gateway(config: &str) -> Process {
    gateway_with_env(config, &[])
}

/// A gateway in front of `engine` with both mock models listed, without
/// retries or rate limits (tests of those policies configure them).
pub fn gateway_for(engine: &Process, extra: &str) -> Process {
    gateway(&format!(
        "health:\n  check_interval: 0.2\nretry:\n  max_retries: 0\nrate_limit:\n  enabled: false\nbackends:\n  engine:\n    url: {}\n    models:\n      - name: m1\n      - name: m2\n{extra}",
        engine.url
    ))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

pub async fn post(url: &str, body: Value) -> reqwest::Response {
    client().post(url).json(&body).send().await.expect("send")
}

pub async fn get_json(url: &str) -> Value {
    client()
        .get(url)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json")
}

/// A gateway's `/metrics` page.
pub async fn metrics_text(gw: &Process) -> String {
    client()
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The bodies the mock engine received, oldest first.
pub async fn engine_requests(engine: &Process) -> Vec<Value> {
    let value = get_json(&format!("{}/mock/requests", engine.url)).await;
    value["requests"].as_array().cloned().unwrap_or_default()
}

/// Polls `check` every 20 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Parses SSE text into the JSON payloads of its `data:` lines (and
/// `"[DONE]"` as a string).
pub fn sse_payloads(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|data| serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_owned())))
        .collect()
}

/// The chat completions URL of a gateway.
pub fn chat_url(gw: &Process) -> String {
    format!("{}/v1/chat/completions", gw.url)
}

/// The status and OpenAI error `code` of an error response.
pub async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json");
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}
