"""Benchmarks: each ``python -m bench.NAME`` prints its figures and writes ``bench/results/NAME.json``
(``bench.record``) with the machine, date and command; ``scripts/make_figures.py`` turns those into
``docs/figures.md``."""
