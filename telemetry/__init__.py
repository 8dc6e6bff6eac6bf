"""Observability shared by every process: structured logs, worker heartbeats, Prometheus metrics.

The metrics recorder is the one process-wide object here (a flush thread per process, restarted after
fork); everything else is configured by the process's entry module.
"""
