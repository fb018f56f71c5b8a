"""Fault injection against real gravity processes and a real etcd, with an invariant checker.
Run with `python -m chaos --trials N --seed S`; the method is in docs/reliability.md.
"""
