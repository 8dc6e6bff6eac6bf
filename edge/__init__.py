"""The channel side: every way a person reaches the system, and the work done on their side of the queue.

The Flask app (``app``: the JSON API, the web chat, uploads, helper registration, operator routes, the
channel webhooks under ``channels/`` and their signed reply callbacks), the convert worker
(``convert_worker``: media to text with ``media/``) and the IMAP poller.  It sends tasks to the core by
name and never imports ``core_worker``.
"""
