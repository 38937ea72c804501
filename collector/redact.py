"""Secret redaction: everything the collector writes goes through `redact` first.

A secret is replaced by `«redacted:KIND»`; the surrounding text (an assignment's name and quotes, a
URL's user and host, an `Authorization:` header's scheme) is kept so the prompt still reads as code.

Passes, in order, each a precompiled regex over the whole text (a pass whose marker string is absent
is skipped; the assignment pass starts only where a keyword occurs; no pass backtracks quadratically):
  1. PEM private key blocks: BEGIN to END, or to the end of the text while the key is still being typed;
     and the key lines before an END whose BEGIN is not in the text (a suffix that starts mid-key);
  2. tokens recognisable by their shape (AWS key ids, GitHub, OpenAI, Anthropic, Slack, Google, Stripe,
     Hugging Face, JWTs);
  3. `Authorization: Bearer|Basic|Token <value>` and long `Bearer <value>`;
  4. credentials embedded in URLs (`scheme://user:PASS@host`);
  5. assignments whose name says it holds a secret (`password = "…"`, `"apiKey": "…"`, `DB_PASSWORD=…`,
     `token: …`, `password := "…"`), values only, and only literal ones: empty or short (< 4 chars)
     values, variable references, calls, placeholders (`${X}`, `{{ x }}`, `<your key>`, `****`) and keywords
     (`None`, `null`, `true`, type names) are left alone.

Redaction is idempotent: no pattern matches a `«redacted:…»` mark, and an assignment whose value is
nothing but marks is left alone.
"""

from __future__ import annotations

import functools
import re
from typing import Any

MARK = "«redacted:{}»"
_MARK_RE = re.compile(r"«redacted:[a-z0-9_]+»")


def _mark(kind: str) -> str:
    return MARK.format(kind)


# 1. PEM private keys. The header must be followed by key material (or a header field, or nothing yet):
# a string constant that merely names the header, as a PEM parser has, is not a key.
_PEM = re.compile(
    r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
    r"(?=(?:\s|\\[nr])+(?:[A-Za-z0-9+/=]{16}|[A-Za-z-]+:)|\s*\Z)"
    r"(?:.*?-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|.*)",
    re.DOTALL,
)
_PEM_END = re.compile(r"-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----")
# The key lines before an orphan END, matched on the reversed text: newline (real or escaped), then
# base64 back to the previous newline.
_KEY_WINDOW = 16384
_KEY_LINES_REVERSED = re.compile(r"(?:(?:\n\r?|n\\(?:r\\)?)[ \t]*[A-Za-z0-9+/=]+(?!\\))+")

# 2. Tokens recognisable by their shape. Each alternative starts with its literal prefix and checks the
# character before that prefix with a fixed-width lookbehind: a pattern that starts with a literal lets
# the regex engine skip ahead, several times faster than a leading lookbehind. `_TOKEN_KINDS` names it.
_TOKENS = re.compile(
    r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])(?<![A-Za-z0-9].{4})[A-Z0-9]{16}(?![A-Za-z0-9])"
    r"|gh[pousr]_(?<![A-Za-z0-9_].{4})[A-Za-z0-9]{20,}"
    r"|github_pat_(?<![A-Za-z0-9_].{11})[A-Za-z0-9_]{20,}"
    r"|sk-(?<![A-Za-z0-9_-].{3})(?:ant-[A-Za-z0-9_-]{20,}|(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,})"
    r"|xox[abprs]-(?<![A-Za-z0-9_-].{5})[A-Za-z0-9-]{10,}"
    r"|AIza(?<![A-Za-z0-9_-].{4})[A-Za-z0-9_-]{35}"
    r"|[sr]k_(?:live|test)_(?<![A-Za-z0-9_].{8})[A-Za-z0-9]{10,}"
    r"|hf_(?<![A-Za-z0-9_].{3})[A-Za-z0-9]{30,}"
    r"|eyJ(?<![A-Za-z0-9_-].{3})[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
)
_TOKEN_KINDS = (
    ("sk-ant-", "anthropic_key"), ("sk-", "openai_key"), ("gh", "github_token"),
    ("github_pat_", "github_token"), ("xox", "slack_token"), ("AIza", "google_api_key"),
    ("sk_", "stripe_key"), ("rk_", "stripe_key"), ("hf_", "huggingface_token"), ("eyJ", "jwt"),
    ("A", "aws_key"),
)  # fmt: skip

