"""Benchmarks that measure speed side by side in one process (never timed unit tests)."""
