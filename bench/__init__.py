"""crew-mcp's benchmarks: ``make bench`` (``python -m bench``) runs them all and rewrites docs/benchmarks.md.

Every figure is a ratio against a baseline measured in the same run, interleaved, because absolute times drift
on a shared machine. Servers run as real subprocesses (stdio or streamable HTTP) against the AMP simulator
served on loopback with zero-latency crews, so what is measured is the bridge.
"""
