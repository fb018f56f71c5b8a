"""Benchmarks: whole `gravity` processes against the raw durable floor, 100,000 phases, agents at
scale, hosts in namespaces, profiles; the in-process matrix, CLI costs and peers (Luigi, Prefect).
Run `python -m bench` (or `bench/run`); the method and latest figures: docs/performance.md.
"""