# 3. Authorization headers. After "Authorization:" any value of 4+ characters; a bare "Bearer x" only
# when x is long and has a digit (so that prose such as "Bearer authentication" is left alone).
_TOKEN68 = r"[A-Za-z0-9\-._~+/]"
_AUTH_HEADER = re.compile(
    r"(?P<pre>[Aa][Uu][Tt][Hh][Oo][Rr][Ii][Zz][Aa][Tt][Ii][Oo][Nn]"  # spelled out: lets the engine skip
    r"[\"']?[ \t]*[:=][ \t]*[\"']?[ \t]*(?P<scheme>(?i:bearer|basic|token))[ \t]+)"
    rf"(?P<val>{_TOKEN68}{{4,}}=*)"
    r"|(?P<pre2>Bearer[ \t]+)"
    rf"(?P<val2>(?={_TOKEN68}*[0-9]){_TOKEN68}{{20,}}=*)"
)

# 4. scheme://user:PASS@host (the password may contain '@'; the last '@' before the host wins).
_URL_CRED = re.compile(
    r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.\-]{0,30}://[^\s:/?#@\"'<>«»]*:)"
    r"(?P<val>[^\s/?#\"'<>«»]+)"
    r"(?=@[^\s@/?#\"'<>«»]+)"
)

# 5. Assignments. `_KEYWORD` finds candidate names (its first letter is a class so the engine can skip
# ahead); `_ASSIGN` is matched from the start of the name around each hit (a name, a separator, a
# value); `_assignment` decides from the name's words and the value's shape.
_KEYWORD = re.compile(
    r"[PpSsTtAaCc](?i:ass|wd|ecret|oken|pi[_\-]?key|ccess[_\-]?key|rivate[_\-]?key|uth|redential)"
)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$.-")
_NAME_RUN = re.compile(r"[\w$.\-]*")
_ASSIGN = re.compile(
    r"""
    (?<![\w$.\-"'`\\])
    (?P<nq>\\?["'`]|)                                   # a quoted name: "apiKey": …
    (?P<name>(?:--?)?[A-Za-z_$][\w$.\-]*)
    (?P=nq)
    \]?                                                 # config["password"] = …
    (?P<sep>
        [ \t]*(?::[ \t]*[A-Za-z_][\w.\[\],|\ ]{0,48}?[ \t]*)?(?::=|=(?![=>~]))[ \t]*  # = := x: T = …
      | (?:(?<=["'`\]])[ \t]*)?:(?![:=])[ \t]*                                    # YAML, JSON, dicts
      | [ \t]+[A-Za-z_][\w.\[\]*]*[ \t]*=(?![=>~])[ \t]*                          # Go: var x T = …
    )
    (?P<value>
        (?P<pfx>[rRbBuUfF]{0,2})
        (?: "(?P<dq>[^"\\\n]*(?:\\.[^"\\\n]*)*)(?:"|\Z)           # unclosed: typed up to the cursor
          | '(?P<sq>[^'\\\n]*(?:\\.[^'\\\n]*)*)(?:'|\Z)
          | `(?P<bq>[^`]*)(?:`|\Z)
        )
      | \\"(?P<eq>[^"\\\n]*(?:\\[^"\n][^"\\\n]*)*)\\"    # inside an escaped JSON string
      | (?P<uv>[^\s"'`,;()\[\]{}]+)
    )
    """,
    re.VERBOSE | re.MULTILINE,
)

