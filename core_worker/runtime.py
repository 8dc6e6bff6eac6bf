"""Everything one worker process needs, built once per process (after fork)."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery

from core_worker.delivery import Deliverer
from core_worker.helper_calls import HelperCaller
from core_worker.helper_flow import HelperFlow
from core_worker.helper_limits import HelperCallLimit
from core_worker.llm import BackendConfig, LLMBackend
from core_worker.llm.model_process import ModelProcess
from core_worker.llm_metrics import instrument, last_generation
from core_worker.partial_delivery import PartialPoster
from core_worker.processor import SessionProcessor
from core_worker.sessions import SessionStore
from core_worker.streaming import PartialPublisher
from outbound_http.host_policy import HostPolicy
from redis_stores.deadletters import DeadLetters
from redis_stores.helper_registry import registry_from_settings
from redis_stores.messages import MessageStore
from redis_stores.redis_client import redis_client
from tasks.enqueue import QueuedTask, task_message
from tasks.keys import Keys
from tasks.names import CALL_HELPER, DELIVER_PARTIAL, DELIVER_REPLY, HANDLE_MESSAGE, helper_queue
from tasks.settings import Settings

__all__ = ["CoreRuntime", "backend_config", "model_threads"]

log = logging.getLogger(__name__)


def model_threads(settings: Settings, cores: int | None = None) -> int:
    """``LLM_THREADS``, or when 0 the measured best for the backend on this machine."""
    if settings.llm_threads > 0:
        return settings.llm_threads
    cores = cores or os.cpu_count() or 1
    return max(1, cores - 1) if settings.llm_backend == "ctransformers" else cores


def backend_config(settings: Settings) -> BackendConfig:
    return BackendConfig(
        backend=settings.llm_backend,
        model_path=settings.model_path or None,
        n_ctx=settings.llm_context,
        n_threads=model_threads(settings),
        max_tokens=settings.llm_max_tokens,
        temperature=settings.llm_temperature,
        use_mmap=settings.llm_use_mmap,
        prompt_cache_bytes=settings.llm_prompt_cache_mb * 1024 * 1024,
        parallel=settings.parallel_conversations,
        prefill_chunk=settings.llm_prefill_chunk,
        openai_base_url=settings.openai_base_url,
        openai_model=settings.openai_model,
        openai_api_key=settings.openai_api_key,
        request_timeout=settings.llm_request_timeout,
    )


class CoreRuntime:
    def __init__(self, settings: Settings, app: Celery) -> None:
        self.settings = settings
        self.app = app
        self.keys = Keys(settings.key_prefix)
        self.redis = redis_client(settings)
        self.messages = MessageStore(
            self.redis, self.keys,
            status_ttl=settings.status_ttl_seconds, idempotency_ttl=settings.idempotency_ttl_seconds,
        )
        self.sessions = SessionStore(
            self.redis, self.keys,
            lease_seconds=settings.session_lock_seconds, session_ttl=settings.session_ttl_seconds,
            status_ttl=settings.status_ttl_seconds, max_turns=settings.session_max_turns,
        )
        self.dead_letters = DeadLetters(self.redis, self.keys)
        self._llm: LLMBackend | None = None
        self._llm_lock = threading.Lock()
        policy = HostPolicy(settings.allowed_host_list)
        self.helpers = registry_from_settings(self.redis, self.keys, settings)
        self.processor = SessionProcessor(
            settings=settings, keys=self.keys, messages=self.messages, sessions=self.sessions,
            llm=self.llm, deliver=self.delivery_task, dead_letters=self.dead_letters,
            helpers=HelperFlow(self.helpers, self.llm, settings.system_prompt, settings.llm_max_tokens,
                               limit=HelperCallLimit(settings, self.redis)),
            call_helper=self.send_helper_call,
            partials=PartialPublisher(self.redis, self.keys, interval=settings.stream_interval_seconds,
                                      first_chars=settings.stream_first_chars, send_partial=self.send_partial),
        )
        self.partial_poster = PartialPoster(settings, policy)
        self.helper_caller = HelperCaller(
            settings=settings, messages=self.messages, registry=self.helpers, policy=policy, resume=self.resume,
        )
        self.deliverer = Deliverer(
            settings=settings, keys=self.keys, redis=self.redis, messages=self.messages,
            policy=policy, dead_letter=self.dead_letters.add,
        )

    def llm(self) -> LLMBackend:
        """The worker's one model, in a process of its own (core_worker/llm/model_process.py), started on
        first use; its task threads share it (``LLM_PARALLEL``)."""
        with self._llm_lock:
            if self._llm is None:
                config = backend_config(self.settings)
                log.info("loading %s backend from %s", config.backend, config.model_path)
                process = ModelProcess(config, load_timeout=self.settings.model_load_timeout)
                self._llm = instrument(process, config.backend, log_prompts=self.settings.llm_log_prompts)
            return self._llm

    def model_info(self) -> dict[str, Any]:
        """What this process's heartbeat says about its model (never loads it)."""
        path = self.settings.model_path or self.settings.model_file
        process = getattr(self._llm, "inner", None)
        return {"backend": self.settings.llm_backend, "model": os.path.basename(path) if path else None,
                "loaded": self._llm is not None, "last_generation": last_generation() or None,
                "parallel": self.settings.parallel_conversations,
                "model_pid": process.pid if isinstance(process, ModelProcess) else None}

    def delivery_task(self, payload: dict[str, Any]) -> QueuedTask:
        """The deliver task for ``payload``; the session store queues it atomically with the answer."""
        return task_message(self.app, DELIVER_REPLY, [payload])

    def send_partial(self, payload: dict[str, Any]) -> None:
        """A partial is worthless once the next one exists: it expires in the queue, is never retried, and
        its publish is not retried either (a broker hiccup must not hold up the model's loop)."""
        self.app.send_task(DELIVER_PARTIAL, args=[payload], expires=self.settings.stream_partial_ttl, retry=False)

    def send_helper_call(self, message_id: str, session_id: str, call: dict[str, Any]) -> None:
        self.app.send_task(CALL_HELPER, args=[message_id, session_id, call], queue=helper_queue(call["helper"]))

    def resume(self, message_id: str, session_id: str) -> None:
        self.app.send_task(HANDLE_MESSAGE, args=[message_id, session_id])

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None
