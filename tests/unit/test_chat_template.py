"""Chat templates: a file's own template, the per-family fallbacks, and GGUF metadata reading."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gguf
import pytest

from core_worker.chat_template import (
    FAMILIES,
    ChatTemplate,
    ChatTemplateError,
    GGUFReadError,
    fallback_template,
    guess_family,
    load_chat_template,
    read_gguf_info,
    template_for_model,
)
from core_worker.llm import ChatMessage
from core_worker.tiny_model import TINY_CHAT_TEMPLATE

CONVERSATION = [
    ChatMessage("system", "Be brief."),
    ChatMessage("user", "Hi"),
    ChatMessage("assistant", "Hello!"),
    ChatMessage("user", "Weather?"),
]


def write_metadata_gguf(
    path: Path,
    *,
    arch: str = "llama",
    name: str = "",
    template: str | None = None,
    tokens: Sequence[str] = ("<unk>", "<s>", "</s>", "\u2581hi"),
    types: Sequence[int] = (2, 3, 3, 1),
    bos: int = 1,
    eos: int = 2,
) -> Path:
    """A tensor-less GGUF: all the metadata code reads, written in milliseconds."""
    w = gguf.GGUFWriter(path, arch)
    if name:
        w.add_name(name)
    w.add_context_length(4096)
    w.add_tokenizer_model("llama")
    w.add_token_list(list(tokens))
    w.add_token_types(list(types))
    w.add_token_scores([0.0] * len(tokens))
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    if template is not None:
        w.add_chat_template(template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# --- the file's own template -------------------------------------------------------


def test_file_template_is_used_with_its_bos_eos_and_stops(tmp_path: Path) -> None:
    path = write_metadata_gguf(tmp_path / "m.gguf", template=TINY_CHAT_TEMPLATE, name="whatever")
    tpl = load_chat_template(path)
    assert (tpl.origin, tpl.family, tpl.bos_token, tpl.eos_token) == ("gguf", "zephyr", "<s>", "</s>")
    assert "</s>" in tpl.stop and "<|user|>" in tpl.stop
    assert tpl.render(CONVERSATION) == (
        "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n"
        "<|user|>\nWeather?</s>\n<|assistant|>\n"
    )
    # The file template and the zephyr fallback agree: TinyLlama-style files render the same either way.
    assert tpl.render(CONVERSATION) == fallback_template("zephyr").render(CONVERSATION)


def test_add_generation_prompt_false(tmp_path: Path) -> None:
    tpl = load_chat_template(write_metadata_gguf(tmp_path / "m.gguf", template=TINY_CHAT_TEMPLATE))
    assert tpl.render([ChatMessage("user", "Hi")], add_generation_prompt=False) == "<|user|>\nHi</s>\n"


def test_file_template_gets_bos_token_and_dict_messages(tmp_path: Path) -> None:
    source = "{{ bos_token }}{% for m in messages %}[{{ m.role }}:{{ m['content'] }}]{% endfor %}"
    tpl = load_chat_template(write_metadata_gguf(tmp_path / "m.gguf", template=source))
    assert tpl.family == "custom"
    assert tpl.render([{"role": "user", "content": "x"}]) == "<s>[user:x]"


def test_raise_exception_becomes_chat_template_error(tmp_path: Path) -> None:
    source = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}ok"
    tpl = load_chat_template(write_metadata_gguf(tmp_path / "m.gguf", template=source))
    with pytest.raises(ChatTemplateError, match="user first"):
        tpl.render([ChatMessage("assistant", "x")])


def test_system_message_is_folded_in_when_template_rejects_it() -> None:
    strict = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
    )
    tpl = ChatTemplate(source=strict, origin="gguf", family="custom", bos_token="", eos_token="", stop=())
    assert tpl.render([ChatMessage("system", "S"), ChatMessage("user", "U")]) == "[user]S\n\nU"


def test_sandbox_blocks_python_internals() -> None:
    tpl = ChatTemplate(
        source="{{ ''.__class__.__mro__[1].__subclasses__() }}", origin="gguf", family="custom",
        bos_token="", eos_token="", stop=(),
    )
    with pytest.raises(ChatTemplateError):
        tpl.render([ChatMessage("user", "x")])


def test_tojson_keeps_non_ascii_unescaped() -> None:
    tpl = ChatTemplate(source="{{ messages[0]['content'] | tojson }}", origin="gguf", family="custom",
                       bos_token="", eos_token="", stop=())
    assert tpl.render([ChatMessage("user", "héllo <b>")]) == '"héllo <b>"'


def test_broken_file_template_falls_back(tmp_path: Path) -> None:
    path = write_metadata_gguf(tmp_path / "m.gguf", template="{% for m in messages %}unclosed", name="Qwen2.5")
    tpl = load_chat_template(path)
    assert (tpl.origin, tpl.family) == ("fallback", "chatml")


# --- fallbacks per family ------------------------------------------------------------

EXPECTED = {
    "llama-2": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Weather? [/INST]",
    "mistral": "<s>[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] Weather? [/INST]",
    "chatml": (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n"
    ),
    "zephyr": (
        "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|user|>\nWeather?</s>\n"
        "<|assistant|>\n"
    ),
    "llama-3": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWeather?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
}


def test_every_family_has_an_expected_rendering() -> None:
    assert set(EXPECTED) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_fallback_renders(family: str) -> None:
    tpl = fallback_template(family)
    assert tpl.origin == "fallback" and tpl.family == family
    assert tpl.render(CONVERSATION) == EXPECTED[family]
    assert tpl.eos_token in tpl.stop


@pytest.mark.parametrize("family", ["llama-2", "mistral"])
def test_inst_families_without_system(family: str) -> None:
    rendered = fallback_template(family).render([ChatMessage("user", "Hi")])
    assert rendered == "<s>[INST] Hi [/INST]"


def test_unknown_family_is_an_error() -> None:
    with pytest.raises(ChatTemplateError, match="unknown template family"):
        fallback_template("nope")


@pytest.mark.parametrize(
    ("arch", "name", "specials", "family"),
    [
        ("llama", "Meta-Llama-3-8B-Instruct", (), "llama-3"),
        ("llama", "", ("<|eot_id|>",), "llama-3"),
        ("qwen2", "Qwen2.5 1.5B Instruct", (), "chatml"),
        ("llama", "OpenHermes 2.5", (), "chatml"),
        ("llama", "", ("<|im_start|>", "<|im_end|>"), "chatml"),
        ("llama", "tinyllama_tinyllama-1.1b-chat-v1.0", (), "zephyr"),
        ("llama", "HuggingFaceH4_zephyr-7b-beta", (), "zephyr"),
        ("llama", "mistralai_mistral-7b-instruct-v0.2", (), "mistral"),
        ("llama", "LLaMA v2", (), "llama-2"),
        ("llama", "some finetune", (), "llama-2"),
        ("phi2", "", (), "chatml"),
    ],
)
def test_guess_family(arch: str, name: str, specials: tuple[str, ...], family: str) -> None:
    assert guess_family(arch, name, specials) == family


def test_file_without_template_uses_guessed_family_and_files_tokens(tmp_path: Path) -> None:
    tokens = ("<unk>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "a")
    path = write_metadata_gguf(tmp_path / "m.gguf", tokens=tokens, types=(2, 3, 3, 3, 3, 1), bos=1, eos=2)
    info = read_gguf_info(path)
    tpl = template_for_model(info)
    assert (tpl.origin, tpl.family, tpl.bos_token, tpl.eos_token) == ("fallback", "llama-3", "<|begin_of_text|>",
                                                                      "<|eot_id|>")
    assert tpl.render([ChatMessage("user", " hi ")]).startswith("<|begin_of_text|><|start_header_id|>user")


# --- metadata reader -------------------------------------------------------------


def test_read_gguf_info_agrees_with_gguf_reader(tmp_path: Path) -> None:
    tokens = ("<unk>", "<s>", "</s>", "<|im_start|>", "<0x0A>", "\u2581hello", "<extra>")
    path = write_metadata_gguf(tmp_path / "m.gguf", arch="llama", name="Cross Check", template="{{ 1 }}",
                               tokens=tokens, types=(2, 3, 3, 3, 6, 1, 4))
    info = read_gguf_info(path)
    reader = gguf.GGUFReader(path)
    fields = reader.fields
    assert info.version == fields["GGUF.version"].contents()
    assert info.architecture == fields["general.architecture"].contents() == "llama"
    assert info.name == fields["general.name"].contents()
    assert info.context_length == fields["llama.context_length"].contents() == 4096
    assert info.chat_template == fields["tokenizer.chat_template"].contents()
    assert info.vocab_size == len(fields["tokenizer.ggml.tokens"].contents()) == len(tokens)
    assert (info.bos_token, info.eos_token, info.add_bos_token) == ("<s>", "</s>", True)
    assert dict(info.special_tokens) == {"<unk>": 0, "<s>": 1, "</s>": 2, "<|im_start|>": 3, "<extra>": 6}
    assert dict(info.control_tokens) == {"<unk>": 0, "<s>": 1, "</s>": 2, "<|im_start|>": 3}  # not user-defined


def test_read_gguf_info_errors(tmp_path: Path) -> None:
    with pytest.raises(GGUFReadError, match="not found"):
        read_gguf_info(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all, definitely not")
    with pytest.raises(GGUFReadError, match="not a GGUF"):
        read_gguf_info(junk)
    v1 = tmp_path / "v1.gguf"
    v1.write_bytes(b"GGUF" + (1).to_bytes(4, "little") + bytes(32))
    with pytest.raises(GGUFReadError, match="v1"):
        read_gguf_info(v1)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(write_metadata_gguf(tmp_path / "full.gguf", template="x").read_bytes()[:60])
    with pytest.raises(GGUFReadError):
        read_gguf_info(truncated)