_SPLIT_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_WORD_KIND = {
    "password": "password", "passwd": "password", "pwd": "password", "pass": "password",
    "passphrase": "password", "secret": "secret", "secrets": "secret", "token": "token",
    "auth": "auth", "authorization": "auth", "credential": "credential", "credentials": "credential",
    "apikey": "api_key", "accesskey": "access_key", "privatekey": "private_key",
}  # fmt: skip
_PAIR_KIND = {("api", "key"): "api_key", ("access", "key"): "access_key", ("private", "key"): "private_key"}
_CONTAINS_KIND = (("password", "password"), ("passwd", "password"), ("credential", "credential"))
_ENDS_KIND = (
    ("secret", "secret"), ("token", "token"), ("apikey", "api_key"),
    ("accesskey", "access_key"), ("privatekey", "private_key"),
)  # fmt: skip
# A name that ends with one of these describes a secret (its length, its URL) rather than holding one.
_NOT_SECRET_LAST = frozenset(
    """length len count size min max limit type types kind mode format url urls uri endpoint host port
    path file filename dir name names field fields label prompt placeholder hint policy regex pattern
    expiry expires expiration ttl timeout enabled required provider method scheme strategy version index
    prefix suffix env var header hdr model user username email backend backends class module handler
    callback""".split()
)
_NOT_SECRET_FIRST = frozenset("max min num n total".split())
# Unquoted values that are keywords or type names, not literals.
_NON_LITERALS = frozenset(
    """none null nil true false yes no on off undefined nan self this cls await new yield lambda not
    str string int integer bool boolean bytes float number any object optional list dict tuple void
    required secretstr""".split()
)
_REFERENCE = re.compile(
    r"\$\{[^{}]*\}|\$[A-Za-z_]\w*|\{\{.*\}\}|\{[A-Za-z_][\w.\[\]'\"]*\}|%\(\w+\)[sdr]|%[sd]|<[^<>]*>|(.)\1*",
    re.DOTALL,
)
_PEM_END = re.compile(r"-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----")
# The key lines before an orphan END, matched on the reversed text: newline (real or escaped), then
# base64 back to the previous newline.
_IDENT = re.compile(r"[A-Za-z_$][\w$]*")
_DOTTED = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+")
_TYPE_LIKE = re.compile(r"(?:[A-Z][a-z0-9]+)+")
_CLASS_NAME = re.compile(r"_?[A-Z][A-Za-z]*[a-z][A-Za-z]*")
_AWS_SECRET = re.compile(r"[A-Za-z0-9/+=]{40}")
_LINE_HEAD = re.compile(r"[ \t]*(?:export[ \t]+|set[ \t]+|ENV[ \t]+|ARG[ \t]+|-[ \t]+)?")
_LINE_TAIL = re.compile(r"[ \t]*(?:#[^\n]*|//[^\n]*)?(?:\n|\Z)")
_INLINE_REFERENCE = re.compile(r"\$\{[^{}]*\}|\{\{.*?\}\}|\{[A-Za-z_][^{}]*\}|\{\d*\}|%(?:\(\w+\))?[sdr]")
_LEADING_SCHEME = re.compile(r"^\s*(?i:bearer|basic|token|digest|oauth)(?:\s+|$)")
_CODE_OUTSIDE_STRING = re.compile(r"\s*[+%.,)\]};]")  # `"token=" + x`: the quote closed a string
_HEADER_NAME = re.compile(r"X-[A-Za-z0-9-]+")
_NORMALIZE = re.compile(r"[\W_]+")


