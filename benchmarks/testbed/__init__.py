"""The emulated edge testbed used by ``benchmarks/testbed_bench.py``.

Modules: :mod:`.schedule` (pure link schedules and chunk timing), :mod:`.proxy`
(the user-space TCP proxy adding delay, stalls and outages), :mod:`.netns` (the
namespace testbed or the loopback fallback), :mod:`.launch` (child processes),
:mod:`.probe` and :mod:`.loadgen` (helpers run inside the namespaces),
:mod:`.metrics` (per-run metrics from the agent's JSON lines, pure) and
:mod:`.report` (results.json -> Markdown table and PNG plots).
"""
