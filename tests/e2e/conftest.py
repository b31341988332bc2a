"""Session fixtures for Lexora's end-to-end tests.

Processes started here (all on 127.0.0.1, all stopped at session end):

* ``lexora mock``                  -> fixture ``mock_engine``
* ``lexora serve`` in front of it  -> fixture ``mock_gateway``
* a real ``llama-server`` with a tiny generated GGUF model -> ``llama_server``
* ``lexora serve`` in front of it  -> fixture ``llama_gateway``

Binaries:

* ``LEXORA_BIN``   (default: ``<repo>/target/debug/lexora``; build it first
  with ``cargo build --bin lexora``)
* ``LLAMA_SERVER`` (default: the path printed by ``scripts/llama-server.sh``,
  which builds and caches llama-server on first use)

Every process's stderr goes to a file in a temporary directory; when a test
fails, the tail of each file is attached to the failure report.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import openai
import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]

STARTUP_TIMEOUT = 60.0  # seconds for a process to print its URL / become ready
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
STDERR_TAIL_LINES = 40

# Models the mock engine serves; the mock gateway lists them explicitly.
MOCK_MODELS = ("tiny", "small")
MOCK_CHUNKS = 16
MOCK_EMBEDDING_DIM = 16
# llama-server's alias for the tiny GGUF model.
LLAMA_MODEL = "tiny"
LLAMA_CTX = 2048
LLAMA_SLOTS = 2  # context per slot = LLAMA_CTX / LLAMA_SLOTS


# --------------------------------------------------------------------------
# Process management
# --------------------------------------------------------------------------


class ManagedProcess:
    """A child process started directly (no shell), so ``pid`` is its own."""

    def __init__(self, name: str, args: list[str], workdir: Path, owner: str | None = None) -> None:
        self.name = name
        # The fixture that owns this process, else the test that started it:
        # failure reports show the stderr of the processes a test used.
        self.owner = owner or os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
        self.args = [str(a) for a in args]
        self.workdir = workdir
        self.stderr_path = workdir / f"{name}.stderr.log"
        self.stdout_lines: "queue.Queue[str]" = queue.Queue()
        self.returncode: int | None = None
        self._stderr_file = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            self.args,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
        )
        self.pid = self.proc.pid
        # Drain stdout in the background so the pipe can never fill up.
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        _PROCESSES.append(self)

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.stdout_lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))

    def wait_for_line(self, prefix: str, timeout: float = STARTUP_TIMEOUT) -> str:
        """Return the first stdout line starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            try:
                line = self.stdout_lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.stdout_lines.empty():
                    self._fail(f"exited with {self.proc.returncode} before printing {prefix!r}")
                continue
            if line.startswith(prefix):
                return line
            seen.append(line)
        self._fail(f"did not print {prefix!r} within {timeout}s (stdout so far: {seen!r})")
        raise AssertionError("unreachable")

    def url_from_stdout(self, prefix: str) -> str:
        line = self.wait_for_line(prefix)
        url = line[len(prefix) :].strip()
        assert url.startswith("http://"), f"{self.name}: unexpected banner {line!r}"
        return url.rstrip("/")

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        try:
            if not self._stderr_file.closed:
                self._stderr_file.flush()
            text = self.stderr_path.read_text("utf-8", "replace")
        except OSError as err:
            return f"<cannot read {self.stderr_path}: {err}>"
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM, wait up to STOP_GRACE seconds, then SIGKILL."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_GRACE)
            except ProcessLookupError:
                pass
        self.returncode = self.proc.returncode
        self._reader.join(timeout=1)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr_file.close()
        return self.returncode

    def _fail(self, why: str) -> None:
        self.stop()
        pytest.fail(
            f"{self.name} (pid {self.pid}) {why}\n"
            f"command: {' '.join(self.args)}\n"
            f"--- stderr tail ({self.stderr_path}) ---\n{self.stderr_tail()}",
            pytrace=False,
        )


# Every process started in this session, for diagnostics on failure.
_PROCESSES: list[ManagedProcess] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _PROCESSES:
        used = set(getattr(item, "fixturenames", ())) | {item.nodeid}
        relevant = [proc for proc in _PROCESSES if proc.owner in used] or _PROCESSES
        for proc in relevant:
            state = "running" if proc.alive() else f"exited ({proc.proc.returncode})"
            report.sections.append(
                (
                    f"stderr tail: {proc.name} pid {proc.pid} [{state}]",
                    proc.stderr_tail(),
                )
            )


