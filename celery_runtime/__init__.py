"""What every Celery worker process runs, whichever side it serves.

The thread-pool time-limit watchdog, the broker-reconnect recovery step and the worker signals for logs,
heartbeats and task metrics.  The core's workers and the channel side's convert worker both use it; it
imports ``tasks``, ``redis_stores`` and ``telemetry``, never ``edge`` or ``core_worker``.
"""
