"""gunicorn settings for the edge (``--config python:edge.gunicorn_conf``).

Threads, because ``GET /v1/messages/<id>?wait=S`` long-polls: a sync worker
would be held for S seconds per waiting client.  Waits get only part of the
threads (``LONG_POLL_SLOTS``, edge/waits.py), so the rest always serve
everything else.
"""

import os

from tasks.settings import load_settings

_settings = load_settings()  # a setting that cannot be used stops gunicorn here, with its message

# honcho assigns each process its own PORT, so `make run` passes the edge's port as EDGE_PORT.
_port = os.environ.get("EDGE_PORT") or os.environ.get("PORT") or "8000"
bind = f"{os.environ.get('EDGE_HOST', '127.0.0.1')}:{_port}"
workers = int(os.environ.get("EDGE_WORKERS", "2"))
worker_class = "gthread"
threads = _settings.edge_threads
timeout = int(os.environ.get("EDGE_TIMEOUT", "60"))
graceful_timeout = 20
keepalive = 5
control_socket_disable = True
# LOG_FORMAT=json (the default): gunicorn's own lines are JSON too, and the app logs one JSON line per request
# (edge/observability.py, with the message id when there is one) instead of the text access log.
_json_logs = os.environ.get("LOG_FORMAT", "json") != "text"
accesslog = None if _json_logs else "-"
if _json_logs:
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "telemetry.logs.ContextFilter", "role": "edge"}},
        "formatters": {"json": {"()": "telemetry.logs.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["context"],
                                "stream": "ext://sys.stderr"}},
        # gunicorn merges this over its defaults key by key: root and both loggers must be given whole.
        "root": {"level": "INFO", "handlers": []},
        "loggers": {"gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
                    "gunicorn.access": {"handlers": [], "level": "INFO", "propagate": False}},
    }
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
