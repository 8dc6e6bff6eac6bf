"""One typed settings object, read from the environment.

Every setting the system reads is a field here, with its environment
variable, default and a one-line meaning; ``docs/configuration.md`` is
generated from this table (``python -m tasks.settings --markdown``) and a
test keeps the two in step.  Nothing else in the code base calls
``os.environ`` for configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["Settings", "SettingsError", "load_settings", "parse_api_keys", "settings_markdown"]


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


def _setting(default: Any, env: str, doc: str) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc})


@dataclass(frozen=True)
class Settings:
    # --- connections -------------------------------------------------------
    redis_url: str = _setting(
        "redis://127.0.0.1:6379/0", "REDIS_URL",
        "Broker, sessions, dedupe keys, status and registry. Unset under `make run`: an embedded Redis is started.",
    )
    redis_socket_timeout: float = _setting(
        5.0, "REDIS_SOCKET_TIMEOUT", "Seconds before a silent Redis connection counts as dead (never block forever)."
    )
    redis_connect_timeout: float = _setting(
        2.0, "REDIS_CONNECT_TIMEOUT", "Seconds to open a Redis connection; the edge answers 503 past it."
    )
    redis_health_check_interval: int = _setting(
        10, "REDIS_HEALTH_CHECK_INTERVAL", "Seconds between PINGs on idle Redis connections."
    )
    key_prefix: str = _setting("sb", "SWITCHBOARD_KEY_PREFIX", "Prefix of every Redis key the system writes.")
    redis_maxmemory: str = _setting(
        "512mb", "REDIS_MAXMEMORY",
        "`maxmemory` of the embedded Redis (`make run`, the tests). Your own Redis: set `maxmemory` there "
        "(sizing in operations.md).",
    )
    redis_admit_max_fill: float = _setting(
        0.9, "REDIS_ADMIT_MAX_FILL",
        "Fraction of Redis `maxmemory` past which new messages and uploads get 503 + Retry-After; the rest is "
        "kept for the messages already accepted. No effect on a Redis without `maxmemory`.",
    )
    redis_fill_check_interval: float = _setting(
        1.0, "REDIS_FILL_CHECK_INTERVAL", "Seconds an edge process reuses its reading of Redis' memory (INFO)."
    )

    # --- edge ----------------------------------------------------------------
    port: int = _setting(8000, "PORT", "Port the edge (gunicorn) listens on when `EDGE_PORT` is 0.")
    edge_port: int = _setting(
        0, "EDGE_PORT",
        "Port the edge listens on, over `PORT` (honcho gives every process its own `PORT`, so `make run` sets this).",
    )
    edge_host: str = _setting("127.0.0.1", "EDGE_HOST", "Address the edge binds; `0.0.0.0` to serve other machines.")
    edge_workers: int = _setting(2, "EDGE_WORKERS", "Edge (gunicorn) processes; each has `EDGE_THREADS` threads.")
    edge_timeout: int = _setting(
        60, "EDGE_TIMEOUT", "Seconds gunicorn lets one request run before it restarts the edge process serving it."
    )
    forwarded_allow_ips: str = _setting(
        "127.0.0.1", "FORWARDED_ALLOW_IPS",
        "Comma list of proxies whose X-Forwarded-For/-Proto gunicorn trusts (the client address of rate limits).",
    )
    public_base_url: str = _setting(
        "http://127.0.0.1:8000", "PUBLIC_BASE_URL",
        "The URL people and providers reach the edge at; used for status URLs and provider signatures.",
    )
    internal_base_url: str = _setting(
        "http://127.0.0.1:8000", "INTERNAL_BASE_URL",
        "How workers reach the edge (channel callbacks). Its host must be in SWITCHBOARD_ALLOWED_HOSTS.",
    )
    max_body_bytes: int = _setting(
        1_048_576, "MAX_BODY_BYTES", "Largest JSON request body the edge accepts (413 above)."
    )
    max_text_chars: int = _setting(16_000, "MAX_TEXT_CHARS", "Longest message text accepted (400 above).")
    max_metadata_bytes: int = _setting(
        4096, "MAX_METADATA_BYTES", "Largest `metadata` object of an API message, as compact JSON (400 above)."
    )
    max_wait_seconds: float = _setting(
        30.0, "MAX_WAIT_SECONDS", "Longest long-poll a `GET /v1/messages/<id>?wait=S` may ask for."
    )
    edge_threads: int = _setting(
        16, "EDGE_THREADS", "Request threads per edge (gunicorn) process; a waiting long poll holds one."
    )
    long_poll_slots: int = _setting(
        0, "LONG_POLL_SLOTS",
        "Long polls one edge process holds at once, all clients together; more wait 429 + Retry-After. Must stay "
        "below `EDGE_THREADS`, so the rest serve everything else. 0: half of `EDGE_THREADS`.",
    )
    long_poll_per_client: int = _setting(
        2, "LONG_POLL_PER_CLIENT",
        "Long polls one client (IP address) holds at once in one edge process; more wait 429 + Retry-After.",
    )
    status_ttl_seconds: int = _setting(
        7 * 24 * 3600, "STATUS_TTL_SECONDS", "How long a message's status and reply are kept."
    )
    idempotency_ttl_seconds: int = _setting(
        24 * 3600, "IDEMPOTENCY_TTL_SECONDS", "How long an `Idempotency-Key` or provider delivery id is remembered."
    )

    # --- security ------------------------------------------------------------
    switchboard_secret: str = _setting(
        "", "SWITCHBOARD_SECRET",
        "`whsec_…` secret signing every callback (Standard Webhooks). Empty: a random one per `make run`.",
    )
    helper_registration_token: str = _setting(
        "", "HELPER_REGISTRATION_TOKEN",
        "Bearer token shared by helpers that register under a name not in `HELPER_TOKENS`; it registers a name "
        "no live helper holds, or renews one with that helper's current secret. Empty: only `HELPER_TOKENS`.",
    )
    helper_tokens: str = _setting(
        "", "HELPER_TOKENS",
        "Per-helper registration tokens, `name=token,name=token`: the named helper registers only with its own "
        "token (the shared one no longer works for that name), and that token may take its name back at once "
        "(a restarted helper that lost its secret).",
    )
    helper_wildcard_accepts: bool = _setting(
        False, "HELPER_WILDCARD_ACCEPTS",
        "Let a helper's `accepts` list patterns (`image/*`, `*/*`). Off: concrete types only, since such a "
        "helper is handed every matching upload of every person.",
    )
    allowed_hosts: str = _setting(
        "127.0.0.0/8,::1,localhost", "SWITCHBOARD_ALLOWED_HOSTS",
        "Comma list of host names and CIDRs outbound calls (reply_url, helpers) may reach.",
    )

    # --- rate limits (docs/security.md; limits notation, e.g. `60/minute`; empty: that bucket is off) --------
    rate_limit_ip: str = _setting(
        "600/minute", "RATE_LIMIT_IP",
        "Requests per client IP to the JSON API, uploads and helper routes (429 above).",
    )
    rate_limit_user: str = _setting(
        "120/minute", "RATE_LIMIT_USER", "Messages per API `user` (`POST /v1/messages`, the web chat) (429 above)."
    )
    rate_limit_uploads: str = _setting(
        "30/minute", "RATE_LIMIT_UPLOADS", "Uploads per API `user` (`POST /v1/files`) (429 above)."
    )
    rate_limit_browsers: str = _setting(
        "60/hour", "RATE_LIMIT_BROWSERS",
        "New web chat browsers per client address (`POST /v1/chat/token` without a valid token; renewals are "
        "free): each browser is a user of its own, so this bounds how far one address can spread over "
        "`RATE_LIMIT_USER` buckets (429 above).",
    )
    rate_limit_sender: str = _setting(
        "60/minute", "RATE_LIMIT_SENDER",
        "Messages per provider sender (phone number, chat user, mail address), counted after the signature check.",
    )
    rate_limit_helper_calls: str = _setting(
        "30/minute", "RATE_LIMIT_HELPER_CALLS",
        "Helper calls per sender (channel + sender), all helpers together, counted by the core before a call "
        "is made; past it that person is told to slow down and no call is made.",
    )
    rate_limit_strategy: str = _setting(
        "fixed-window", "RATE_LIMIT_STRATEGY",
        "`fixed-window` (one Redis round trip per bucket), `sliding-window-counter` or `moving-window`.",
    )
    rate_limit_fail_open: bool = _setting(
        True, "RATE_LIMIT_FAIL_OPEN",
        "When Redis cannot count a request: let it through (intake answers 503 while Redis is down). Off: 503.",
    )

    # --- sessions ------------------------------------------------------------
    session_ttl_seconds: int = _setting(
        7 * 24 * 3600, "SESSION_TTL_SECONDS", "A session's history is forgotten after this much silence."
    )
    session_max_turns: int = _setting(
        20, "SESSION_MAX_TURNS", "Turns (a prompt and its reply) kept per session; older ones are dropped."
    )
    session_lock_seconds: float = _setting(
        15.0, "SESSION_LOCK_SECONDS",
        "Lease of a worker on a session, renewed every third of it while it works; a stalled holder loses it "
        "after this (a dead one on the same host at once). Below `VISIBILITY_TIMEOUT`.",
    )
    session_retry_seconds: float = _setting(
        0.5, "SESSION_RETRY_SECONDS", "How soon a message waiting behind its session's busy worker is tried again."
    )
    system_prompt: str = _setting(
        "You are Switchboard, a helpful assistant reached by text message, mail and chat. "
        "Answer briefly and plainly.",
        "SYSTEM_PROMPT", "System prompt given to the model at the start of every conversation.",
    )
    max_attempts: int = _setting(
        3, "MAX_ATTEMPTS", "Times a message may crash its worker before it is dead-lettered as poison."
    )

    sweep_interval: float = _setting(
        30.0, "SWEEP_INTERVAL", "How often io workers look for sessions whose waiting messages lost their task."
    )
    sweep_age: float = _setting(
        120.0, "SWEEP_AGE", "Seconds a session's first waiting message may sit untouched, unleased, before a new task."
    )

    # --- Celery --------------------------------------------------------------
    visibility_timeout: int = _setting(
        3600, "VISIBILITY_TIMEOUT",
        "Seconds before Redis hands an unacknowledged task to another worker (kombu). Above every time limit.",
    )
    unacked_restore_interval: float = _setting(
        10.0, "UNACKED_RESTORE_INTERVAL",
        "How often a worker looks for tasks a dead worker left unacknowledged (kombu restore interval and throttle).",
    )
    task_soft_time_limit: int = _setting(
        150, "TASK_SOFT_TIME_LIMIT", "Seconds a task may run before it is asked to stop."
    )
    task_time_limit: int = _setting(170, "TASK_TIME_LIMIT", "Seconds before a task's process is killed.")

    # --- LLM -----------------------------------------------------------------
    llm_backend: str = _setting(
        "llama_cpp", "LLM_BACKEND",
        "`llama_cpp`, `ctransformers`, `openai`, or `module:factory` for a custom backend.",
    )
    model_path: str = _setting("", "MODEL_PATH", "Local GGUF file. Empty: `MODEL_REPO`/`MODEL_FILE` is downloaded.")
    model_repo: str = _setting(
        "Qwen/Qwen2.5-1.5B-Instruct-GGUF", "MODEL_REPO", "Hugging Face repository of the default model."
    )
    model_file: str = _setting(
        "qwen2.5-1.5b-instruct-q4_k_m.gguf", "MODEL_FILE", "GGUF file in `MODEL_REPO`."
    )
    model_dir: str = _setting(".run/models", "MODEL_DIR", "Where downloaded and generated models are kept.")
    llm_context: int = _setting(4096, "LLM_CONTEXT", "Context window in tokens (prompt + reply).")
    llm_threads: int = _setting(
        0, "LLM_THREADS",
        "Threads per model; threads x core worker processes <= cores. 0: all cores for llama_cpp, cores - 1 for "
        "ctransformers (its ggml starts a thread per evaluation: unstable at 2 threads on 2 cores, measured).",
    )
    llm_max_tokens: int = _setting(256, "LLM_MAX_TOKENS", "Longest reply in tokens.")
    llm_temperature: float = _setting(0.7, "LLM_TEMPERATURE", "Sampling temperature.")
    llm_log_prompts: bool = _setting(
        False, "LLM_LOG_PROMPTS",
        "Log each prompt exactly as the model receives it (its chat template rendered) at INFO, logger "
        "`core_worker.prompts`. The lines hold what people wrote: for debugging and tests only.",
    )
    llm_use_mmap: bool = _setting(
        False, "LLM_USE_MMAP", "mmap the model (llama_cpp). Off: measured ~40% less resident memory."
    )
    model_load_timeout: float = _setting(
        180.0, "MODEL_LOAD_TIMEOUT",
        "Seconds the LLM worker's model process may take to load its model before it is killed and the load "
        "counts as failed (the waiting tasks retry, and the next call starts it again).",
    )
    llm_prompt_cache_mb: int = _setting(
        128, "LLM_PROMPT_CACHE_MB",
        "llama_cpp: MiB of snapshots of conversations whose sequence was given to another, so one that comes "
        "back skips re-reading its history (~22 KB per token for a 1.1B model; a conversation that keeps its "
        "sequence needs none). 0: off.",
    )
    llm_parallel: int = _setting(
        0, "LLM_PARALLEL",
        "Conversations one core worker generates at once on its one model (llama_cpp: one batch, one KV cache of "
        "`LLM_CONTEXT` per conversation; openai: requests in flight). 1: one at a time. 0: 4, or 1 for "
        "ctransformers, which generates one at a time and refuses more.",
    )
    llm_prefill_chunk: int = _setting(
        64, "LLM_PREFILL_CHUNK",
        "llama_cpp: prompt tokens read per decode step while other conversations generate, so they keep streaming "
        "while a newcomer's prompt is read (smaller: smoother streams; larger: faster prompt reading).",
    )
    openai_base_url: str = _setting(
        "http://127.0.0.1:8080/v1", "OPENAI_BASE_URL", "OpenAI-compatible server for `LLM_BACKEND=openai`."
    )
    openai_model: str = _setting("local", "OPENAI_MODEL", "Model name sent to the OpenAI-compatible server.")
    openai_api_key: str = _setting("", "OPENAI_API_KEY", "Bearer key for the OpenAI-compatible server, if any.")
    llm_request_timeout: float = _setting(
        120.0, "LLM_REQUEST_TIMEOUT", "Seconds to wait for an OpenAI-compatible server's answer."
    )

    # --- streaming (replies shown while they are written; docs/architecture.md) --
    stream_interval_seconds: float = _setting(
        0.4, "STREAM_INTERVAL_SECONDS",
        "Shortest gap between two partial replies of one message (channels may ask for a longer one). 0: never "
        "stream.",
    )
    stream_first_chars: int = _setting(
        12, "STREAM_FIRST_CHARS",
        "The first partial reply is shown as soon as it holds a complete word or this many characters.",
    )
    stream_partial_ttl: float = _setting(
        5.0, "STREAM_PARTIAL_TTL",
        "Seconds a partial update may wait in the `deliver` queue before it is dropped (partials are never "
        "retried; the final reply is).",
    )

    # --- helpers -------------------------------------------------------------
    helper_heartbeat_interval: int = _setting(
        10, "HELPER_HEARTBEAT_INTERVAL", "Seconds between a helper's heartbeats (told to the helper at registration)."
    )
    helper_missed_heartbeats: int = _setting(
        3, "HELPER_MISSED_HEARTBEATS", "Heartbeats a helper may miss before it disappears from routing."
    )
    helper_timeout: float = _setting(
        20.0, "HELPER_TIMEOUT", "Seconds a helper call may take in all, however slowly the helper answers, unless the "
        "manifest asks for less (`timeout`)."
    )
    helper_max_timeout: float = _setting(60.0, "HELPER_MAX_TIMEOUT", "Longest per-call timeout a manifest may ask for.")
    helper_retries: int = _setting(2, "HELPER_RETRIES", "Retries of a helper call that failed in a retryable way.")
    helper_backoff_base: float = _setting(
        0.5, "HELPER_BACKOFF_BASE", "First retry delay of a failed helper call; doubles each time, with jitter."
    )
    circuit_failure_threshold: int = _setting(
        3, "CIRCUIT_FAILURE_THRESHOLD", "Consecutive failed calls that open a helper's circuit (calls stop)."
    )
    circuit_reset_seconds: float = _setting(
        30.0, "CIRCUIT_RESET_SECONDS", "How long an open circuit stays open before one trial call is let through."
    )
    helper_sync_interval: float = _setting(
        2.0, "HELPER_SYNC_INTERVAL", "How often io workers start consuming the queues of newly registered helpers."
    )

    email_authserv_id: str = _setting(
        "", "EMAIL_AUTHSERV_ID",
        "The host whose Authentication-Results header (SPF, DKIM, DMARC) IMAP mail is judged by, e.g. "
        "`mx.example.com`; empty: IMAP mail has no verdict. Webhook mail uses Mailgun's and SendGrid's own.",
    )
    email_unverified: str = _setting(
        "fresh", "EMAIL_UNVERIFIED",
        "Mail with no sender verdict: `fresh` answers it in a session of its own (never an existing thread), "
        "`refuse` dead-letters it unanswered, `thread` trusts it like verified mail. Failing mail is never "
        "answered.",
    )
    callback_claim_seconds: float = _setting(
        60.0, "CALLBACK_CLAIM_SECONDS",
        "Life of the claim that keeps one reply's send to one edge request; renewed every third of it while "
        "the send runs, so a slow provider never sees it twice. An edge that dies mid-send frees it after this.",
    )

    # --- delivery ------------------------------------------------------------
    delivery_timeout: float = _setting(
        10.0, "DELIVERY_TIMEOUT", "Seconds a callback POST may take in all (connect, send, answer), however slow."
    )
    delivery_concurrency_per_client: int = _setting(
        4, "DELIVERY_CONCURRENCY_PER_CLIENT",
        "Replies to one client key's reply_url posted at once; the rest wait their turn, so a slow receiver "
        "holds at most this many delivery threads. Keep it at most half of IO_CONCURRENCY. 0: no bound.",
    )
    delivery_backoff_base: float = _setting(
        1.0, "DELIVERY_BACKOFF_BASE", "First retry delay of a failed callback; doubles each time, with jitter."
    )
    delivery_backoff_max: float = _setting(
        60.0, "DELIVERY_BACKOFF_MAX", "Longest delay between callback retries (kept below the visibility timeout)."
    )
    delivery_max_age: float = _setting(
        3600.0, "DELIVERY_MAX_AGE", "Seconds after which an undelivered reply goes to the dead-letter list."
    )
    max_reply_bytes: int = _setting(
        262_144, "MAX_CALLBACK_RESPONSE_BYTES", "Most of a callback's response body that is read (and logged)."
    )

    # --- Twilio (SMS/MMS and voice) --------------------------------------------
    twilio_account_sid: str = _setting("", "TWILIO_ACCOUNT_SID", "Twilio account SID (`AC…`) replies are sent with.")
    twilio_auth_token: str = _setting(
        "", "TWILIO_AUTH_TOKEN",
        "Twilio auth token: signs the REST calls and verifies `X-Twilio-Signature`. Empty: the Twilio webhooks "
        "refuse everything (403).",
    )
    twilio_from_number: str = _setting(
        "", "TWILIO_FROM_NUMBER", "Number SMS replies are sent from. Empty: the number the person texted."
    )
    twilio_api_base_url: str = _setting(
        "https://api.twilio.com", "TWILIO_API_BASE_URL", "Twilio REST API base URL (a fake or a proxy in tests)."
    )
    twilio_api_timeout: float = _setting(10.0, "TWILIO_API_TIMEOUT", "Seconds per Twilio REST call.")
    twilio_shared_session: bool = _setting(
        True, "TWILIO_SHARED_SESSION",
        "Calls and texts from one number share a conversation (`twilio:<number>`). Off: calls get their own.",
    )
    twilio_sms_ack: str = _setting(
        "", "TWILIO_SMS_ACK", "Text answered at once to every SMS before the real reply. Empty: none."
    )
    twilio_sms_help: str = _setting(
        "", "TWILIO_SMS_HELP",
        "Answer to HELP/INFO (never sent to the model). Empty: none (Twilio's opt-out handling answers it).",
    )
    twilio_max_sms_chars: int = _setting(
        1600, "TWILIO_MAX_SMS_CHARS", "Longest SMS body sent; longer replies are split at paragraphs or sentences."
    )
    twilio_number_parts: bool = _setting(
        True, "TWILIO_NUMBER_PARTS", "Prefix the parts of a split reply with `(1/3)`."
    )
    twilio_voice_greeting: str = _setting(
        "Hello! This is Switchboard. How can I help?", "TWILIO_VOICE_GREETING", "Said when a call is answered."
    )
    twilio_voice_hold: str = _setting(
        "One moment.", "TWILIO_VOICE_HOLD", "Said after the caller spoke, while the model thinks."
    )
    twilio_voice_still_waiting: str = _setting(
        "Still thinking.", "TWILIO_VOICE_STILL_WAITING", "Said every few hold loops of a slow answer. Empty: silence."
    )
    twilio_voice_goodbye: str = _setting(
        "Goodbye!", "TWILIO_VOICE_GOODBYE", "Said before hanging up (silence or a goodbye from the caller)."
    )
    twilio_voice_goodbye_words: str = _setting(
        "goodbye,bye,bye bye,hang up,that's all,that is all,no thanks,no thank you",
        "TWILIO_VOICE_GOODBYE_WORDS", "Comma list of phrases that end a call when the caller's turn ends with one.",
    )
    twilio_voice_hold_seconds: float = _setting(
        8.0, "TWILIO_VOICE_HOLD_SECONDS",
        "Longest one hold request waits for the answer before redirecting again (capped at 10: Twilio gives up at 15).",
    )
    twilio_voice_max_wait_seconds: float = _setting(
        120.0, "TWILIO_VOICE_MAX_WAIT_SECONDS", "A caller waits this long for an answer before being told to retry."
    )
    twilio_voice_language: str = _setting(
        "en-US", "TWILIO_VOICE_LANGUAGE", "Language of speech recognition and of `<Say>`."
    )
    twilio_voice_voice: str = _setting(
        "", "TWILIO_VOICE_VOICE", "`<Say>` voice (e.g. `Polly.Joanna`). Empty: Twilio's default."
    )
    twilio_voice_max_say_chars: int = _setting(
        1500, "TWILIO_VOICE_MAX_SAY_CHARS", "Longest answer read out on a call; longer ones are cut at a sentence."
    )

    # --- email (Mailgun, SendGrid, IMAP in; SMTP out) ---------------------------
    smtp_host: str = _setting(
        "localhost", "SMTP_HOST", "SMTP server mail replies are sent through. Empty: replies are dead-lettered."
    )
    smtp_port: int = _setting(25, "SMTP_PORT", "SMTP port (587 with `starttls`, 465 with `ssl`).")
    smtp_security: str = _setting(
        "none", "SMTP_SECURITY", "`none`, `starttls` (upgrade a plain connection) or `ssl` (TLS from the start)."
    )
    smtp_username: str = _setting("", "SMTP_USERNAME", "SMTP login. Empty: no AUTH.")
    smtp_password: str = _setting("", "SMTP_PASSWORD", "SMTP password.")
    smtp_from: str = _setting(
        "", "SMTP_FROM",
        "Address replies come from; mail from it is never answered (loops). Empty: the address the person wrote to.",
    )
    smtp_timeout: float = _setting(10.0, "SMTP_TIMEOUT", "Seconds per SMTP connection step before it counts as down.")
    mailgun_signing_key: str = _setting(
        "", "MAILGUN_SIGNING_KEY", "Mailgun HTTP webhook signing key. Empty: the Mailgun route refuses all (403)."
    )
    mailgun_max_age: float = _setting(
        300.0, "MAILGUN_MAX_AGE", "Oldest Mailgun webhook timestamp accepted, in seconds (replays are refused too)."
    )
    sendgrid_inbound_secret: str = _setting(
        "", "SENDGRID_INBOUND_SECRET",
        "Basic-auth password in the SendGrid Inbound Parse URL. Empty: the SendGrid route refuses all (403).",
    )
    max_mail_bytes: int = _setting(
        26_214_400, "MAX_MAIL_BYTES", "Largest mail the email webhooks accept (413 above); only their routes."
    )
    email_attachment_ttl_seconds: int = _setting(
        24 * 3600, "EMAIL_ATTACHMENT_TTL_SECONDS", "How long a mail's attachments are kept for converters to fetch."
    )
    imap_host: str = _setting(
        "", "IMAP_HOST",
        "IMAP server the poller (`python -m edge.channels.email.imap_poller`) reads. Empty: the poller idles.",
    )
    imap_port: int = _setting(993, "IMAP_PORT", "IMAP port (143 without `IMAP_SSL`).")
    imap_ssl: bool = _setting(True, "IMAP_SSL", "IMAP over TLS from the start (port 993).")
    imap_username: str = _setting("", "IMAP_USERNAME", "IMAP login.")
    imap_password: str = _setting("", "IMAP_PASSWORD", "IMAP password.")
    imap_mailbox: str = _setting("INBOX", "IMAP_MAILBOX", "Mailbox the poller reads unseen mail from.")
    imap_poll_seconds: float = _setting(30.0, "IMAP_POLL_SECONDS", "Seconds between two looks at the mailbox.")
    imap_timeout: float = _setting(
        30.0, "IMAP_TIMEOUT", "Seconds per IMAP command before the connection counts as dead."
    )

    # --- Telegram ------------------------------------------------------------
    telegram_bot_token: str = _setting(
        "", "TELEGRAM_BOT_TOKEN", "Bot API token from @BotFather. Empty: the Telegram webhook refuses everything (403)."
    )
    telegram_webhook_secret: str = _setting(
        "", "TELEGRAM_WEBHOOK_SECRET",
        "Secret Telegram echoes in `X-Telegram-Bot-Api-Secret-Token` (1-256 of `A-Z a-z 0-9 _ -`; set with "
        "`python -m edge.channels.telegram set-webhook`). Empty: the webhook refuses everything (403).",
    )
    telegram_bot_username: str = _setting(
        "", "TELEGRAM_BOT_USERNAME", "The bot's @username, to see mentions in groups. Empty: asked once with getMe."
    )
    telegram_api_base_url: str = _setting(
        "https://api.telegram.org", "TELEGRAM_API_BASE_URL", "Telegram Bot API base URL (a fake or a proxy in tests)."
    )
    telegram_api_timeout: float = _setting(10.0, "TELEGRAM_API_TIMEOUT", "Seconds per Bot API call.")
    telegram_typing_seconds: float = _setting(
        60.0, "TELEGRAM_TYPING_SECONDS", "Longest a chat shows \"typing…\" while its message waits. 0: never."
    )
    telegram_stream_interval: float = _setting(
        1.0, "TELEGRAM_STREAM_INTERVAL",
        "Seconds between edits of a reply shown while it is written (Telegram allows about one edit per second "
        "per chat). 0: send only the finished reply.",
    )

    # --- Slack -----------------------------------------------------------------
    slack_signing_secret: str = _setting(
        "", "SLACK_SIGNING_SECRET",
        "Verifies `X-Slack-Signature` on Events API requests. Empty: the Slack webhook refuses everything (403).",
    )
    slack_bot_token: str = _setting("", "SLACK_BOT_TOKEN", "Bot token (`xoxb-…`) replies are posted with.")
    slack_api_base_url: str = _setting(
        "https://slack.com/api/", "SLACK_API_BASE_URL", "Slack Web API base URL (a fake or a proxy in tests)."
    )
    slack_api_timeout: int = _setting(10, "SLACK_API_TIMEOUT", "Seconds per Slack Web API call.")
    slack_stream_interval: float = _setting(
        1.0, "SLACK_STREAM_INTERVAL",
        "Seconds between `chat.update`s of a reply shown while it is written (Tier 3: ~50 a minute). 0: post only "
        "the finished reply.",
    )

    # --- web chat and uploads --------------------------------------------------
    files_max_bytes: int = _setting(
        10 * 1_048_576, "FILES_MAX_BYTES", "Largest upload `POST /v1/files` accepts (413 above)."
    )
    files_ttl_seconds: int = _setting(
        24 * 3600, "FILES_TTL_SECONDS", "How long an uploaded file is kept for converters (`GET /v1/files/<id>`)."
    )
    files_dir: str = _setting(
        ".run/files", "FILES_DIR",
        "Directory holding uploaded files and mail attachments with `FILES_STORE=local` (Redis keeps only their "
        "records and TTLs). Every edge process, the IMAP poller included, must see the same one.",
    )
    files_store: str = _setting(
        "local", "FILES_STORE",
        "Where file bytes live: `local` (`FILES_DIR`) or `s3` (S3-compatible object storage through boto3, "
        "`pip install 'switchboard[s3]'`; credentials from boto3's usual chain: `AWS_ACCESS_KEY_ID`/"
        "`AWS_SECRET_ACCESS_KEY`, a profile or an instance role).",
    )
    files_s3_bucket: str = _setting("", "FILES_S3_BUCKET", "Bucket of `FILES_STORE=s3` (it must exist).")
    files_s3_endpoint_url: str = _setting(
        "", "FILES_S3_ENDPOINT_URL", "Endpoint of an S3-compatible server (MinIO, Ceph, R2…); empty: AWS."
    )
    files_s3_region: str = _setting("", "FILES_S3_REGION", "Region of `FILES_STORE=s3`; empty: boto3's default.")
    files_s3_timeout: float = _setting(
        10.0, "FILES_S3_TIMEOUT", "Seconds one connect or read of the bucket may wait (boto3's own default is 60)."
    )
    files_s3_prefix: str = _setting(
        "switchboard/", "FILES_S3_PREFIX",
        "Start of every object key (`<prefix><kind>/<id>`): one bucket can serve several systems.",
    )
    files_sweep_interval: float = _setting(
        300.0, "FILES_SWEEP_INTERVAL", "Seconds between two sweeps of expired files by one edge process."
    )
    files_allowed_types: str = _setting(
        "image/*,audio/*,video/*,text/*,application/pdf,application/msword,"
        "application/vnd.openxmlformats-officedocument.*",
        "FILES_ALLOWED_TYPES", "Comma list of MIME types (globs) `POST /v1/files` accepts (415 otherwise).",
    )

    # --- media conversion (queue `convert`, docs/media.md) ---------------------
    media_convert_timeout: float = _setting(
        60.0, "MEDIA_CONVERT_TIMEOUT",
        "Wall-clock seconds one attachment may take to convert (its child process is killed past it).",
    )
    media_max_memory_mb: int = _setting(
        1024, "MEDIA_MAX_MEMORY_MB", "Address-space limit (RLIMIT_AS) of a converter's child process, in MiB."
    )
    media_max_document_bytes: int = _setting(
        20 * 1_048_576, "MEDIA_MAX_DOCUMENT_BYTES", "Largest PDF, DOCX, HTML or text file converted (413 above)."
    )
    media_max_image_bytes: int = _setting(
        20 * 1_048_576, "MEDIA_MAX_IMAGE_BYTES", "Largest image converted with OCR (413 above)."
    )
    media_max_audio_bytes: int = _setting(
        25 * 1_048_576, "MEDIA_MAX_AUDIO_BYTES", "Largest audio file transcribed (413 above)."
    )
    media_max_video_bytes: int = _setting(
        50 * 1_048_576, "MEDIA_MAX_VIDEO_BYTES", "Largest video converted (413 above)."
    )
    media_max_image_pixels: int = _setting(
        50_000_000, "MEDIA_MAX_IMAGE_PIXELS", "Largest image (width x height) opened; bigger is a decompression bomb."
    )
    media_max_text_chars: int = _setting(
        8000, "MEDIA_MAX_TEXT_CHARS", "Budget of converted text added to a message; the rest is cut with a note."
    )
    media_stt_engine: str = _setting(
        "pocketsphinx", "MEDIA_STT_ENGINE",
        "Speech-to-text engine: `pocketsphinx` (offline English) or `faster_whisper`.",
    )
    media_stt_model: str = _setting("", "MEDIA_STT_MODEL", "Model path or name for `faster_whisper`.")
    media_ocr_lang: str = _setting("eng", "MEDIA_OCR_LANG", "Tesseract language(s), e.g. `eng+deu`.")
    media_fetch_timeout: float = _setting(
        20.0, "MEDIA_FETCH_TIMEOUT",
        "Seconds one attachment fetch may take in all (connect, headers, body, redirects): a timer shuts its "
        "socket at the deadline; not retried.",
    )
    media_fetch_min_rate: float = _setting(
        4096.0, "MEDIA_FETCH_MIN_RATE",
        "Bytes/s an attachment's body must arrive at once `MEDIA_FETCH_MIN_RATE_AFTER` seconds passed; a "
        "slower server is dropped (not retried), so dripping servers cannot hold the convert threads. 0: none.",
    )
    media_fetch_min_rate_after: float = _setting(
        5.0, "MEDIA_FETCH_MIN_RATE_AFTER", "Seconds of an attachment's body before `MEDIA_FETCH_MIN_RATE` applies."
    )
    media_fetch_retries: int = _setting(
        3, "MEDIA_FETCH_RETRIES", "Retries (with backoff) of an attachment fetch that failed transiently."
    )
    media_twilio_hosts: str = _setting(
        "api.twilio.com", "MEDIA_TWILIO_HOSTS",
        "Comma list of hosts that get Twilio basic auth (TWILIO_ACCOUNT_SID/TOKEN) when fetching media.",
    )

    # --- worker processes -----------------------------------------------------
    io_concurrency: int = _setting(8, "IO_CONCURRENCY", "Threads of the delivery worker (queue `deliver`).")
    convert_concurrency: int = _setting(
        4, "CONVERT_CONCURRENCY", "Threads of the convert worker (queue `convert`); each runs one conversion."
    )
    helper_concurrency: int = _setting(
        8, "HELPER_CONCURRENCY", "Threads of the helper worker (queues `helper.<name>`); each holds one call."
    )

    # --- operations ----------------------------------------------------------
    embedded_redis_port: int = _setting(
        6390, "EMBEDDED_REDIS_PORT", "Port of the embedded Redis that `make run` starts when `REDIS_URL` is unset."
    )
    log_format: str = _setting(
        "json", "LOG_FORMAT",
        "`json` (one object per line: ts, level, logger, role, message, message_id, session_id) or `text`.",
    )
    log_level: str = _setting(
        "INFO", "LOG_LEVEL", "Lowest level logged (DEBUG, INFO, WARNING, ERROR); Celery workers take `--loglevel`."
    )
    metrics_flush_interval: float = _setting(
        1.0, "METRICS_FLUSH_INTERVAL",
        "Seconds between two flushes of a process's metrics to Redis (one pipelined round trip, off the hot path).",
    )
    worker_heartbeat_interval: float = _setting(
        5.0, "WORKER_HEARTBEAT_INTERVAL",
        "Seconds between two heartbeats of a worker process; `GET /v1/status` marks it stale after three missed.",
    )
    worker_forget_seconds: float = _setting(
        600.0, "WORKER_FORGET_SECONDS", "Seconds after its last heartbeat a stale worker is dropped from the status."
    )
    status_ping_timeout: float = _setting(
        0.5, "STATUS_PING_TIMEOUT", "Seconds `GET /v1/status?ping=1` waits for Celery's control ping replies."
    )
    status_page_refresh: float = _setting(
        5.0, "STATUS_PAGE_REFRESH", "Seconds between two refreshes of the `GET /status` page."
    )
    operator_token: str = _setting(
        "", "OPERATOR_TOKEN",
        "Token of the operator routes (`GET /v1/status`, `GET /status`, `GET /metrics`): `Authorization: Bearer "
        "<token>`, or Basic with the token as password (the page's browser prompt). Empty: loopback only, and not "
        "through a proxy (a request carrying forwarding headers is refused).",
    )

    api_keys: str = _setting(
        "", "API_KEYS",
        "Client keys of the API doors (`POST /v1/messages`, `GET /v1/messages/<id>`, `POST /v1/files`, "
        "`GET /v1/files/<id>`): `Authorization: Bearer <key>`. Comma-separated, each `key` or `label=key` (label: "
        "1-32 of `a-z 0-9 _ -`; a key alone is labelled by its hash; an entry whose text before its first `=` is not a "
        "label is a key). A label is a tenant: the same `user` under two "
        "labels is two people, and two keys with one label are one tenant (rotate by adding the new key first). "
        "Keys are at least 16 characters. Empty: the API doors refuse everyone (the web chat has its own tokens).",
    )
    quota_open_messages: int = _setting(
        200, "QUOTA_OPEN_MESSAGES",
        "Messages one client door's caller (an `API_KEYS` tenant, or one web chat browser) may have open — "
        "accepted and neither answered nor failed — at once; past it `429` + `Retry-After`. Size it for a "
        "tenant's busiest moment: all its users share it. 0: no quota.",
    )
    quota_stored_bytes: int = _setting(
        256 * 1024 * 1024, "QUOTA_STORED_BYTES",
        "Bytes of uploads (`POST /v1/files`) one caller (tenant or browser) may have stored at once; a file "
        "counts until it expires (`FILES_TTL_SECONDS`); past it `429` + `Retry-After` (when the oldest "
        "expires). 0: no quota.",
    )
    webchat_token_ttl: int = _setting(
        30 * 86400, "WEBCHAT_TOKEN_TTL",
        "Seconds a web chat browser token is valid; the page renews it while it is valid, so a browser keeps "
        "its conversation as long as it comes back within this time.",
    )

    @property
    def parallel_conversations(self) -> int:
        """``LLM_PARALLEL`` with 0 resolved: 4, or 1 for ctransformers (it cannot batch)."""
        if self.llm_parallel > 0:
            return self.llm_parallel
        return 1 if self.llm_backend.strip().lower() == "ctransformers" else 4

    def __post_init__(self) -> None:
        if not self.task_soft_time_limit < self.task_time_limit < self.visibility_timeout:
            raise SettingsError(
                "TASK_SOFT_TIME_LIMIT < TASK_TIME_LIMIT < VISIBILITY_TIMEOUT must hold, else a slow task "
                "is handed to a second worker while the first still runs"
            )
        if self.session_lock_seconds < 1:
            raise SettingsError("SESSION_LOCK_SECONDS must be at least 1")
        if self.session_lock_seconds >= self.visibility_timeout:
            # A waiting message's task retries with a countdown of up to SESSION_LOCK_SECONDS; kombu restores a
            # countdown task still held past the visibility timeout, so each wait would double its tasks.
            raise SettingsError("SESSION_LOCK_SECONDS must stay below VISIBILITY_TIMEOUT")
        if self.helper_max_timeout * (self.helper_retries + 1) >= self.visibility_timeout:
            raise SettingsError("HELPER_MAX_TIMEOUT x (HELPER_RETRIES + 1) must stay below VISIBILITY_TIMEOUT")
        if self.delivery_backoff_max >= self.visibility_timeout:
            raise SettingsError("DELIVERY_BACKOFF_MAX must stay below VISIBILITY_TIMEOUT")
        if not 0 <= self.llm_parallel <= 64 or self.llm_prefill_chunk < 1:
            raise SettingsError("LLM_PARALLEL must be 0 (automatic) to 64 and LLM_PREFILL_CHUNK at least 1")
        if self.llm_parallel > 1 and self.llm_backend.strip().lower() == "ctransformers":
            raise SettingsError("LLM_PARALLEL must be 1 with LLM_BACKEND=ctransformers: it generates one "
                                "conversation at a time (no batched decoding); use llama_cpp to batch")
        if min(self.io_concurrency, self.convert_concurrency, self.helper_concurrency, self.edge_workers) < 1:
            raise SettingsError("EDGE_WORKERS and the worker concurrencies (IO_, CONVERT_, HELPER_CONCURRENCY) "
                                "must be at least 1")
        if self.edge_threads < 2:
            raise SettingsError("EDGE_THREADS must be at least 2 (one for long polls, one for everything else)")
        if not 0 <= self.long_poll_slots < self.edge_threads or self.long_poll_per_client < 1:
            raise SettingsError(
                "LONG_POLL_SLOTS must be 0 (half of EDGE_THREADS) or below EDGE_THREADS, and LONG_POLL_PER_CLIENT "
                "at least 1: waiting clients must never hold every request thread"
            )
        if not 0 < self.redis_admit_max_fill <= 1:
            raise SettingsError("REDIS_ADMIT_MAX_FILL must be a fraction above 0 and at most 1")
        if self.log_format not in ("json", "text"):
            raise SettingsError("LOG_FORMAT must be json or text")
        if self.metrics_flush_interval <= 0 or self.worker_heartbeat_interval <= 0:
            raise SettingsError("METRICS_FLUSH_INTERVAL and WORKER_HEARTBEAT_INTERVAL must be positive")
        self.helper_token_map  # noqa: B018 - raises SettingsError on a malformed HELPER_TOKENS
        self.api_key_map  # noqa: B018 - raises SettingsError on a malformed API_KEYS
        if self.switchboard_secret and not self.switchboard_secret.startswith("whsec_"):
            raise SettingsError("SWITCHBOARD_SECRET must be in whsec_<base64> form")

    @property
    def wait_slots(self) -> int:
        """Long polls one edge process may hold: ``LONG_POLL_SLOTS``, or half the threads when that is 0."""
        return self.long_poll_slots or self.edge_threads // 2

    @property
    def helper_token_map(self) -> dict[str, str]:
        """``HELPER_TOKENS`` as name -> token."""
        tokens: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in self.helper_tokens.split(","))):
            name, sep, token = item.partition("=")
            name, token = name.strip(), token.strip()
            if not sep or not name or not token or name in tokens:
                raise SettingsError("HELPER_TOKENS must be name=token pairs, each name once, separated by commas")
            tokens[name] = token
        return tokens

    @property
    def api_key_map(self) -> dict[str, str]:
        """``API_KEYS`` as key -> tenant label."""
        return parse_api_keys(self.api_keys)

    @property
    def allowed_host_list(self) -> list[str]:
        return [h.strip() for h in self.allowed_hosts.split(",") if h.strip()]

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _parse(raw: str, kind: Any, env: str) -> Any:
    try:
        if kind in (bool, "bool"):
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{env}={raw!r} is not a valid {kind}") from exc
    return raw


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = f.metadata["env"]
        if name in env:
            values[f.name] = _parse(env[name], f.type, name)
    values.update(overrides)
    return Settings(**values)


def settings_markdown() -> str:
    """The table in docs/configuration.md, generated so it cannot drift."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in fields(Settings):
        default = f.default
        shown = "(empty)" if default == "" else f"`{default}`"
        rows.append(f"| `{f.metadata['env']}` | {shown} | {f.metadata['doc']} |")
    return "\n".join(rows) + "\n"


def parse_api_keys(text: str) -> dict[str, str]:
    """``API_KEYS`` as key -> tenant label (see the setting)."""
    keys: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        label, sep, key = item.partition("=")
        if not sep or not re.fullmatch(r"[a-z0-9_-]{1,32}", label.strip()):
            label, key = "", item  # no label: the whole entry is the key (base64 padding included)
        label, key = label.strip(), key.strip()
        if len(key) < 16 or any(c.isspace() for c in key):
            raise SettingsError("API_KEYS: each key must be at least 16 characters, with no spaces")
        if key in keys:
            raise SettingsError("API_KEYS: a key is listed twice")
        keys[key] = label or "k" + hashlib.sha256(key.encode()).hexdigest()[:12]
    return keys


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(settings_markdown())
    else:
        sys.stderr.write("usage: python -m tasks.settings --markdown\n")
        sys.exit(2)

