"""Secret redaction: everything the collector writes goes through `redact` first.

A secret is replaced by `«redacted:KIND»`; the surrounding text (an assignment's name and quotes, a
URL's user and host, an `Authorization:` header's scheme) is kept so the prompt still reads as code.

Passes, in order, each a precompiled regex over the whole text (a pass whose marker string is absent
is skipped; the assignment pass starts only where a keyword occurs; no pass backtracks quadratically):
  1. PEM private key blocks: BEGIN to END, or to the end of the text while the key is still being typed;
     and the key lines before an END whose BEGIN is not in the text (a suffix that starts mid-key);
  2. tokens recognisable by their shape (AWS key ids, GitHub, GitLab, OpenAI, Anthropic, Slack, Google,
     Stripe, Hugging Face, npm, PyPI, SendGrid, Shopify, DigitalOcean, Vault, JWTs);
  3. `Authorization: Bearer|Basic|Token <value>` and long `Bearer <value>`;
  4. credentials embedded in URLs (`scheme://user:PASS@host`, placeholders such as `user:password@` left);
  5. credentials known by their place: Slack webhook paths, Azure SAS signatures, Telegram bot tokens,
     PuTTY private lines, .netrc passwords, `curl -u user:PASS`, `login -p PASS`, `auth=("user", "PASS")`;
  6. assignments whose name says it holds a secret (`password = "…"`, `"apiKey": "…"`, `DB_PASSWORD=…`,
     `token: …`, `password := "…"`, `Pwd=…;`), values only, and only literal ones: empty or short (< 4
     chars) values, variable references, calls, expressions, placeholders (`${X}`, `{{ x }}`, `<your key>`,
     `****`), keywords (`None`, `null`, `true`, type names) and values that name a secret rather than hold
     one (`"refresh_token"`, `"msal:acquireTokenStart"`, `"^9.0.0"`) are left alone. A name ending in key
     or salt (`ENCRYPTION_KEY`) counts only when its value looks random.

What counts as ordinary code was measured: `hindsight bench redact` (hindsight/evaluation/bench_redact.py) reports
recall on a corpus of realistic secrets and the lines changed in the standard library and in npm
packages.

Redaction is idempotent: no pattern matches a `«redacted:…»` mark, and an assignment whose value is
nothing but marks is left alone.
"""

from __future__ import annotations

import functools
import heapq
import math
import re
from collections import Counter
from typing import Any

MARK = "«redacted:{}»"
MARK_RE = re.compile(r"«redacted:[a-z0-9_]+»")


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
    r"|xox[abeprs]-(?<![A-Za-z0-9_-].{5})[A-Za-z0-9-]{10,}"
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
# Rarer prefixes, one pattern each: a literal first lets the engine skip ahead to it, where one more
# alternative in `_TOKENS` would cost every position that starts with its first letter.
_RARE_TOKENS = (
    (re.compile(r"xapp-(?<![A-Za-z0-9_-].{5})[A-Za-z0-9-]{20,}"), "slack_token"),
    (re.compile(r"gl(?<![A-Za-z0-9_-]gl)(?:pat|ptt|cbt|soat|rt|dt|ft)-[A-Za-z0-9_-]{20,}"), "gitlab_token"),
    (re.compile(r"npm_(?<![A-Za-z0-9_].{4})[A-Za-z0-9]{36}(?![A-Za-z0-9])"), "npm_token"),
    (re.compile(r"pypi-AgE(?<![A-Za-z0-9_-].{8})[A-Za-z0-9_-]{50,}"), "pypi_token"),
    (re.compile(r"whsec_(?<![A-Za-z0-9_].{6})[A-Za-z0-9+/=]{24,}"), "stripe_key"),
    (re.compile(r"SG\.(?<![A-Za-z0-9_.].{3})[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"), "sendgrid_key"),
    (re.compile(r"GOCSPX-(?<![A-Za-z0-9_-].{7})[A-Za-z0-9_-]{28}"), "google_oauth_secret"),
    (re.compile(r"shp(?<![A-Za-z0-9_]shp)(?:at|ss|ca|pa)_[a-fA-F0-9]{32}"), "shopify_token"),
    (re.compile(r"do(?<![A-Za-z0-9_]do)[opr]_v1_[a-f0-9]{64}"), "digitalocean_token"),
    (re.compile(r"hv(?<![A-Za-z0-9_.]hv)[sbr]\.[A-Za-z0-9_-]{24,}"), "vault_token"),
)  # fmt: skip