@functools.lru_cache(maxsize=4096)
def name_kind(name: str) -> str | None:
    """The kind of secret a variable or key name says it holds (`DB_PASSWORD` → 'password'), or None."""
    words = [w.lower() for w in _SPLIT_WORDS.findall(name)]
    if not words or words[-1] in _NOT_SECRET_LAST or words[0] in _NOT_SECRET_FIRST:
        return None
    found = None
    for i, w in enumerate(words):
        kind = _WORD_KIND.get(w)
        if kind is None and i + 1 < len(words):
            kind = _PAIR_KIND.get((w, words[i + 1]))
        if kind is None:
            kind = next((k for s, k in _CONTAINS_KIND if s in w), None)
        if kind is None:
            kind = next((k for s, k in _ENDS_KIND if w.endswith(s)), None)
        if kind is not None:
            found = kind
            if kind != "auth":  # a more specific word later in the name wins over "auth"
                break
    if found == "secret" or found == "access_key":
        if "aws" in words or ("secret" in words and "access" in words):
            return "aws_secret"
    return found


def _is_reference(value: str) -> bool:
    return _REFERENCE.fullmatch(value.strip()) is not None


def _literal_rest(value: str) -> str:
    """What is left of a value once marks, template references and a leading auth scheme are removed."""
    rest = _INLINE_REFERENCE.sub("", _MARK_RE.sub("", value))
    return _LEADING_SCHEME.sub("", rest).strip()


def literal_secret(value: str) -> bool:
    """Whether a string value stored under a secret-looking name is a literal worth redacting."""
    return len(value) >= 4 and len(_literal_rest(value)) >= 4 and not _is_reference(value)


def _unquoted_literal(m: re.Match[str], value: str) -> bool:
    if len(value) < 4 or len(_literal_rest(value)) < 4 or value[0] in "$%<&*@!~+-":
        return False
    text, end = m.string, m.end()
    if end < len(text) and text[end] in "([{":
        return False  # a call, a subscript, a template
    if value.rstrip(".").lower() in _NON_LITERALS or _DOTTED.fullmatch(value):
        return False
    if not _IDENT.fullmatch(value):
        return True  # a number, or punctuation no identifier has: a literal
    if any(c.isdigit() for c in value):
        return True  # hunter2: letters and digits, a literal
    # A bare word: a variable in code, a literal in .env / YAML / .ini. Decide from the line's shape.
    line_start = text.rfind("\n", max(0, m.start() - 16), m.start()) + 1
    if line_start == 0 and m.start() > 16:
        return False  # more than an indent and `export ` before the name: not a config line
    alone = _LINE_HEAD.fullmatch(text, line_start, m.start()) and _LINE_TAIL.match(text, end)
    if not alone:
        return False
    sep = m.group("sep")
    if sep == "=":
        return True  # NAME=value at the start of a line, nothing after it: .env style
    if sep.strip() == ":":
        return _TYPE_LIKE.fullmatch(value) is None  # `token: Token` is an annotation
    return False


def _quoted_not_secret(m: re.Match[str], value: str) -> bool:
    """Quoted values that code uses as names rather than secrets."""
    if _CODE_OUTSIDE_STRING.match(value):
        return True  # print("token=" + x): the "value" is the code between two strings
    if _HEADER_NAME.fullmatch(value):
        return True  # api_key_header = "X-API-Key"
    name = m.group("name").rpartition(".")[2]
    if _NORMALIZE.sub("", value).lower() == _NORMALIZE.sub("", name).lower():
        return True  # apiKey = "apiKey"
    if not m.group("nq") and m.group("sep").strip() == ":" and _CLASS_NAME.fullmatch(value):
        return True  # private_key: "_RSAPrivateKey", a forward reference in a signature
    return False


def _assignment(m: re.Match[str]) -> str:
    whole = m.group(0)
    kind = name_kind(m.group("name").rpartition(".")[2])  # self.password: the attribute's name
    if kind is None:
        return whole
    for group in ("dq", "sq", "bq", "eq"):
        value = m.group(group)
        if value is not None:
            if not literal_secret(value) or _quoted_not_secret(m, value):
                return whole
            break
    else:
        group = "uv"
        value = m.group("uv")
        if not _unquoted_literal(m, value):
            return whole
    if kind == "aws_secret" and not _AWS_SECRET.fullmatch(value):
        kind = "secret"
    start, end = m.span(group)
    base = m.start()
    return whole[: start - base] + _mark(kind) + whole[end - base :]


