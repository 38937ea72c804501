"""Model profiles: how to prompt a model for code completion.

A profile is one template and the facts around it. The template places four parts, each a placeholder:

    {context}  cross-file snippets, in the family's repository format (and its repository line)
    {file}     the current file's own header: its path, as that format writes it
    {prefix}   the window of the document before the cursor
    {suffix}   the window of the document after the cursor (absent: a prefix-only prompt)

and the family's special tokens around them, spelled as the tokenizer spells them. For Qwen2.5-Coder:

    {context}{file}<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>

with `{context}` = `<|repo_name|>name\\n<|file_sep|>a.py\\n<text>\\n…` and `{file}` = `<|file_sep|>b.py\\n`.
Families without repository tokens write each snippet after a comment with its path (the layout
DeepSeek-Coder's repository-level examples use), inside the prefix part, where FIM training put whole
files. `specials` are the spellings the template and the repository format place: the local backend
turns each into its one token, and they are taken out of the user's text (`break_specials`) so that only the
template places them. `stop` are the spellings that end a completion: end of text, and any special token
(a model that writes `<|file_sep|>` has finished the middle and begun another file).

A local GGUF says which family it is through the FIM tokens llama.cpp finds in its vocabulary
(`llama_vocab_fim_pre/suf/mid`, by their text) and the family's other tokens (`detect`); a server's model is
named (`model.template`) or guessed from its name (`guess`); `custom` builds one from explicit tokens.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field, replace

from hindsight.engine.fim import MIDDLE, SUFFIX, break_specials
from hindsight.syntax import TABLE

COMMENT = {language.name: language.comment for language in TABLE}  # '#' for any other language

COMMENT_FILE = "{comment} {path}\n"  # a file's header where the family has no repository tokens
COMMENT_GAP = "\n"  # a blank line after each snippet in that format


@dataclass(frozen=True)
class Profile:
    name: str
    template: str
    specials: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    repo_head: str = ""  # before the snippets, with {repo}: e.g. "<|repo_name|>{repo}\n"
    file_head: str = COMMENT_FILE  # before each file's text, with {path} (and {comment})
    file_gap: str = COMMENT_GAP  # after each snippet's text (and its newline)
    about: str = ""  # which models it is for, in one line (the README's Models table says the same)

    @property
    def fim(self) -> bool:
        """Whether the prompt holds the code after the cursor."""
        return "{suffix}" in self.template

    @property
    def cursor_last(self) -> bool:
        """Whether the prompt ends at the cursor: typing only appends to it (the cached prefix is kept
        whole) and the partial word at the cursor can be healed."""
        return self.template.endswith("{prefix}")

    @property
    def repository_tokens(self) -> bool:
        return not self.file_head.startswith("{comment}")

    def file_header(self, path: str, language: str | None) -> str:
        """A file's header line: its path (cleaned of the specials) as the format writes it."""
        if not path:
            return ""
        return self.file_head.format(path=break_specials(path, self.specials), comment=COMMENT.get(language or "", "#"))

    def snippet(self, source: str, text: str, language: str | None) -> str:
        """A context snippet as the prompt holds it. `source` is 'path:10-24'; the repository formats
        name the file (a model trained on them saw paths, not line ranges), the comment format the lines."""
        where = source.rsplit(":", 1)[0] if self.repository_tokens and ":" in source else source
        return self.file_header(where, language) + break_specials(text.rstrip(), self.specials) + "\n" + self.file_gap

    def render(self, *, context: str, file: str, prefix: str, suffix: str, repo: str = "") -> str:
        """The prompt text: the template with its parts, the user's text cleaned of the specials
        (`context` and `file` come from `snippet` and `file_header`, cleaned already). In a repository
        format the file's header and the repository line are written only beside other files: alone,
        the file is a file-level FIM prompt."""
        if self.repository_tokens and not context:
            file = ""
        head = self.repo_head.format(repo=break_specials(repo or "workspace", self.specials)) if self.repo_head and context else ""
        parts = {"context": head + context, "file": file,
                 "prefix": break_specials(prefix, self.specials), "suffix": break_specials(suffix, self.specials)}
        return _TEMPLATE_PART.sub(lambda m: parts[m.group(1)], self.template)

    def describe(self) -> dict:
        return {"name": self.name, "template": self.template, "stop": list(self.stop), "fim": self.fim}


_TEMPLATE_PART = re.compile(r"\{(context|file|prefix|suffix)\}")
PLACEHOLDERS = ("context", "file", "prefix", "suffix")


def _fim(pre: str, suf: str, mid: str, *, inside: bool = True) -> str:
    """A prefix-suffix-middle template. `inside`: the context and the file's header begin the prefix part;
    otherwise they come before the prefix token (the repository formats)."""
    if inside:
        return f"{pre}{{context}}{{file}}{{prefix}}{suf}{{suffix}}{mid}"
    return f"{{context}}{{file}}{pre}{{prefix}}{suf}{{suffix}}{mid}"


