"""Custom health checks written in Lua, run as Argo CD runs them (Lua 5.1, like gopher-lua): the
script sees `obj` (the live object) and returns a table `{status = ..., message = ...}`.

Sandboxed: only the base functions, `string`, `table` and `math`; no `os`, `io`, `debug`,
`require` or loading of other code; a fresh interpreter per call with a memory ceiling and an
instruction budget, so a script that loops or allocates forever fails that resource's health
(Unknown, with the reason) instead of stalling or exhausting the daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lupa.lua51 as lua51

from daemon.model import Body, Health, HealthStatus

MAX_MEMORY = 32 * 1024 * 1024  # bytes one evaluation may allocate
MAX_INSTRUCTIONS = 10_000_000  # Lua VM instructions one evaluation may run

_SANDBOX = """
local sethook_, loadstring_, setfenv_ = debug.sethook, loadstring, setfenv
local safe = {
  ipairs = ipairs, pairs = pairs, next = next, select = select, type = type, unpack = unpack,
  tonumber = tonumber, tostring = tostring, error = error, pcall = pcall, assert = assert,
  string = string, table = table, math = math,
}
function run_sandboxed(src, obj, budget)
  local fn, err = loadstring_(src, 'health.lua')
  if fn == nil then error(err, 0) end
  local env = {obj = obj}
  for k, v in pairs(safe) do env[k] = v end
  setfenv_(fn, env)
  local used = 0
  sethook_(function()
    used = used + 1000
    if used > budget then error('the script ran longer than its budget', 0) end
  end, '', 1000)
  local ok, result = pcall(fn)
  sethook_()
  if not ok then error(result, 0) end
  return result
end
debug, os, io, package, require = nil, nil, nil, nil, nil
dofile, loadfile, load, loadstring = nil, nil, nil, nil
"""


def evaluate(script: str, obj: Body) -> Health:
    """Run one health script on `obj`; a failing or malformed script gives Unknown health."""
    runtime = lua51.LuaRuntime(
        unpack_returned_tuples=True, register_eval=False, max_memory=MAX_MEMORY
    )
    try:
        runtime.execute(_SANDBOX)
        table = runtime.table_from(obj, recursive=True)
        result = runtime.globals().run_sandboxed(script, table, MAX_INSTRUCTIONS)
    except (lua51.LuaError, lua51.LuaMemoryError) as e:
        return Health(HealthStatus.UNKNOWN, f"health script failed: {e}")
    if result is None or lua51.lua_type(result) != "table":
        return Health(HealthStatus.UNKNOWN, "health script returned no {status, message} table")
    fields: dict[str, Any] = dict(result.items())
    try:
        status = HealthStatus(str(fields.get("status")))
    except ValueError:
        return Health(
            HealthStatus.UNKNOWN, f"health script returned unknown status {fields.get('status')!r}"
        )
    return Health(status, str(fields.get("message") or ""))


def check(script: str) -> Callable[[Body], Health]:
    """A health check for one kind from its Lua script."""

    def run(obj: Body) -> Health:
        return evaluate(script, obj)

    return run
