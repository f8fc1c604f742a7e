"""Benchmarks, each a script: PYTHONPATH=. .venv/bin/python bench/NAME.py (see the Makefile)."""
