-- Lexora gateway configuration (Lua). config/examples/gateway.yaml is its
-- twin: both load to the same effective configuration. Check either with
-- `lexora config check FILE`.
--
-- Every global variable this script defines is a top-level section, with
-- the same keys as in YAML; `local` variables and functions are not
-- exported, so they can hold helpers. The script runs in a sandbox: string,
-- table, math and utf8 only (no io, os or require). Settings from the
-- environment come as LEXORA_ variables laid over the result, e.g.
-- LEXORA_SERVER__PORT=9000.
--
-- Lua tables keep no order, so the sections below can be written in any.

local MiB = 1024 * 1024

-- A model served from a local weights directory.
local function local_model(name, gpu_share)
  return { name = name, path = "/models/" .. name, gpu_memory_utilization = gpu_share }
end

server = {
  host = "127.0.0.1",
  port = 7777,
  max_body_size = 16 * MiB,
  shutdown_grace = 30,
}

-- Used when a request names no model.
default_model = "qwen3-32b"

backends = {
  vllm = {
    type = "openai-compatible",
    url = "http://127.0.0.1:8000",
    timeout = 300,
    connect_timeout = 5,
    max_concurrency = 8,
    models = {
      local_model("qwen3-32b", 0.9),
      local_model("qwen3-8b", 0.9),
    },
  },

  llamacpp = {
    type = "openai-compatible",
    url = "http://127.0.0.1:8080",
    timeout = 600,
    max_concurrency = 2,
    models = {
      { name = "gemma-3-4b", path = "/models/gemma-3-4b.gguf" },
    },
  },

  -- Answers in-process; handy for trying the gateway without an engine.
  demo = {
    type = "mock",
    models = { { name = "mock" } },
    mock = { latency_ms = 20, tokens_per_second = 50, chunks = 16, embedding_dim = 8 },
  },
}

-- Tried in order when no backend of the requested model can answer.
fallbacks = {
  ["qwen3-32b"] = { "qwen3-8b", "gemma-3-4b" },
}

health = { check_interval = 10, check_timeout = 2 }

queue = {
  max_size = 100,
  default_timeout = 60,
  priorities = { high = 1, normal = 5, low = 10 },
  aging_seconds = 1,
}

rate_limits = {
  default = { requests_per_minute = 30, tokens_per_minute = 50000 },
  users = {
    takahito = { requests_per_minute = 60, tokens_per_minute = 100000 },
  },
}

retry = { max_retries = 2, base_delay = 0.5, max_delay = 10, exponential_base = 2 }

circuit_breaker = { enabled = true, failure_threshold = 5, timeout = 30 }

logging = { level = "info", format = "console" }

metrics = { enabled = true, port = 9090 }
