-- The Lua twin of engines.yaml (seed 004 writes its configuration in Lua).
-- Globals are the config sections; plain Lua may compute values.
local binary = "/usr/local/bin/llama-server"

local function variant(weights, name, context, memory_mb)
  return {
    name = name,
    binary = binary,
    args = { "-m", weights, "-c", tostring(context), "-np", "1", "-ngl", "99" },
    context = context,
    memory_mb = memory_mb,
  }
end

local qwen = "/models/qwen3-8b-q4.gguf"

server = { listen_v4 = "127.0.0.1:7777", listen_v6 = "[::1]:7777" }
default_model = "qwen3-8b"
engines = { memory_budget_mb = 24000, min_loaded = 30 }
backends = {
  qwen = {
    type = "engine",
    timeout = 300,
    models = { { name = "qwen3-8b" } },
    endpoints = { "chat", "completions", "messages", "count_tokens" },
    request_fields = { set = { cache_prompt = true } },
    engine = {
      ready_timeout = 120,
      drain_timeout = 60,
      stop_timeout = 10,
      idle_unload = 900,
      restart_backoff = 2,
      variants = { variant(qwen, "ctx8k", 8192, 7000), variant(qwen, "ctx32k", 32768, 11000) },
    },
  },
  gemma = {
    type = "engine",
    timeout = 300,
    models = { { name = "gemma3-12b" } },
    engine = {
      idle_unload = 900,
      variants = { variant("/models/gemma3-12b-q4.gguf", "ctx16k", 16384, 14000) },
    },
  },
}
