"""Benchmarks: `make bench` (or `python -m bench [name ...]`).

Each benchmark measures the service doing a piece of work through its real
API (a uvicorn server on loopback) and the raw driver doing the same work in
the same run, and prints the ratio. No wall-clock thresholds live in tests.
"""
