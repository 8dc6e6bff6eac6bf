"""Benchmarks of Switchboard (``python bench/pipeline.py``); not part of the installed product."""
