"""Model profiles: each family's prompt, token by token, on its real tokenizer in the real llama.cpp.

The models are tiny (tests/tiny_models.py) around the vocabulary-only GGUFs llama.cpp's source carries;
the ids below are the families' own (Qwen2.5-Coder's FIM tokens are 151659-151664, StarCoder2's 1-6,
DeepSeek-Coder's 32015-32017), so a test fails if detection, the template or the tokenizer's split of
the specials is wrong.
"""

from __future__ import annotations

import pytest

import tiny_models
from hindsight.engine.backend import BackendError
from hindsight.engine.engine import Engine, EngineConfig
from hindsight.engine.fim import MIDDLE, SUFFIX, layout
from hindsight.engine.llama_backend import LlamaBackend
from hindsight.engine.profiles import BY_NAME, ProfileError, custom, from_template, guess, instruct_reason, named
from hindsight.engine.loader import api_key
from hindsight.engine.prompt import PromptBudget, PromptBuilder
from hindsight.options import parse_options
from hindsight.request import CompletionRequest, Snippet

DOC = "import util\n\ndef main():\n    x = \n    return x\n"
LINE, CHARACTER = 3, 8
PREFIX = "import util\n\ndef main():\n    x = "
SUFFIX_TEXT = "\n    return x\n"
SNIPPET = Snippet("lib/util.py:1-2", "def helper():\n    return 1")
CODE = "def helper():\n    return 1\n"


def build(profile, count=len, context=(SNIPPET,), doc=DOC):
    return PromptBuilder(count, PromptBudget(), profile).build(
        doc, LINE, CHARACTER, path="app.py", language="python", context=list(context), repo="shop"
    )


# -- the templates, as text --------------------------------------------------------------------------------


def test_prefix_only_is_the_embedded_models_layout():
    prompt = build(named("none"))
    assert prompt.text == f"# lib/util.py:1-2\n{CODE}\n# app.py\n{PREFIX}"
    assert prompt.suffix_window == "" and named("none").cursor_last


def test_gemma_fim_is_the_layout_its_adapter_was_trained_on():
    prompt = build(named("gemma-fim"))
    assert prompt.text == layout(f"# lib/util.py:1-2\n{CODE}\n", SUFFIX_TEXT, f"# app.py\n{PREFIX}")
    assert prompt.text.startswith("# lib") and SUFFIX in prompt.text and MIDDLE in prompt.text


def test_qwen_repository_format():
    assert build(named("qwen2.5-coder")).text == (
        "<|repo_name|>shop\n<|file_sep|>lib/util.py\n" + CODE + "<|file_sep|>app.py\n"
        f"<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX_TEXT}<|fim_middle|>"
    )
    # Alone, a file is a file-level FIM prompt: no repository line, no file header.
    assert build(named("qwen2.5-coder"), context=()).text == (
        f"<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX_TEXT}<|fim_middle|>"
    )


def test_starcoder2_repository_format():
    assert build(named("starcoder2")).text == (
        "<repo_name>shop<file_sep>lib/util.py\n" + CODE + "<file_sep>app.py\n"
        f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX_TEXT}<fim_middle>"
    )


def test_codestral_is_suffix_first_with_its_file_headers():
    prompt = build(named("codestral"))
    assert prompt.text == f"[SUFFIX]{SUFFIX_TEXT}[PREFIX]+++++ lib/util.py\n{CODE}\n+++++ app.py\n{PREFIX}"
    assert named("codestral").cursor_last  # the prompt ends at the cursor: it can be healed


@pytest.mark.parametrize("name, head, middle", [
    ("deepseek-coder", "<｜fim▁begin｜>", "<｜fim▁hole｜>{s}<｜fim▁end｜>"),
    ("starcoder", "<fim_prefix>", "<fim_suffix>{s}<fim_middle>"),
    ("granite-code", "<fim_prefix>", "<fim_suffix>{s}<fim_middle>"),
])
def test_comment_formats_put_the_context_inside_the_prefix(name, head, middle):
    text = build(named(name)).text
    assert text == f"{head}# lib/util.py:1-2\n{CODE}\n# app.py\n{PREFIX}" + middle.format(s=SUFFIX_TEXT)