def _token(m: re.Match[str]) -> str:
    found = m.group(0)
    return _mark(next(kind for prefix, kind in _TOKEN_KINDS if found.startswith(prefix)))


def _assignments(text: str) -> str:
    """`_ASSIGN.sub(_assignment, text)`, tried only at names that hold a keyword. Linear: a name is
    tried once however many keywords it holds, and scanning back for its start never crosses the
    previous name."""
    out: list[str] = []
    done = 0  # text before this is in `out`
    floor = 0  # no name starts before this
    for k in _KEYWORD.finditer(text):
        if k.start() < floor:
            continue  # inside a name already tried, or a replaced value
        start = k.start()
        while start > floor and text[start - 1] in _NAME_CHARS:
            start -= 1
        floor = _NAME_RUN.match(text, k.end()).end()
        if start > done and text[start - 1] in "\"'`":
            start -= 1
            if start > done and text[start - 1] == "\\":
                start -= 1
        m = _ASSIGN.match(text, start)
        if m is None:
            continue
        replaced = _assignment(m)
        if replaced != m.group(0):
            out.append(text[done:start])
            out.append(replaced)
            done = floor = m.end()
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


def _orphan_pem_ends(text: str) -> str:
    """Redact the key lines before an END line whose BEGIN is not in the text, and the END line."""
    out: list[str] = []
    done = 0
    for m in _PEM_END.finditer(text):
        window = max(done, m.start() - _KEY_WINDOW)  # a PEM key is a few KB; bounds the work per END
        lines = _KEY_LINES_REVERSED.match(text[window : m.start()][::-1])
        if lines is None:
            continue  # a string constant that names the END line, not a key
        out.append(text[done : m.start() - lines.end()])
        out.append(_mark("private_key"))
        done = m.end()
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


def _auth_header(m: re.Match[str]) -> str:
    if m.group("pre") is not None:
        scheme = m.group("scheme").lower()
        return m.group("pre") + _mark("bearer_token" if scheme == "bearer" else "auth_header")
    return m.group("pre2") + _mark("bearer_token")


def _url_cred(m: re.Match[str]) -> str:
    if _is_reference(m.group("val")):
        return m.group(0)
    return m.group("pre") + _mark("url_password")


def redact(text: str) -> str:
    """Replace every secret in `text` with `«redacted:KIND»`. Idempotent."""
    if not isinstance(text, str):
        raise TypeError(f"redact() takes a str, not {type(text).__name__}")
    if "-----BEGIN" in text:
        text = _PEM.sub(_mark("private_key"), text)
    if "-----END" in text:
        text = _orphan_pem_ends(text)
    text = _TOKENS.sub(_token, text)
    if "earer" in text or "uthorization" in text or "UTHORIZATION" in text:
        text = _AUTH_HEADER.sub(_auth_header, text)
    if "://" in text:
        text = _URL_CRED.sub(_url_cred, text)
    return _assignments(text)


def redact_obj(obj: Any) -> Any:
    """`redact` every string inside dicts, lists and tuples; keys are kept.

    A string stored under a key that names a secret (`{"password": "hunter2"}`) is redacted whole,
    under the same rules as an assignment's value.
    """
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and isinstance(v, str) and literal_secret(v):
                kind = name_kind(k)
                if kind is not None:
                    out[k] = _mark(kind if kind != "aws_secret" or _AWS_SECRET.fullmatch(v) else "secret")
                    continue
            out[k] = redact_obj(v)
        return out
    if isinstance(obj, list):
        return [redact_obj(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(redact_obj(v) for v in obj)
    return obj