def wait_until(
    check: Callable[[], bool], what: str, timeout: float = STARTUP_TIMEOUT, proc: ManagedProcess | None = None
) -> None:
    """Poll ``check`` every 100 ms until it returns True."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            proc._fail(f"exited with {proc.proc.returncode} while waiting for {what}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError) as err:
            last_error = err
        time.sleep(0.1)
    message = f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})"
    if proc is not None:
        proc._fail(message)
    pytest.fail(message, pytrace=False)


def http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2.0).status_code == 200


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------
# Handles returned by the fixtures
# --------------------------------------------------------------------------


class MockEngine:
    def __init__(self, proc: ManagedProcess, url: str) -> None:
        self.proc = proc
        self.url = url

    def requests(self) -> list[dict[str, Any]]:
        """Bodies the engine received, newest last."""
        response = httpx.get(f"{self.url}/mock/requests", timeout=10.0)
        response.raise_for_status()
        return response.json()["requests"]

    def requests_containing(self, marker: str) -> list[dict[str, Any]]:
        """Received bodies whose JSON text contains ``marker``."""
        import json

        return [body for body in self.requests() if marker in json.dumps(body)]


class Gateway:
    def __init__(self, proc: ManagedProcess, url: str, config_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.base_url = f"{url}/v1"
        self.config_path = config_path

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=10.0, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=30.0, **kwargs)

    def stats(self) -> dict[str, Any]:
        response = self.get("/stats")
        assert response.status_code == 200, response.text
        return response.json()

    def health(self) -> dict[str, Any]:
        response = self.get("/health")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for_stats(self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 10.0) -> dict[str, Any]:
        """Poll /stats until ``predicate`` holds (stats may be recorded just
        after the response's last byte); returns the matching snapshot."""
        deadline = time.monotonic() + timeout
        snapshot = self.stats()
        while not predicate(snapshot):
            if time.monotonic() > deadline:
                pytest.fail(f"/stats never showed {what}; last snapshot: {snapshot}", pytrace=False)
            time.sleep(0.05)
            snapshot = self.stats()
        return snapshot

    def client(self, **kwargs: Any) -> openai.OpenAI:
        options: dict[str, Any] = {"base_url": self.base_url, "api_key": "e2e-test-key", "max_retries": 0, "timeout": 60.0}
        options.update(kwargs)
        return openai.OpenAI(**options)


def write_gateway_config(
    directory: Path,
    backend_name: str,
    backend_url: str,
    models: list[str] | None,
    backend_type: str = "openai-compatible",
    extra: tuple[str, ...] = (),
) -> Path:
    lines = [
        "server: {host: 127.0.0.1, port: 0}",
        "logging: {level: info, format: json}",
        "health: {check_interval: 0.5}",
        # Error cases inject engine failures: answer them at once instead of
        # retrying, and let the many test requests through the seed-000
        # default rate limit (both policies have their own Rust tests).
        "retry: {max_retries: 0}",
        "rate_limit: {enabled: false}",
        "backends:",
        f"  {backend_name}:",
        f"    type: {backend_type}",
        f"    url: {backend_url}",
        *extra,
    ]
    if models is not None:
        lines.append("    models: [" + ", ".join("{name: %s}" % m for m in models) + "]")
    path = directory / "lexora.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_gateway(lexora_bin: Path, directory: Path, name: str, config_path: Path, owner: str | None = None) -> Gateway:
    proc = ManagedProcess(
        name,
        [lexora_bin, "serve", "--config", config_path, "--host", "127.0.0.1", "--port", "0"],
        directory,
        owner=owner,
    )
    url = proc.url_from_stdout("lexora listening on ")
    wait_until(lambda: http_ok(f"{url}/health/ready"), f"{name} /health/ready", proc=proc)
    return Gateway(proc, url, config_path)


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lexora_bin() -> Path:
    path = Path(os.environ.get("LEXORA_BIN") or REPO_ROOT / "target" / "debug" / "lexora")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"lexora binary not found at {path}: run `cargo build --bin lexora` or set LEXORA_BIN", pytrace=False)
    return path


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    configured = os.environ.get("LLAMA_SERVER")
    if configured:
        path = Path(configured)
    else:
        script = REPO_ROOT / "scripts" / "llama-server.sh"
        # A cold build takes minutes; a cached binary is printed at once.
        result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=1800)
        if result.returncode != 0:
            pytest.fail(f"{script} failed ({result.returncode}):\n{result.stderr[-4000:]}", pytrace=False)
        path = Path(result.stdout.strip().splitlines()[-1])
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"llama-server binary not found at {path} (set LLAMA_SERVER)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def mock_engine(lexora_bin: Path, tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("mock-engine")
    args: list[Any] = [lexora_bin, "mock", "--host", "127.0.0.1", "--port", "0"]
    for model in MOCK_MODELS:
        args += ["--model", model]
    args += ["--chunks", MOCK_CHUNKS, "--embedding-dim", MOCK_EMBEDDING_DIM]
    proc = ManagedProcess("lexora-mock", args, directory, owner="mock_engine")
    try:
        url = proc.url_from_stdout("lexora mock engine listening on ")
        wait_until(lambda: http_ok(f"{url}/health"), "mock engine /health", proc=proc)
        yield MockEngine(proc, url)
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def mock_gateway(lexora_bin: Path, mock_engine: MockEngine, tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("gateway-mock")
    # Models listed explicitly: the gateway knows which exist without asking.
    config = write_gateway_config(directory, "engine", mock_engine.url, list(MOCK_MODELS))
    gateway = None
    try:
        gateway = start_gateway(lexora_bin, directory, "lexora-gateway-mock", config, owner="mock_gateway")
        yield gateway
    finally:
        if gateway is not None:
            gateway.proc.stop()


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("model")
    out = directory / "tiny.gguf"
    result = subprocess.run(
        [sys.executable, str(HERE / "make_tiny_gguf.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        pytest.fail(f"make_tiny_gguf.py failed:\n{result.stdout}\n{result.stderr}", pytrace=False)
    return out


@pytest.fixture(scope="session")
def llama_server(llama_server_bin: Path, tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("llama-server")
    proc = None
    url = ""
    try:
        # llama-server has no "port 0": pick a free port; retry if it was
        # taken between our check and the bind.
        for attempt in range(3):
            port = free_port()
            proc = ManagedProcess(
                f"llama-server-{attempt}",
                [
                    llama_server_bin,
                    "-m", tiny_gguf,
                    "--host", "127.0.0.1",
                    "--port", port,
                    "--alias", LLAMA_MODEL,
                    "-c", LLAMA_CTX,
                    "-np", LLAMA_SLOTS,
                    "--embeddings",
                    "--pooling", "mean",
                ],
                directory,
                owner="llama_server",
            )
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + STARTUP_TIMEOUT
            healthy = False
            while not healthy and proc.alive() and time.monotonic() < deadline:
                try:
                    healthy = http_ok(f"{url}/health")  # 503 while loading
                except httpx.HTTPError:
                    pass
                if not healthy:
                    time.sleep(0.1)
            if healthy and proc.alive():
                break
            if proc.alive():
                proc._fail(f"not healthy on {url} within {STARTUP_TIMEOUT}s")
            proc.stop()  # exited early (port taken?): try another port
        else:
            assert proc is not None
            proc._fail("could not start on a free port after 3 attempts")
        yield url
    finally:
        if proc is not None:
            proc.stop()


@pytest.fixture(scope="session")
def llama_gateway(lexora_bin: Path, llama_server: str, tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("gateway-llama")
    # No models list: the gateway learns them from the engine's /v1/models.
    # `llamacpp` tells Lexora the engine also speaks /v1/messages natively.
    config = write_gateway_config(directory, "llama", llama_server, None, backend_type="llamacpp")
    gateway = None
    try:
        gateway = start_gateway(lexora_bin, directory, "lexora-gateway-llama", config, owner="llama_gateway")
        yield gateway
    finally:
        if gateway is not None:
            gateway.proc.stop()


@pytest.fixture(scope="session")
def mock_client(mock_gateway: Gateway) -> openai.OpenAI:
    return mock_gateway.client()


@pytest.fixture(scope="session")
def llama_client(llama_gateway: Gateway) -> openai.OpenAI:
    return llama_gateway.client()


@pytest.fixture(scope="session")
def anthropic_style_gateway(lexora_bin: Path, mock_engine: MockEngine, tmp_path_factory: pytest.TempPathFactory):
    """Lexora in front of the mock engine speaking Anthropic's Messages API."""
    directory = tmp_path_factory.mktemp("gateway-anthropic")
    config = write_gateway_config(
        directory,
        "claude",
        mock_engine.url,
        [*MOCK_MODELS, "ghost"],
        backend_type="anthropic",
        extra=("    api_key: sk-ant-test-key",),
    )
    gateway = None
    try:
        gateway = start_gateway(lexora_bin, directory, "lexora-gateway-anthropic", config, owner="anthropic_style_gateway")
        yield gateway
    finally:
        if gateway is not None:
            gateway.proc.stop()


@pytest.fixture
def marker() -> str:
    """A unique word to find this test's request among the engine's."""
    return f"marker-{uuid.uuid4().hex[:12]}"
