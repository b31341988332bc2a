-- The Lua twin of engines.yaml (seed 004 writes its configuration in Lua).
-- Globals are the config sections; plain Lua may compute values.
local binary = "/usr/local/bin/llama-server"
local weights = "/models/qwen3-8b-q4.gguf"

local function variant(name, context)
  return {
    name = name,
    binary = binary,
    args = { "-m", weights, "-c", tostring(context), "-np", "1", "-ngl", "99" },
    context = context,
  }
end

server = { host = "127.0.0.1", port = 8001 }
default_model = "qwen3-8b"
backends = {
  ["local"] = {
    type = "engine",
    timeout = 300,
    models = { { name = "qwen3-8b" } },
    engine = {
      ready_timeout = 120,
      drain_timeout = 60,
      stop_timeout = 10,
      idle_unload = 900,
      restart_backoff = 2,
      variants = { variant("ctx8k", 8192), variant("ctx32k", 32768) },
    },
  },
}
