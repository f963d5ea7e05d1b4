"""Benchmark and fault-injection scripts (``bench/chaos.py`` is also imported by tests)."""
