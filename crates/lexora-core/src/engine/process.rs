//! One engine child process: spawn it, copy its output into the log, watch
//! for its exit, stop it.
//!
//! The `Child` lives in a tracked watcher task, the only place that waits
//! on it, so exit is noticed (and the zombie reaped) as soon as it happens.
//! Everyone else sees the exit through a watch channel.

use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::{timeout, Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// After SIGKILL the kernel ends the process at once; this only bounds the
/// wait if the watcher task is already gone.
pub(super) const KILL_WAIT: Duration = Duration::from_secs(5);

/// How and when the child ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exit {
    /// `None` when waiting on the child failed.
    pub status: Option<ExitStatus>,
    pub at: Instant,
}

impl Exit {
    pub(crate) fn describe(&self) -> String {
        self.status
            .map_or_else(|| "unknown status".to_owned(), |s| s.to_string())
    }
}

/// Log fields of an engine: which model and variant the lines come from.
#[derive(Debug, Clone)]
pub(crate) struct Labels {
    pub model: Arc<str>,
    pub variant: Arc<str>,
}

/// A running (or exited) engine process. Dropping it kills the child.
#[derive(Debug)]
pub(crate) struct EngineProcess {
    pid: u32,
    exit: watch::Receiver<Option<Exit>>,
    /// Cancelled to make the watcher SIGKILL the child.
    kill: CancellationToken,
    /// Set before a requested stop, so the exit is not logged as a crash.
    stopping: Arc<AtomicBool>,
}

impl EngineProcess {
    /// Spawn `binary args --host 127.0.0.1 --port PORT`.
    pub(crate) fn spawn(
        binary: &Path,
        args: &[String],
        port: u16,
        labels: &Labels,
        tasks: &TaskTracker,
    ) -> io::Result<Self> {
        let mut command = Command::new(binary);
        command
            .args(args)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A backstop: if every owner is dropped without stop(), the
            // child is still killed.
            .kill_on_drop(true);
        die_with_parent(&mut command);
        let mut child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the engine exited before it had a pid"))?;
        if let Some(out) = child.stdout.take() {
            tasks.spawn(forward_lines(out, "stdout", labels.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tasks.spawn(forward_lines(err, "stderr", labels.clone()));
        }
        let (exit_tx, exit) = watch::channel(None);
        let kill = CancellationToken::new();
        let stopping = Arc::new(AtomicBool::new(false));
        tasks.spawn(watch_child(
            child,
            pid,
            exit_tx,
            kill.clone(),
            stopping.clone(),
            labels.clone(),
        ));
        Ok(Self {
            pid,
            exit,
            kill,
            stopping,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit, once the child has ended.
    pub(crate) fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// Stop gracefully: SIGTERM, then SIGKILL after `grace`.
    pub(crate) async fn stop(&self, grace: Duration) -> Option<Exit> {
        self.stopping.store(true, Ordering::Relaxed);
        if let Some(exit) = self.exited() {
            return Some(exit);
        }
        // The watcher reaps the child the moment it exits, so a PID we see
        // as not exited is still ours (barring a microsecond race).
        if !send_sigterm(self.pid).await {
            self.kill.cancel();
        }
        if let Some(exit) = self.wait_exit(grace).await {
            return Some(exit);
        }
        tracing::warn!(
            target: "lexora::engine",
            pid = self.pid,
            grace_s = grace.as_secs_f64(),
            "engine ignored SIGTERM; killing it"
        );
        self.kill.cancel();
        self.wait_exit(KILL_WAIT).await
    }

    async fn wait_exit(&self, limit: Duration) -> Option<Exit> {
        let mut rx = self.exit.clone();
        let exit = match timeout(limit, rx.wait_for(Option::is_some)).await {
            Ok(Ok(exit)) => *exit,
            _ => None,
        };
        exit
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        self.kill.cancel();
    }
}

/// tokio can only send SIGKILL, and the workspace has no libc/nix
/// dependency, so SIGTERM goes through `kill(1)`. False if that failed.
async fn send_sigterm(pid: u32) -> bool {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    match status {
        Ok(status) => status.success(),
        Err(error) => {
            tracing::warn!(target: "lexora::engine", pid, %error, "could not run kill(1)");
            false
        }
    }
}

async fn watch_child(
    mut child: Child,
    pid: u32,
    exit_tx: watch::Sender<Option<Exit>>,
    kill: CancellationToken,
    stopping: Arc<AtomicBool>,
    labels: Labels,
) {
    let status = tokio::select! {
        status = child.wait() => status.ok(),
        () = kill.cancelled() => {
            // Ignore the error: the child may have exited in between.
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    };
    let exit = Exit {
        status,
        at: Instant::now(),
    };
    let (model, variant) = (&*labels.model, &*labels.variant);
    if stopping.load(Ordering::Relaxed) {
        tracing::info!(target: "lexora::engine", model = %model, variant = %variant, pid, status = %exit.describe(), "engine stopped");
    } else {
        tracing::warn!(target: "lexora::engine", model = %model, variant = %variant, pid, status = %exit.describe(), "engine exited unexpectedly");
    }
    exit_tx.send_replace(Some(exit));
}

/// Copy an engine's output into the log, one event per line. Ends when the
/// child closes the pipe (it exits). Lines are read as bytes and converted
/// lossily: stopping on bad UTF-8 would close the pipe and let the engine
/// die of SIGPIPE.
async fn forward_lines<R: AsyncRead + Unpin>(pipe: R, stream: &'static str, labels: Labels) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    let (model, variant) = (&*labels.model, &*labels.variant);
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end();
                if !line.is_empty() {
                    tracing::info!(target: "lexora::engine", model = %model, variant = %variant, stream = %stream, "{line}");
                }
            }
            Err(error) => {
                tracing::debug!(target: "lexora::engine", model = %model, variant = %variant, stream = %stream, %error, "stopped reading engine output");
                return;
            }
        }
    }
}

/// The kernel kills the engine when Lexora dies, however it dies (SIGKILL,
/// abort, OOM killer): without this, a crashed gateway would leave engines
/// holding GPU memory. Linux only. The signal follows the death of the
/// thread that spawned the child; that is a runtime worker thread, which
/// lives as long as the gateway.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only
    // calls async-signal-safe functions (prctl, getppid, _exit).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}