# 3. Authorization headers. After "Authorization:" (or `=`, or `,` as in `setHeader('Authorization', …)`)
# any value of 4+ characters; after "Authorization" and only a space (nginx's `proxy_set_header
# Authorization "Basic …"`) a value of 8+ with a digit or padding, or of 16+, so that prose ("the
# Authorization token is…") is left alone; a bare "Bearer x" only when x is long and has a digit
# ("Bearer authentication" is prose).
_TOKEN68 = r"[A-Za-z0-9\-._~+/]"
_AUTH_HEADER = re.compile(
    r"(?P<pre>[Aa][Uu][Tt][Hh][Oo][Rr][Ii][Zz][Aa][Tt][Ii][Oo][Nn]"  # spelled out: lets the engine skip
    r"[\"']?(?:[ \t]*[:=,][ \t]*|(?P<space>[ \t]+))[\"']?[ \t]*(?P<scheme>(?i:bearer|basic|token))[ \t]+)"
    rf"(?P<val>(?(space)(?:(?={_TOKEN68}*[0-9=]){_TOKEN68}{{8,}}|{_TOKEN68}{{16,}})|{_TOKEN68}{{4,}})=*)"
    r"|(?P<pre2>Bearer[ \t]+)"
    rf"(?P<val2>(?={_TOKEN68}*[0-9]){_TOKEN68}{{20,}}=*)"
)

# 4. scheme://user:PASS@host (the password may contain '@'; the last '@' before the host wins).
_URL_CRED = re.compile(
    r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.\-]{0,30}://[^\s:/?#@\"'<>«»]*:)"
    r"(?P<val>[^\s/?#\"'<>«»]+)"
    r"(?=@[^\s@/?#\"'<>«»]+)"
)
# Passwords a URL in documentation or a test spells out: `proto://user:password@host`.
_PLACEHOLDER_PASSWORDS = frozenset("pass password passwd pwd secret pw foo bar baz changeme xxx xxxx".split())

# 5. Credentials known by their place rather than their shape: the `val` group is replaced, the rest
# kept. Each pattern starts with a literal (so the engine skips ahead to it) or has a marker string
# that must be in the text first.
_AUTH_PAIR = r"[ \t]*([\"'])[^\"'\n]*\1[ \t]*,[ \t]*([\"'])(?P<val>[^\"'\n«»]{4,})\2"  # ("user", "pass")
_PLACED = (
    (None, re.compile(r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<val>[A-Za-z0-9_/-]{20,})"),
     "slack_webhook"),
    (None, re.compile(r"sig=(?<=[?&]sig=)(?P<val>[A-Za-z0-9%+/]{20,}(?:%3[Dd]|=)*)"), "sas_signature"),  # Azure SAS
    (":AA", re.compile(r"(?<![\w:])(?P<val>[0-9]{8,10}:AA[A-Za-z0-9_-]{33})(?![\w-])"), "telegram_token"),
    (None,  # a PuTTY key's private half (the public lines before it are public)
     re.compile(r"Private-Lines:[ \t]*[0-9]+[ \t]*\r?\n(?P<val>[A-Za-z0-9+/=]+(?:\r?\n[A-Za-z0-9+/=]+(?![^\r\n]))*)"),
     "private_key"),
    (None,  # .netrc
     re.compile(r"machine(?<!\wmachine)[ \t]+\S+(?:\s+login[ \t]+\S+)?\s+password[ \t]+(?P<val>[^\s«»]+)"),
     "password"),
    (None,  # curl -u user:pass (the line must hold `curl`: `docker run -u 1000:1000` is no secret; see _placed)
     re.compile(r"-(?<=[ \t]-)(?:u|-user)[ \t]+[\"']?[^\s:\"']+:(?P<val>[^\s\"'«»]+)"), "password"),
    (None,  # docker / podman / helm registry login -p … (the line must hold `login`)
     re.compile(r"-(?<=[ \t]-)(?:p|-password)(?:[ \t]+|=)[\"']?(?P<val>[^\s\"'«»-][^\s\"'«»]*)"), "password"),
    (None, re.compile(r"auth(?<!\wauth)[ \t]*=[ \t]*\(" + _AUTH_PAIR), "password"),  # requests: auth=("u", "p")
    (None, re.compile(r"HTTP(?:Basic|Digest|Proxy)Auth\(" + _AUTH_PAIR), "password"),
)  # fmt: skip