def test_codellama_spacing():
    text = build(named("codellama"), context=()).text
    assert text == f"<PRE> # app.py\n{PREFIX} <SUF>{SUFFIX_TEXT} <MID>"


def test_special_tokens_in_the_users_code_are_broken():
    doc = 'S = "<|fim_prefix|>"\n\ndef main():\n    x = \n    return x\n'
    text = build(named("qwen2.5-coder"), doc=doc).text
    assert text.count("<|fim_prefix|>") == 1 and '"< |fim_prefix|>"' in text


def test_custom_templates():
    profile = custom("<PRE>{prefix}<SUF>{suffix}<MID>", stop=["<END>"])
    assert profile.specials == ("<PRE>", "<SUF>", "<MID>") and "<END>" in profile.stop and profile.fim
    assert from_template("starcoder2") is BY_NAME["starcoder2"] and from_template(None) is None
    with pytest.raises(ProfileError, match="needs {prefix}"):
        custom("<PRE>{suffix}")
    with pytest.raises(ProfileError, match="unknown placeholders"):
        custom("{prefix}{cursor}")
    with pytest.raises(ProfileError, match="unknown model template"):
        named("gpt-5")


def test_server_model_names():
    assert guess("qwen2.5-coder:1.5b-base").name == "qwen2.5-coder"
    assert guess("bigcode/starcoder2-3b").name == "starcoder2"
    assert guess("deepseek-coder-v2:16b-lite-base-q4_0").name == "deepseek-coder"
    assert guess("codellama:7b-code").name == "codellama" and guess("llama3.1:8b") is None
    assert instruct_reason("Qwen2.5-Coder-7B-Instruct") and instruct_reason("gemma-3-270m-it-q4_k_m")
    assert instruct_reason("qwen2.5-coder:7b", ollama=True) and not instruct_reason("qwen2.5-coder:7b-base", ollama=True)
    assert not instruct_reason("Gemma 3 270m") and not instruct_reason("starcoder2-3b")


# -- on the real tokenizers --------------------------------------------------------------------------------


def backend(family: str, **kwargs) -> LlamaBackend:
    return LlamaBackend(tiny_models.cached(family, says=kwargs.pop("says", None)), n_ctx=1024, n_threads=1, **kwargs)


@pytest.mark.parametrize("family, profile", [
    ("qwen2.5-coder", "qwen2.5-coder"), ("starcoder2", "starcoder2"), ("starcoder", "starcoder"),
    ("granite-code", "granite-code"), ("deepseek-coder", "deepseek-coder"), ("deepseek-coder-v2", "deepseek-coder"),
    ("codellama", "codellama"), ("codestral", "codestral"), ("codegemma", "codegemma"), ("plain", "none"),
])
def test_detected_from_the_vocabulary(family, profile):
    b = backend(family)
    assert b.profile.name == profile
    assert Engine(b).profile is b.profile


def tok(b: LlamaBackend, text: str) -> list[int]:
    return b.llm.tokenize(text.encode(), add_bos=False, special=False)


def bos(b: LlamaBackend) -> list[int]:
    return b.llm.tokenize(b"", add_bos=True, special=False)


def test_qwen_prompt_tokens():
    b = backend("qwen2.5-coder")
    ids = b.tokenize(build(b.profile, b.count_tokens).text)
    assert ids == bos(b) + [151663] + tok(b, "shop\n") + [151664] + tok(b, "lib/util.py\n" + CODE) + [151664] + tok(
        b, "app.py\n") + [151659] + tok(b, PREFIX) + [151661] + tok(b, SUFFIX_TEXT) + [151660]


def test_starcoder2_prompt_tokens():
    b = backend("starcoder2")
    ids = b.tokenize(build(b.profile, b.count_tokens).text)
    assert ids == bos(b) + [5] + tok(b, "shop") + [6] + tok(b, "lib/util.py\n" + CODE) + [6] + tok(b, "app.py\n") + [
        1] + tok(b, PREFIX) + [3] + tok(b, SUFFIX_TEXT) + [2]


@pytest.mark.parametrize("family, pre, suf, mid", [("deepseek-coder", 32016, 32015, 32017), ("starcoder", 1, 3, 2)])
def test_comment_format_prompt_tokens(family, pre, suf, mid):
    b = backend(family)
    ids = b.tokenize(build(b.profile, b.count_tokens).text)
    inside = f"# lib/util.py:1-2\n{CODE}\n# app.py\n{PREFIX}"
    assert ids == bos(b) + [pre] + tok(b, inside) + [suf] + tok(b, SUFFIX_TEXT) + [mid]


