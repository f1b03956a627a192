"""Benchmarks, each against its baseline in the same run; see bench/__main__.py."""
