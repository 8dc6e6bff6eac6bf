"""The Celery app Flower watches: ``celery -A operator_tools.flower_app flower`` (see ``Procfile.flower``).

Only the broker settings: Flower learns task names from the workers' events,
so it need not import the worker code (nor a model library).
"""

from __future__ import annotations

from tasks.celery_factory import create_celery
from tasks.settings import load_settings

app = create_celery(load_settings(), main="switchboard-flower")