QWEN_SPECIALS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")
STARCODER2_SPECIALS = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>", "<repo_name>", "<file_sep>")
STARCODER_SPECIALS = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>")
DEEPSEEK_SPECIALS = ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>")
CODELLAMA_SPECIALS = ("<PRE>", "<SUF>", "<MID>")
CODESTRAL_SPECIALS = ("[PREFIX]", "[SUFFIX]")
CODEGEMMA_SPECIALS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_separator|>")
GEMMA_FIM_SPECIALS = (SUFFIX, MIDDLE)  # the embedded Gemma's FIM adapter (hindsight/engine/fim.py)

PROFILES: tuple[Profile, ...] = (
    Profile(
        "qwen2.5-coder",
        _fim("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", inside=False),
        QWEN_SPECIALS,
        QWEN_SPECIALS + ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        repo_head="<|repo_name|>{repo}\n",
        file_head="<|file_sep|>{path}\n",
        file_gap="",
        about="Qwen2.5-Coder base (also Qwen3-Coder): FIM, <|repo_name|>/<|file_sep|> repository format",
    ),
    Profile(
        "starcoder2",
        _fim("<fim_prefix>", "<fim_suffix>", "<fim_middle>", inside=False),
        STARCODER2_SPECIALS,
        STARCODER2_SPECIALS + ("<|endoftext|>",),
        repo_head="<repo_name>{repo}",
        file_head="<file_sep>{path}\n",
        file_gap="",
        about="StarCoder2: FIM, <repo_name>/<file_sep> repository format",
    ),
    Profile(
        "starcoder",
        _fim("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
        STARCODER_SPECIALS,
        STARCODER_SPECIALS + ("<|endoftext|>", "<file_sep>", "<filename>", "<reponame>"),
        about="StarCoder / StarCoderBase / SantaCoder / Refact / stable-code: FIM, paths as comments",
    ),
    Profile(
        "granite-code",
        _fim("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
        STARCODER_SPECIALS,
        STARCODER_SPECIALS + ("<|endoftext|>", "<|end_of_text|>", "<filename>", "<reponame>"),
        about="IBM Granite-Code base: StarCoder's FIM tokens, paths as comments",
    ),
    Profile(
        "deepseek-coder",
        _fim("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
        DEEPSEEK_SPECIALS,
        DEEPSEEK_SPECIALS + ("<｜end▁of▁sentence｜>", "<|EOT|>"),
        about="DeepSeek-Coder v1 and V2 base: FIM, paths as comments (its repository-level layout)",
    ),
    Profile(
        "codellama",
        "<PRE> {context}{file}{prefix} <SUF>{suffix} <MID>",
        CODELLAMA_SPECIALS,
        CODELLAMA_SPECIALS + ("<EOT>", "</s>"),
        about="Code Llama base (7B, 13B): FIM with <PRE>/<SUF>/<MID>, paths as comments",
    ),
    Profile(
        "codestral",
        "[SUFFIX]{suffix}[PREFIX]{context}{file}{prefix}",
        CODESTRAL_SPECIALS,
        CODESTRAL_SPECIALS + ("</s>",),
        file_head="+++++ {path}\n",
        file_gap="\n",
        about="Codestral: suffix first ([SUFFIX]…[PREFIX]…), files headed '+++++ path'",
    ),
    Profile(
        "codegemma",
        _fim("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", inside=False),
        CODEGEMMA_SPECIALS,
        CODEGEMMA_SPECIALS + ("<eos>", "<end_of_turn>"),
        file_head="<|file_separator|>{path}\n",
        file_gap="",
        about="CodeGemma 2B / 7B base: FIM, files separated by <|file_separator|>",
    ),
    Profile(
        "gemma-fim",
        f"{{context}}{SUFFIX}{{suffix}}{MIDDLE}{{file}}{{prefix}}",
        GEMMA_FIM_SPECIALS,
        GEMMA_FIM_SPECIALS + ("<eos>", "<end_of_turn>"),
        about="the embedded Gemma 3 with hindsight's FIM adapter (hindsight train-fim): suffix first",
    ),
    Profile(
        "none",
        "{context}{file}{prefix}",
        (),
        ("<eos>", "<end_of_turn>", "<|endoftext|>"),
        about="prefix only, paths as comments: any model without FIM (the embedded Gemma 3 without its adapter)",
    ),
)
BY_NAME = {p.name: p for p in PROFILES}
NAMES = tuple(BY_NAME)


class ProfileError(ValueError):
    """A template or token the user gave that cannot make a prompt."""


def named(name: str) -> Profile:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ProfileError(f"unknown model template {name!r}; known: {', '.join(NAMES)}") from None


def custom(template: str, stop: list[str] | tuple[str, ...] = (), base: Profile | None = None) -> Profile:
    """A profile from a template the user wrote, with the placeholders above. Its specials are the
    tokens spelled in it (`<…>`, `[…]`, `<｜…｜>`); its stops those and `stop`."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = fields - set(PLACEHOLDERS)
    if unknown or "prefix" not in fields:
        missing = " needs {prefix}" if "prefix" not in fields else ""
        extra = f" has unknown placeholders {sorted(unknown)} (known: {', '.join(PLACEHOLDERS)})" if unknown else ""
        raise ProfileError(f"model template {template!r}{missing}{extra}")
    literal = _TEMPLATE_PART.sub("\0", template)
    specials = tuple(dict.fromkeys(_SPECIAL.findall(literal)))
    base = base or BY_NAME["none"]
    return replace(base, name="custom", template=template, specials=specials,
                   stop=tuple(dict.fromkeys(specials + tuple(stop) + base.stop)), about="a template from the options")


_SPECIAL = re.compile(r"<[^<>\s\0]{1,40}>|\[[A-Z_]{2,20}\]")


def with_stop(profile: Profile, stop: list[str] | tuple[str, ...]) -> Profile:
    return replace(profile, stop=tuple(dict.fromkeys(profile.stop + tuple(stop)))) if stop else profile


def from_template(template: str | None) -> Profile | None:
    """The profile `model.template` names: a profile's name, or a template of its own; None when unset
    (then the model's vocabulary or name decides). ProfileError for a template that cannot make a prompt."""
    if not template:
        return None
    return BY_NAME[template] if template in BY_NAME else custom(template)


# -- detection -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    """What a local model's tokenizer says about FIM, read through llama.cpp (LlamaBackend.vocabulary)."""

    fim: tuple[str, str, str] | None  # the texts of llama_vocab_fim_pre/suf/mid, when all three are found
    has: frozenset[str] = field(default_factory=frozenset)  # which of KNOWN_SPECIALS are single tokens
    name: str = ""  # general.name


KNOWN_SPECIALS = tuple(dict.fromkeys(
    sum((p.specials for p in PROFILES), ()) + ("<filename>", "<reponame>")
))


def _bare(text: str) -> str:
    """A token's text without the word-start mark SentencePiece gives some (CodeLlama's `▁<PRE>`)."""
    return text.lstrip("▁ ").strip()


def detect(vocab: Vocabulary, *, fim_adapter: bool = False) -> Profile:
    """The profile of a local model, from its vocabulary: the family whose FIM tokens llama.cpp found and
    whose other tokens it holds; 'gemma-fim' for a model served with hindsight's FIM adapter; 'none' for a
    vocabulary without FIM tokens; a profile of the tokens themselves for a family not listed here."""
    if fim_adapter:
        return BY_NAME["gemma-fim"]
    if {"[PREFIX]", "[SUFFIX]"} <= vocab.has:
        return BY_NAME["codestral"]
    if vocab.fim is None:
        return BY_NAME["none"]
    pre, suf, mid = (_bare(t) for t in vocab.fim)
    if pre == "<|fim_prefix|>":
        if "<|file_separator|>" in vocab.has:
            return BY_NAME["codegemma"]
        return BY_NAME["qwen2.5-coder"]
    if pre == "<fim_prefix>":
        if {"<repo_name>", "<file_sep>"} <= vocab.has:
            return BY_NAME["starcoder2"]
        return BY_NAME["granite-code" if "granite" in vocab.name.lower() else "starcoder"]
    if pre == "<｜fim▁begin｜>":
        return BY_NAME["deepseek-coder"]
    if pre == "<PRE>":
        return BY_NAME["codellama"]
    return replace(custom(_fim(pre, suf, mid)), name=f"detected:{pre}", about="FIM tokens from the GGUF")


_GUESSES = (  # (a substring of a served model's name, the profile), most specific first
    ("qwen3-coder", "qwen2.5-coder"), ("qwen2.5-coder", "qwen2.5-coder"), ("qwen-coder", "qwen2.5-coder"),
    ("starcoder2", "starcoder2"), ("starcoder", "starcoder"), ("santacoder", "starcoder"),
    ("stable-code", "starcoder"), ("refact", "starcoder"), ("granite", "granite-code"),
    ("deepseek-coder", "deepseek-coder"), ("codellama", "codellama"), ("code-llama", "codellama"),
    ("codestral", "codestral"), ("codegemma", "codegemma"),
)


def guess(model_name: str) -> Profile | None:
    """The profile a served model's name points to (`qwen2.5-coder:1.5b-base` → qwen2.5-coder), or None."""
    lowered = model_name.lower().replace("_", "-")
    for key, name in _GUESSES:
        if key in lowered:
            return BY_NAME[name]
    return None


_INSTRUCT = re.compile(r"(instruct|chat|[-_. ]it\b|[-_. ]it[-_.]|\bit$)", re.IGNORECASE)


def instruct_reason(model_name: str, *, ollama: bool = False) -> str | None:
    """Why a model looks like an instruct (chat) model, which answers rather than continues code, or None.
    Ollama's `qwen2.5-coder` and `codegemma` tags are instruct models unless they say `base` / `code`."""
    lowered = model_name.lower()
    if _INSTRUCT.search(model_name) and "base" not in lowered:
        return f"{model_name} looks like an instruct model (its name says so)"
    if ollama and lowered.startswith(("qwen2.5-coder", "qwen3-coder")) and "base" not in lowered:
        return f"Ollama's {model_name.split(':')[0]} tags are instruct models unless they end in -base"
    return None
