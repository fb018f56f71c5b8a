"""Benchmarks of the engine against the floor of raw store writes, the CLI and peer engines.
Run `python -m bench` (or `bench/run`); the method and latest figures: docs/performance.md.
"""
