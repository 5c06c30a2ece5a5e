"""Reproducible benchmarks: training, model inference, the HTTP service and the main job.

`python -m benchmarks <name> [--smoke]` (or `make bench`) writes `benchmarks/results/<name>.json` and refreshes
the performance table in README.md. Smoke mode uses tiny sizes so CI can keep the code working; its figures
are not comparable with full runs.
"""
