#!/usr/bin/env bash
# `make run`: prepare a model and a secret, start an embedded Redis unless REDIS_URL is set,
# then start every process of the Procfile with honcho.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p .run

if [ -z "${SWITCHBOARD_SECRET:-}" ]; then
  [ -s .run/secret ] || "$PY" -c 'from tasks.signing import new_secret; print(new_secret())' > .run/secret
  SWITCHBOARD_SECRET=$(cat .run/secret)
  export SWITCHBOARD_SECRET
  echo "run: callbacks are signed with the secret in .run/secret (set SWITCHBOARD_SECRET to choose one)"
fi

if [ -z "${HELPER_REGISTRATION_TOKEN:-}" ]; then
  [ -s .run/helper-token ] || "$PY" -c 'import secrets; print(secrets.token_urlsafe(24))' > .run/helper-token
  HELPER_REGISTRATION_TOKEN=$(cat .run/helper-token)
  export HELPER_REGISTRATION_TOKEN
  echo "run: helpers register with the token in .run/helper-token (set HELPER_REGISTRATION_TOKEN to choose one)"
fi

if [ -z "${API_KEYS:-}" ]; then
  [ -s .run/api-key ] || (umask 077; "$PY" -c 'import secrets; print("sk-" + secrets.token_urlsafe(24))' > .run/api-key)
  API_KEYS="local=$(cat .run/api-key)"
  export API_KEYS
  echo "run: the API's client key is in .run/api-key (tenant 'local'; set API_KEYS to choose keys)"
fi

if [ -z "${MODEL_PATH:-}" ] && [ "${LLM_BACKEND:-llama_cpp}" != "openai" ]; then
  MODEL_PATH=$("$PY" -m core_worker.model_files)
  export MODEL_PATH
fi
echo "run: model ${MODEL_PATH:-(served by ${OPENAI_BASE_URL:-the OpenAI-compatible server})}"

procfile=Procfile
if [ -z "${REDIS_URL:-}" ]; then
  port=$("$PY" -c 'from tasks.settings import load_settings; print(load_settings().embedded_redis_port)')
  export REDIS_URL="redis://127.0.0.1:${port}/0"
  procfile=.run/Procfile
  { echo "redis: $PY -m operator_tools.embedded_redis --port ${port} --dir .run/redis"; cat Procfile; } > "$procfile"
  echo "run: embedded Redis (AOF on) at ${REDIS_URL}"
fi
export EDGE_PORT=${PORT:-8000}
export PUBLIC_BASE_URL=${PUBLIC_BASE_URL:-http://127.0.0.1:${EDGE_PORT}}
export INTERNAL_BASE_URL=${INTERNAL_BASE_URL:-http://127.0.0.1:${EDGE_PORT}}
export PATH="$PWD/.venv/bin:$PATH"
echo "run: edge at ${PUBLIC_BASE_URL}"
exec honcho start -f "$procfile" -d .
