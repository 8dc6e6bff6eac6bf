"""Backend for any OpenAI-compatible server (llama.cpp's, llama-cpp-python's, vLLM, ...).

It lets the model run outside the worker processes: one server shared by all
workers instead of one model copy per process.  The server applies its own
chat template, so prompts are not rendered here.

Up to ``config.parallel`` requests are in flight at once (the worker's
``LLM_PARALLEL`` conversations), so a server that batches (llama.cpp's
``llama-server --parallel N``, vLLM) decodes them together.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import requests

from .base import BackendConfig, ChatMessage, Completion, GenerationError, ModelLoadError, Progress

__all__ = ["OpenAIBackend"]


class OpenAIBackend:
    """Talks HTTP to ``{openai_base_url}/chat/completions``; holds no model itself."""

    name = "openai"
    constrains_json = True
    streams = True  # ``chat(on_progress=…)`` asks the server for ``stream: true`` (server-sent events)

    def __init__(self, config: BackendConfig) -> None:
        base = config.openai_base_url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ModelLoadError(f"openai_base_url must be an http(s) URL, got {config.openai_base_url!r}")
        self._config = config
        self._base = base
        # Tokenize endpoints live outside /v1 on llama.cpp-style servers.
        self._root = base[: -len("/v1")] if base.endswith("/v1") else base
        # The server does not report its window through the OpenAI API, so we
        # trust the configured one; set n_ctx to the server's --n_ctx.
        self.context_length = config.n_ctx
        # requests.Session is not documented as thread-safe, so each request in flight has a Session
        # of its own: at most `parallel` of them, made as needed and reused (kept-alive connections).
        self._slots = threading.BoundedSemaphore(max(1, config.parallel))
        self._sessions_lock = threading.Lock()
        self._sessions: list[requests.Session] = []
        self._idle: list[requests.Session] = []
        # Which tokenize endpoint works; "" = none does.  Threads that ask at once may each probe,
        # and all settle on the same answer.
        self._tokenizer: str | None = None

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        session.headers["Content-Type"] = "application/json"
        if self._config.openai_api_key:
            session.headers["Authorization"] = f"Bearer {self._config.openai_api_key}"
        self._sessions.append(session)
        return session

    @contextmanager
    def _session(self) -> Iterator[requests.Session]:
        """A Session no other thread is using, held for one whole request (a stream included);
        waits while ``parallel`` requests are in flight, so the server never gets more than that."""
        with self._slots:
            with self._sessions_lock:
                session = self._idle.pop() if self._idle else self._new_session()
            try:
                yield session
            finally:
                with self._sessions_lock:
                    self._idle.append(session)

    def _post(self, url: str, payload: dict[str, Any], timeout: float) -> requests.Response:
        with self._session() as session:
            return session.post(url, json=payload, timeout=timeout)

    def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        stop: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None,
        on_progress: Progress | None = None,
    ) -> Completion:
        payload: dict[str, Any] = {
            "model": self._config.openai_model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": self._config.max_tokens if max_tokens is None else max_tokens,
            "temperature": self._config.temperature,
            "stream": False,
        }
        if stop:
            payload["stop"] = list(stop)
        if json_schema is not None:  # llama.cpp's server enforces it; others may only hint (callers validate)
            payload["response_format"] = {"type": "json_object", "schema": json_schema}
        if self._config.seed is not None:
            payload["seed"] = self._config.seed
        url = f"{self._base}/chat/completions"
        if on_progress is not None:
            return self._chat_streaming(url, payload, on_progress)
        try:
            resp = self._post(url, payload, self._config.request_timeout)
        except requests.RequestException as exc:
            raise GenerationError(f"POST {url} failed: {exc}") from exc
        if resp.status_code >= 400:
            raise GenerationError(f"POST {url} returned HTTP {resp.status_code}: {resp.text[:500]}")
        try:
            body = resp.json()
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
            usage = body.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise GenerationError(f"POST {url} returned an unexpected body: {resp.text[:500]}") from exc
        finish = choice.get("finish_reason") or "stop"
        return Completion(
            text=str(text).strip(),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason="length" if finish == "length" else "stop",
        )

    def _chat_streaming(self, url: str, payload: dict[str, Any], on_progress: Progress) -> Completion:
        """The same request with ``stream: true``: text deltas arrive as server-sent events.

        ``stream_options.include_usage`` asks for the usage chunk OpenAI and llama.cpp's server send
        last; a server that sends none (llama-cpp-python's) is counted one token per content event
        and 0 prompt tokens, as a non-streaming reply without ``usage`` is.
        """
        payload = {**payload, "stream": True, "stream_options": {"include_usage": True}}
        pieces: list[str] = []
        usage: dict[str, Any] = {}
        finish = "stop"
        events = 0
        with self._session() as session:
            try:
                resp = session.post(url, json=payload, timeout=self._config.request_timeout, stream=True)
            except requests.RequestException as exc:
                raise GenerationError(f"POST {url} failed: {exc}") from exc
            with resp:
                if resp.status_code >= 400:
                    raise GenerationError(f"POST {url} returned HTTP {resp.status_code}: {resp.text[:500]}")
                try:
                    for chunk in _sse_json(resp.iter_lines(decode_unicode=True)):
                        usage = chunk.get("usage") or usage
                        for choice in chunk.get("choices") or ():
                            content = (choice.get("delta") or {}).get("content")
                            if content:
                                pieces.append(str(content))
                                events += 1
                                on_progress(lambda: "".join(pieces))
                            finish = choice.get("finish_reason") or finish
                except requests.RequestException as exc:
                    raise GenerationError(f"POST {url} stream broke off: {exc}") from exc
                except (ValueError, TypeError, AttributeError) as exc:
                    raise GenerationError(f"POST {url} streamed an unexpected event: {exc}") from exc
        return Completion(
            text="".join(pieces).strip(),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or events),
            finish_reason="length" if finish == "length" else "stop",
        )

    def count_tokens(self, text: str) -> int:
        """Exact count from the server's tokenize endpoint when it has one
        (llama-cpp-python ``/extras/tokenize/count``, llama.cpp ``/tokenize``);
        otherwise an estimate of one token per 4 characters, which errs on the
        high side for English, so trimming stays safe."""
        if not text:
            return 0
        if self._tokenizer is None:
            self._tokenizer = self._probe_tokenizer()
        if self._tokenizer:
            counted, _ = self._remote_count(self._tokenizer, text)
            if counted is not None:
                return counted
        return max(1, math.ceil(len(text) / 4))

    def _probe_tokenizer(self) -> str | None:
        """The working tokenize path, "" if the server has none, None if it did not answer
        (then we ask again next time rather than settle for estimates forever)."""
        answered = False
        for path in ("/extras/tokenize/count", "/tokenize"):
            counted, reached = self._remote_count(path, "hello")
            if counted is not None:
                return path
            answered = answered or reached
        return "" if answered else None

    def _remote_count(self, path: str, text: str) -> tuple[int | None, bool]:
        """(token count or None, whether the server answered at all)."""
        payload: dict[str, Any] = (
            {"input": text, "model": self._config.openai_model} if path.startswith("/extras") else {"content": text}
        )
        try:
            resp = self._post(self._root + path, payload, min(self._config.request_timeout, 10.0))
        except requests.RequestException:
            return None, False
        try:
            body = resp.json() if resp.status_code == 200 else None
        except ValueError:
            body = None
        if isinstance(body, dict):
            if isinstance(body.get("count"), int):
                return int(body["count"]), True
            if isinstance(body.get("tokens"), list):
                return len(body["tokens"]), True
        return None, True

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()


def _sse_json(lines: Iterator[Any]) -> Iterator[dict[str, Any]]:
    """The JSON objects of a server-sent event stream's ``data:`` lines, up to ``[DONE]``."""
    for line in lines:
        if not line or not line.startswith("data:"):
            continue  # blank separators, comments (": ping"), event names
        data = line[5:].strip()
        if data == "[DONE]":
            return
        event = json.loads(data)
        if not isinstance(event, dict):
            raise ValueError(f"not a JSON object: {data[:100]}")
        if "error" in event:
            raise ValueError(f"server error: {str(event['error'])[:300]}")
        yield event
