"""Offline tools, never imported at run time: evaluation, fitting of shipped weights, benchmarks, a throwaway PostgreSQL."""
