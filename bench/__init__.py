"""Benchmarks of wabahook: `python -m bench --help`, and BENCHMARKS.md for the figures."""
