"""Benchmarks (not tests): `python -m bench` or `make bench`. See bench/README.md."""
