"""gunicorn settings for the edge (``--config python:edge.gunicorn_conf``).

Threads, because ``GET /v1/messages/<id>?wait=S`` long-polls: a sync worker
would be held for S seconds per waiting client.  Waits get only part of the
threads (``LONG_POLL_SLOTS``, edge/waits.py), so the rest always serve
everything else.
"""

from tasks.settings import load_settings

_settings = load_settings()  # a setting that cannot be used stops gunicorn here, with its message

# honcho assigns each process its own PORT, so `make run` passes the edge's port as EDGE_PORT.
bind = f"{_settings.edge_host}:{_settings.edge_port or _settings.port}"
workers = _settings.edge_workers
worker_class = "gthread"
threads = _settings.edge_threads
timeout = _settings.edge_timeout
graceful_timeout = 20
keepalive = 5
control_socket_disable = True
# LOG_FORMAT=json (the default): gunicorn's own lines are JSON too, and the app logs one JSON line per request
# (edge/observability.py, with the message id when there is one) instead of the text access log.
_json_logs = _settings.log_format != "text"
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
forwarded_allow_ips = _settings.forwarded_allow_ips