# 6. Assignments. `_KEYWORD` finds candidate names (its first letter is a class so the engine can skip
# ahead); `_ASSIGN` is matched from the start of the name around each hit (a name, a separator, a
# value); `_assignment` decides from the name's words and the value's shape. A name that ends in "key"
# or "salt" (`ENCRYPTION_KEY`, `signing_key`) is a candidate too, but only a random-looking value under
# it counts (`cache_key = "user:42"` is no secret).
_KEYWORD = re.compile(
    r"[PpSsTtAaCc](?i:ass|wd|ecret|oken|pi[_\-]?key|ccess[_\-]?key|rivate[_\-]?key|uth|redential)"
)
_KEY_END = re.compile(r"(?:ey|EY|alt|ALT)\b")  # after a K/k or S/s: a name ending in key or salt
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$.-")
_NAME_RUN = re.compile(r"[\w$.\-]*")
_ASSIGN_AHEAD = re.compile(r"\\?[\"'`]?\]?(?:[ \t]*[:=]|[ \t]+[A-Za-z_][\w.\[\]*]*[ \t]*=)")  # what `_ASSIGN` needs
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
    "apikey": "api_key", "accesskey": "access_key", "privatekey": "private_key", "accountkey": "account_key",
}  # fmt: skip
_PAIR_KIND = {
    ("api", "key"): "api_key", ("access", "key"): "access_key", ("private", "key"): "private_key",
    ("account", "key"): "account_key",
}  # fmt: skip
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
    callback grant redirect start reset missing error errors event events ms seconds secs interval delay
    expired invalid state status result message msg bytes selector manager client service factory store
    helper util utils builder loader parser validator serializer id ids""".split()
)
_SHELL_NAMES = frozenset(("PWD", "OLDPWD"))  # the working directory, not a password
# ... or that starts with one of these (a flag, a message, a function).
_NOT_SECRET_FIRST = frozenset(
    """max min num n total no is has should use enable disable allow show validate get set fetch load acquire
    on msg message error err invalid""".split()
)
# A name that ends in "key" or "salt" holds a secret when its value looks random, unless it starts with
# one of these.
_KEY_LAST = frozenset(("key", "salt"))
_NOT_SECRET_KEY_FIRST = frozenset(
    """public cache sort primary foreign partition lookup storage row column dict map hash group index route
    router i18n translation message event state item list unique react idempotency""".split()
)
# Words that make a value a label of a secret rather than the secret (`"refresh_token"`).
_SECRET_WORDS = frozenset(
    """password passwd pwd pass passphrase secret secrets token tokens auth authorization credential
    credentials key keys apikey""".split()
)
_SECRET_WORD_PARTS = ("password", "passwd", "token", "secret", "credential")
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
_IDENT = re.compile(r"[A-Za-z_$][\w$]*")
_IDENT_PATH = re.compile(r"[A-Za-z_$][\w$]*(?:\??\.[A-Za-z_$][\w$]*)*")  # a.b, a?.b
_MEMBER = re.compile(r"\??\.")
_OPERATORS = ("||", "&&", "??", "=>", "!=")  # not "==": base64 padding
_CAMEL = re.compile(r"[a-z][A-Z]")
# Code in a config-like place: lowercase or lowerCamel words, or a CONSTANT, digits only at the end,
# joined by dots (`n.token`, `cfg?.dbPassword`, `kEnumerableProperty`, `process.env.DB_PASSWORD`).
_PLAIN_PART = r"(?:[a-z_$][a-z_$]*(?:[A-Z][a-z]{2,})*|[A-Z][A-Z_]*)[0-9]*"
_PLAIN_CODE = re.compile(rf"{_PLAIN_PART}(?:\??\.{_PLAIN_PART})*")
_CHAINED = re.compile(r"[ \t]*=[^=]")  # a = b = …
_EXPRESSION = re.compile(r"[A-Za-z_$][\w$]*(?:\??\.[A-Za-z_$][\w$]*)+[-+*/%<>=!?|&]")  # t.tokens.length-1
_INTEGER = re.compile(r"0[xX][0-9a-fA-F]{1,8}|[0-9]{1,9}")
_ABNF = re.compile(r"[0-9]*\*[0-9]*[<(A-Za-z]")  # RFC grammar in a comment: token = 1*tchar
_CMDLET = re.compile(r"[A-Z][a-z]+-[A-Z][A-Za-z]+")  # PowerShell: $token = Get-AzAccessToken
_LABEL = re.compile(r"[\w$:./\[\]=@-]+")
_LABEL_STRUCTURE = re.compile(r"[_:/.\[]|[a-z][A-Z]")
# Words a label is made of, when it is made of nothing else ("access-token", "client-secret").
_LABEL_WORDS = frozenset("access refresh id api client bearer user session app service account x".split())
_LOOSE_BEFORE = ("", "\n", " ", "\t", ";", "&", "?", '"', "'")  # where NAME=value starts in configs, DSNs, URLs
_TYPE_UNION = re.compile(r"[ \t]*\|")
_ANNOTATED = re.compile(r"[\w$]\??:[ \t]*\Z")  # `x: ` before a name: the name is x's type
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*")
# "jsonwebtoken": "^9.0.0"; and OIDs, IP addresses
_VERSION = re.compile(r"[\^~]?[<>=]*v?[0-9]+(?:\.[0-9x*]+)+(?:[-+][\w.]+)?")
_FETCH_CREDENTIALS = frozenset(("include", "omit", "same-origin"))  # fetch(url, {credentials: 'include'})
_REGEX_SYNTAX = ("(?:", "(?!", "(?=", "(?<")
_RANDOM_CHARS = re.compile(r"[A-Za-z0-9+/_=-]{16,}")
_HEX = re.compile(r"[0-9a-fA-F]+")
_TYPE_LIKE = re.compile(r"(?:[A-Z][a-z0-9]+)+")
_PASCAL_NAME = re.compile(r"_?(?:[A-Z]{1,4}[a-z]{2,}[0-9]*)+")  # _RSAPrivateKey, SecretStr
_AWS_SECRET = re.compile(r"[A-Za-z0-9/+=]{40}")
_LINE_HEAD = re.compile(r"[ \t]*(?:export[ \t]+|set[ \t]+|ENV[ \t]+|ARG[ \t]+|-[ \t]+)?")
_LINE_TAIL = re.compile(r"[ \t]*(?:#[^\n]*|//[^\n]*)?(?:\n|\Z)")
_INLINE_REFERENCE = re.compile(r"\$\{[^{}]*\}|\{\{.*?\}\}|\{[A-Za-z_][^{}]*\}|\{\d*\}|%(?:\(\w+\))?[sdr]")
_LEADING_SCHEME = re.compile(r"^\s*(?i:bearer|basic|token|digest|oauth|ntlm|negotiate)(?:\s+|$)")
# `"token=" + x`, `"token=%s" % x`, `"token=", x`: the quote closed a string (a secret may start with
# `+` or `%`, but not with one and a space).
_CODE_OUTSIDE_STRING = re.compile(r"\s*[.,)\]};]|\s*[+%]\s")
_HEADER_NAME = re.compile(r"X-[A-Za-z0-9-]+")
_NORMALIZE = re.compile(r"[\W_]+")


@functools.lru_cache(maxsize=4096)
def name_kind(name: str) -> str | None:
    """The kind of secret a variable or key name says it holds (`DB_PASSWORD` → 'password'), or None."""
    words = [w.lower() for w in _SPLIT_WORDS.findall(name)]
    if not words or words[-1] in _NOT_SECRET_LAST or words[0] in _NOT_SECRET_FIRST or name in _SHELL_NAMES:
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


@functools.lru_cache(maxsize=4096)
def _key_name(name: str) -> bool:
    """Whether a name says it holds some key or salt (`ENCRYPTION_KEY`, `signingKey`), not which one."""
    words = [w.lower() for w in _SPLIT_WORDS.findall(name)]
    return (
        len(words) >= 2
        and words[-1] in _KEY_LAST
        and words[0] not in _NOT_SECRET_KEY_FIRST
        and words[0] not in _NOT_SECRET_FIRST
    )


def _entropy(value: str) -> float:
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


def _code_identifier(value: str) -> bool:
    """`a.b?.c`, `SOME_CONSTANT_V2`, `camelCaseName`: a name in code, made of words, not a literal
    (`hunter22` and `x9Kp2.QmZ` are literals)."""
    if not _IDENT_PATH.fullmatch(value) or not ("." in value or "_" in value.strip("_") or _CAMEL.search(value)):
        return False
    # Words: a name's words average 3+ letters (`idToken`, `RESET_PASSWORD_V2`); random letters switch
    # case every other character (`mFpZPbAt8Ql_UuOc`: 1.7).
    words = [w for w in _SPLIT_WORDS.findall(value) if not w.isdigit()]
    return sum(map(len, words)) >= 3 * len(words)


def looks_random(value: str) -> bool:
    """A value as key generators make them: 16+ characters of base64 or hex, no words."""
    if not _RANDOM_CHARS.fullmatch(value) or _code_identifier(value):
        return False
    digits = sum(c.isdigit() for c in value)
    if _HEX.fullmatch(value):
        return len(value) >= 32 and 0 < digits < len(value)
    upper = sum(c.isupper() for c in value)
    lower = sum(c.islower() for c in value)
    enough_digits = digits >= 2 or (digits and len(value) >= 24) or len(value) >= 32  # base64: 1 in 6.4
    return enough_digits and upper >= 2 and lower >= 2 and _entropy(value) >= 3.0


def _names_a_secret(value: str) -> bool:
    """A value that names or describes a secret rather than being one: an identifier, a path or an
    event name with a secret's word in it (`"refresh_token"`, `"msal:acquireTokenStart"`,
    `"/oauth2/v2.0/token"`), or a sentence about one (`"secret must be a string"`)."""
    words = [w.lower() for w in _SPLIT_WORDS.findall(value)]
    if not any(w in _SECRET_WORDS or any(p in w for p in _SECRET_WORD_PARTS) for w in words):
        return False
    if value.count(" ") >= 3 or (" " in value and value.rstrip().endswith(".")) or "\\n" in value:
        return True
    if not _LABEL.fullmatch(value) or looks_random(value):
        return False  # random letters hold words by chance: ...PvKEYPxs3t...
    if all(w in _SECRET_WORDS or w in _LABEL_WORDS for w in words):
        return True  # "access-token"
    if not _LABEL_STRUCTURE.search(value):
        return False
    return 2 * sum(len(w) for w in words if w.isalpha() and len(w) >= 3) >= len(value)


def _is_reference(value: str) -> bool:
    return _REFERENCE.fullmatch(value.strip()) is not None


def _literal_rest(value: str) -> str:
    """What is left of a value once marks, template references and a leading auth scheme are removed."""
    rest = _INLINE_REFERENCE.sub("", MARK_RE.sub("", value))
    return _LEADING_SCHEME.sub("", rest).strip()


def literal_secret(value: str) -> bool:
    """Whether a string value stored under a secret-looking name is a literal worth redacting."""
    rest = _literal_rest(value)
    # `${` left over: a template whose interpolation holds code (`Basic ${btoa(`${u}:${p}`)}`); no letter
    # or digit left: a format string (`"%d,%d-%d,%d:"`)
    return (
        len(value) >= 4
        and len(rest) >= 4
        and "${" not in rest
        and any(c.isalnum() for c in rest)
        and not _is_reference(value)
    )


def _alone_on_line(m: re.Match[str], end: int) -> bool:
    """Whether the assignment is a line of its own (after an indent and `export `, `- `, …): a config line."""
    text = m.string
    line_start = text.rfind("\n", max(0, m.start() - 16), m.start()) + 1
    if line_start == 0 and m.start() > 16:
        return False  # more than an indent and `export ` before the name: not a config line
    return bool(_LINE_HEAD.fullmatch(text, line_start, m.start()) and _LINE_TAIL.match(text, end))


def _code_value(m: re.Match[str], value: str, loose: bool) -> bool:
    """An unquoted value that is code: a name, an expression, a number in code, a grammar, a cmdlet.

    `loose`: where config lines, command lines and connection strings put their values (`NAME=v` on a line
    of its own or after a space, `;` or `&`; `--password=v`; `key: v` alone on a line), only a value
    plainly shaped like code counts (`n.token`, `kEnumerableProperty`): `Pwd=xK2Lm_Qp9z;` is a password.
    """
    name = _NORMALIZE.sub("", m.group("name").rpartition(".")[2]).lower()
    last = _NORMALIZE.sub("", _MEMBER.split(value)[-1]).lower()
    if (name and last.endswith(name)) or _CHAINED.match(m.string, m.end()):
        return True  # exports.Foo = Foo; idToken: e.id_token; a = b.c = function …
    if any(op in value for op in _OPERATORS):
        return True  # clientCredentials: a||uo
    if _ABNF.match(value) or _CMDLET.fullmatch(value):
        return True  # token = 1*tchar; $token = Get-AzAccessToken
    if loose:
        return _PLAIN_CODE.fullmatch(value) is not None and ("." in value or _CAMEL.search(value) is not None)
    return (
        _code_identifier(value)  # idToken?.secret, RESET_PASSWORD_V2, kEnumerableProperty
        or _EXPRESSION.match(value) is not None  # t.tokens.length-1
        or _INTEGER.fullmatch(value) is not None  # PASSWORD_RESET_START = 100041 (not on a line of its own)
    )


def _unquoted_literal(m: re.Match[str], value: str, end: int) -> bool:
    if len(value) < 4 or len(_literal_rest(value)) < 4 or _is_reference(value):
        return False
    sep = m.group("sep")
    alone = _alone_on_line(m, end)
    if alone and sep == "=" and not value.startswith("//"):
        return True  # NAME=value at the start of a line, nothing after it: .env style
    if value[0] in "$%<&*@!~":
        return False  # $VAR, %(x)s, <placeholder>, YAML's &anchor, *alias and !tag, @file, ~/path
    if value[0] in "+-" and not looks_random(value):
        return False  # -1, +x (base64 may start with either)
    if value.startswith("//") and m.group("sep").strip() == ":":
        return False  # `x-access-token://…`: a URL's scheme, not an assignment
    text = m.string
    if (end < len(text) and text[end] in "([{<") or "<" in value:
        return False  # a call, a subscript, a template, a generic type (`auth: Required<Options>`)
    if value.rstrip(".").lower() in _NON_LITERALS:
        return False
    if value.lower() in _SECRET_WORDS or value.lower() in _PLACEHOLDER_PASSWORDS:
        return False  # ?token=SECRET: a placeholder
    if alone and _INTEGER.fullmatch(value):
        return True  # a PIN in an .ini
    before = text[m.start() - 1 : m.start()]
    loose = alone or m.group("name").startswith("-") or (sep == "=" and before in _LOOSE_BEFORE)
    if _code_value(m, value, loose):
        return False
    if not _IDENT.fullmatch(value):
        return True  # punctuation no identifier has: a literal
    if any(c.isdigit() for c in value):
        return True  # hunter2: letters and digits, a literal
    if loose and not _PLAIN_CODE.fullmatch(value) and not _PASCAL_NAME.fullmatch(value):
        return True  # Pwd=yAHinPFOww_DGtU: no name in code switches case like that (`token: TokenClaims` does not)
    # A bare word: a variable in code, a literal in YAML / .ini. Decide from the line's shape.
    if alone and sep.strip() == ":":
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
    if not m.group("nq") and m.group("sep").strip() == ":" and _PASCAL_NAME.fullmatch(value):
        return True  # private_key: "_RSAPrivateKey", a forward reference in a signature
    if _VERSION.fullmatch(value) or value.lower() in _FETCH_CREDENTIALS:
        return True  # "jsonwebtoken": "^9.0.0"; credentials: "include"
    if any(s in value for s in _REGEX_SYNTAX):
        return True  # re.src_auth = `(?:…)`
    if _names_a_secret(_literal_rest(value)):
        return True  # REFRESH_TOKEN_GRANT: "refresh_token"; `${PREFIX}.platform.auth.dom`
    if _TYPE_UNION.match(m.string, m.end()):
        return True  # type AuthContext = "default" | "mfa"
    if name_kind(name) == "password" and value.isalpha() and "pass" in map(str.lower, _SPLIT_WORDS.findall(name)):
        return True  # allPass: "overEvery" ("pass" alone is a weak sign: bypass, allPass)
    return False


def _assignment(m: re.Match[str]) -> str:
    whole = m.group(0)
    name = m.group("name").rpartition(".")[2]  # self.password: the attribute's name
    kind = name_kind(name)
    if kind is None and not _key_name(name):
        return whole
    if m.string[max(0, m.start() - 3) : m.start()] == "://":
        return whole  # https://x-access-token:…@host: a URL's user, not an assignment
    if _TYPE_NAME.fullmatch(m.group("name")) and _ANNOTATED.search(m.string, max(0, m.start() - 80), m.start()):
        return whole  # errorContext: AuthFlowErrorContext = "default": the name is a type
    for group in ("dq", "sq", "bq", "eq"):
        value = m.group(group)
        if value is not None:
            start, end = m.span(group)
            if not literal_secret(value) or _quoted_not_secret(m, value):
                return whole
            break
    else:
        group = "uv"
        value = m.group("uv")
        start, end = m.span(group)
        if m.string[m.start() - 1 : m.start()] in ("?", "&") and "&" in value:
            value = value[: value.index("&")]  # ?user=app&password=…&ssl=true: one query parameter
            end = start + len(value)
        if not _unquoted_literal(m, value, end):
            return whole
    if kind is None:
        if not looks_random(value):
            return whole  # cache_key = "user:42"
        kind = "key"
    if kind == "aws_secret" and not _AWS_SECRET.fullmatch(value):
        kind = "secret"
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
    keywords = ((k.start(), k.end()) for k in _KEYWORD.finditer(text))
    keys = ((k.start() - 1, k.end()) for k in _KEY_END.finditer(text, 1) if text[k.start() - 1] in "KkSs")
    for k_start, k_end in heapq.merge(keywords, keys):
        if k_start < floor:
            continue  # inside a name already tried, or a replaced value
        if not _ASSIGN_AHEAD.match(text, _NAME_RUN.match(text, k_end).end()):
            continue  # no separator after the name: `token)`, `password.length`
        start = k_start
        while start > floor and text[start - 1] in _NAME_CHARS:
            start -= 1
        floor = _NAME_RUN.match(text, k_end).end()
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
    value = m.group("val")
    if _is_reference(value) or value.lower() in _PLACEHOLDER_PASSWORDS or "\\" in value:
        return m.group(0)  # a placeholder, or an escaped test string ('uri://us\xA0er:pa\uD7FFss@…')
    return m.group("pre") + _mark("url_password")


_PLACED_LINE = {"-u": re.compile(r"\bcurl\b"), "--user": re.compile(r"\bcurl\b"), "-p": re.compile(r"\blogin\b"),
                "--password": re.compile(r"\blogin\b")}  # what the line before a command-line option must hold


def _placed(kind: str, m: re.Match[str]) -> str:
    value = m.group("val")
    if _is_reference(value) or len(_literal_rest(value)) < 4:
        return m.group(0)  # $PASSWORD, or already a mark
    option = m.group(0).split(None, 1)[0].partition("=")[0]
    if option in _PLACED_LINE:
        line_start = m.string.rfind("\n", 0, m.start()) + 1
        if not _PLACED_LINE[option].search(m.string, line_start, m.start()):
            return m.group(0)
    base = m.start()
    start, end = m.span("val")
    return m.group(0)[: start - base] + _mark(kind) + m.group(0)[end - base :]


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
    for marker, pattern, kind in _PLACED:
        if marker is None or marker in text:
            text = pattern.sub(functools.partial(_placed, kind), text)
    for pattern, kind in _RARE_TOKENS:
        text = pattern.sub(_mark(kind), text)
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
                if kind is None and _key_name(k) and looks_random(v):
                    kind = "key"
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
