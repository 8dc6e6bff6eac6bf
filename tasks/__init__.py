"""The contract shared by the edge and the workers: settings, names, schemas, Celery factory.

No Flask and no model code lives here; the edge imports this and never
``core_worker``.
"""
