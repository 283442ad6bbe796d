"""Benchmarks: run with `make bench` (``python -m benchmarks.run_all``); not part of the test run."""
