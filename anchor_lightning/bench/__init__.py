"""Throughput benchmarks against peers (python -m anchor_lightning.bench)."""
