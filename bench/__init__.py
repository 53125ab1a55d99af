"""Benchmarks (see README.md); run with `make bench`."""
