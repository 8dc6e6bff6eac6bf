"""The contract both sides agree on, and nothing else.

Task names and queue routes (``names``), the envelope and request schemas (``schemas``), every setting
(``settings``), every Redis key (``keys``), callback signing (``signing``), the task-message builder
(``enqueue``) and the Celery factory with its broker transport (``celery_factory``, ``broker_transport``).
It imports no other project package, starts no thread and opens no connection at import: the edge, the
workers and the tools all import it.  What runs on top of it lives in ``redis_stores``, ``telemetry``,
``outbound_http``, ``celery_runtime`` and ``operator_tools``.
"""