def test_codellama_and_codestral_prompt_tokens():
    b = backend("codellama")  # ▁<PRE> ▁<SUF> ▁<MID> written at 32000-32002 of Llama's vocabulary
    ids = b.tokenize(build(b.profile, b.count_tokens, context=()).text)
    assert ids == bos(b) + [32000] + tok(b, f" # app.py\n{PREFIX} ") + [32001] + tok(b, SUFFIX_TEXT + " ") + [32002]
    b = backend("codestral")  # [PREFIX] [SUFFIX] at 32000, 32001
    ids = b.tokenize(build(b.profile, b.count_tokens, context=()).text)
    assert ids == bos(b) + [32001] + tok(b, SUFFIX_TEXT) + [32000] + tok(b, PREFIX)


def test_a_special_token_in_the_users_code_stays_text():
    b = backend("qwen2.5-coder")
    doc = 'S = "<|fim_prefix|>"\n\ndef main():\n    x = \n    return x\n'
    ids = b.tokenize(build(b.profile, b.count_tokens, doc=doc).text)
    assert ids.count(151659) == 1


def request() -> CompletionRequest:
    return CompletionRequest(uri="file:///w/app.py", text=DOC, line=LINE, character=CHARACTER, language="python",
                             path="app.py")


@pytest.mark.parametrize("family, token", [
    ("qwen2.5-coder", "<|file_sep|>"), ("qwen2.5-coder", "<|endoftext|>"), ("starcoder2", "<file_sep>"),
    ("deepseek-coder", "<|EOT|>"), ("deepseek-coder", "<｜end▁of▁sentence｜>"), ("codellama", "▁<EOT>"),
    ("codegemma", "<|file_separator|>"),
])
def test_generation_ends_at_the_familys_stop_tokens(family, token):
    """A model whose every next token is `token`: the middle is empty, ended by the model."""
    completion = Engine(backend(family, says=token)).complete(request())
    assert (completion.text, completion.stop) == ("", "eos")


def test_a_model_that_goes_on_is_not_stopped():
    """The same construction with an ordinary token: the suggestion is that token, until the length limit."""
    completion = Engine(backend("starcoder2", says="x"), EngineConfig(max_tokens_single=5)).complete(request())
    assert completion.text == "xxxxx" and completion.stop == "length"


def test_an_instruct_model_is_refused_unless_a_template_is_named():
    path = tiny_models.cached("deepseek-coder-instruct")
    with pytest.raises(BackendError, match="instruct model.*completion needs a base model"):
        LlamaBackend(path, n_ctx=512, n_threads=1)
    assert LlamaBackend(path, n_ctx=512, n_threads=1, profile=named("deepseek-coder")).profile.name == "deepseek-coder"


# -- the model options -------------------------------------------------------------------------------------


def test_model_options(monkeypatch):
    options, problems = parse_options({"model": "/models/a.gguf"})  # the short form: a path
    assert options.model.path == "/models/a.gguf" and not problems
    options, problems = parse_options({"backend": "ollama", "model": {"name": "qwen2.5-coder:1.5b-base",
                                       "template": "qwen2.5-coder", "stop": ["\n\n"]}})
    assert (options.backend, options.model.name, options.model.template, options.model.stop) == (
        "ollama", "qwen2.5-coder:1.5b-base", "qwen2.5-coder", ["\n\n"]) and not problems
    options, problems = parse_options({"backend": "http"})
    assert options.backend == "openai" and problems == ["option backend: 'http' is now called 'openai'"]
    options, problems = parse_options({"backend": "vllm"})
    assert options.backend == "embedded" and "must be one of" in problems[0]
    monkeypatch.setenv("MY_KEY", "sk-test")
    assert api_key(parse_options({"apiKeyEnv": "MY_KEY"})[0]) == "sk-test"
    assert api_key(parse_options({"apiKey": "a", "apiKeyEnv": "MY_KEY"})[0]) == "a"
    assert api_key(parse_options({"apiKeyEnv": "UNSET_KEY_NAME"})[0]) is None
