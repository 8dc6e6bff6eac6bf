"""The core side: the local LLM, one chat session per person, helper calls and signed delivery.

Three worker entry modules share one Celery app (``celery_app``): ``llm_worker`` (queue ``core``: the
model, in ``llm/``, driven by ``processor`` over ``sessions``), ``delivery_worker`` (``deliver``: signed
replies and the ``sweeper``) and ``helper_worker`` (``helper.<name>``: ``helper_calls``).  Only the first
loads a model.  It never imports ``edge``: channels are reached through their signed callbacks.
"""
