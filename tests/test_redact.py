"""hindsight.redact: each kind of secret is caught, obvious non-secrets are left alone, idempotent.

Fake secrets are assembled from pieces so that no secret scanner mistakes this file for a leak.
"""

import pytest

from hindsight.redact import redact, redact_obj

BODY36 = "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3gH5"  # 36 alphanumerics
AWS_KEY_ID = "AKIA" + "IOSFODNN7" + "EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
JWT = "eyJhbGciOiJIUzI1NiJ9" + ".eyJzdWIiOiIxMjM0NTY3ODkwIn0" + ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PEM_BODY = (
    "MIIEowIBAAKCAQEA7bq98Wq1/example+key+material+0123456789abcdefghij\n"
    "Qm9ndXMga2V5IGZvciB0ZXN0cyBvbmx5IDAxMjM0NTY3ODk="
)
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"


# (text, the secret that must disappear, the mark that must appear)
SHAPED = [
    (f"key_id = {AWS_KEY_ID}", AWS_KEY_ID, "aws_key"),
    (f"creds = ['{'ASIA' + 'Y34FZKBOKMUTVV7A'}']", "ASIAY34FZKBOKMUTVV7A", "aws_key"),
    (f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET, "aws_secret"),
    (f'AWS_SECRET_ACCESS_KEY="{AWS_SECRET}"', AWS_SECRET, "aws_secret"),
    (f'"SecretAccessKey": "{AWS_SECRET}"', AWS_SECRET, "aws_secret"),
    *[(f"gh = '{p}_{BODY36}'", f"{p}_{BODY36}", "github_token") for p in ("ghp", "gho", "ghu", "ghs", "ghr")],
    (f"url = 'https://x.test/?t=github_pat_11ABCDE{BODY36}'", f"github_pat_11ABCDE{BODY36}", "github_token"),
    (f'client = OpenAI(api_key="sk-proj-{BODY36}")', f"sk-proj-{BODY36}", "openai_key"),
    (f"export OPENAI='sk-{BODY36}'", f"sk-{BODY36}", "openai_key"),
    (f"Anthropic(api_key='sk-ant-api03-{BODY36}')", f"sk-ant-api03-{BODY36}", "anthropic_key"),
    (f"SLACK = 'xoxb-{'1234567890-0987654321-'}{BODY36[:24]}'", f"xoxb-1234567890-0987654321-{BODY36[:24]}", "slack_token"),
    (f"slack('xoxp-{BODY36}')", f"xoxp-{BODY36}", "slack_token"),
    (f"maps.init('AIza{BODY36[:35]}')", f"AIza{BODY36[:35]}", "google_api_key"),
    (f"stripe.key = 'sk_live_{BODY36[:24]}'", f"sk_live_{BODY36[:24]}", "stripe_key"),
    (f"stripe.restricted = 'rk_live_{BODY36[:24]}'", f"rk_live_{BODY36[:24]}", "stripe_key"),
    (f"fetch(url + '?jwt={JWT}')", JWT, "jwt"),
    ("curl -H 'Authorization: Bearer abc123def456ghi'", "abc123def456ghi", "bearer_token"),
    ('headers = {"Authorization": "Bearer abc123def456ghi"}', "abc123def456ghi", "bearer_token"),
    ("AUTHORIZATION: bearer abc123def456ghi", "abc123def456ghi", "bearer_token"),
]


@pytest.mark.parametrize("text, secret, kind", SHAPED)
def test_shaped_secrets_are_redacted(text, secret, kind):
    out = redact(text)
    assert secret not in out
    assert f"«redacted:{kind}»" in out


def test_bearer_keeps_the_header_and_scheme():
    assert redact("Authorization: Bearer abc123def456ghi") == "Authorization: Bearer «redacted:bearer_token»"


def test_pem_block_is_redacted_whole():
    text = f"before\n{PEM}\nafter"
    assert redact(text) == "before\n«redacted:private_key»\nafter"


@pytest.mark.parametrize(
    "header",
    [
        "-----BEGIN PRIVATE KEY-----",
        "-----BEGIN EC PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----",
    ],
)
def test_pem_block_without_end_is_redacted_to_the_end_of_the_text(header):
    # A prefix that stops at the cursor while the key is being pasted or typed.
    text = f"key = '''\n{header}\n{PEM_BODY}\nMore+key+material"
    assert redact(text) == "key = '''\n«redacted:private_key»"


def test_pem_block_in_an_escaped_string_is_redacted():
    text = 'KEY = "-----BEGIN PRIVATE KEY-----\\n' + PEM_BODY.replace("\n", "\\n") + '\\n-----END PRIVATE KEY-----\\n"'
    assert redact(text) == 'KEY = "«redacted:private_key»\\n"'


def test_key_lines_before_an_orphan_end_are_redacted():
    # A suffix that starts mid-key: the BEGIN line is in the prefix, not here.
    text = f"{PEM_BODY}\n-----END RSA PRIVATE KEY-----\nafter = 1"
    assert redact(text) == "«redacted:private_key»\nafter = 1"


def test_pem_header_named_in_code_is_not_a_key():
    text = 'if line.startswith("-----BEGIN RSA PRIVATE KEY-----"):\n    in_key = True\nEND = "-----END RSA PRIVATE KEY-----"'
    assert redact(text) == text


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "DATABASE_URL=postgres://admin:s3cr3tPW@db.example.com:5432/app",
            "DATABASE_URL=postgres://admin:«redacted:url_password»@db.example.com:5432/app",
        ),
        (
            "redis://:hunter22@cache.internal:6379/0",
            "redis://:«redacted:url_password»@cache.internal:6379/0",
        ),
        (
            "git clone https://user:p@ss-w0rd@github.com/org/repo.git",
            "git clone https://user:«redacted:url_password»@github.com/org/repo.git",
        ),
    ],
)
def test_url_credentials_keep_user_and_host(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ('password = "hunter22"', 'password = "«redacted:password»"'),
        ("password = 'hunter22'", "password = '«redacted:password»'"),
        ('"apiKey": "abcd1234efgh"', '"apiKey": "«redacted:api_key»"'),
        ("{'api_key': 'abcd1234efgh'}", "{'api_key': '«redacted:api_key»'}"),
        ("DB_PASSWORD=hunter", "DB_PASSWORD=«redacted:password»"),
        ("export DB_PASSWORD=hunter22", "export DB_PASSWORD=«redacted:password»"),
        ("token: abcdef", "token: «redacted:token»"),
        ("  auth_token: 'tok-1234'", "  auth_token: '«redacted:token»'"),
        ("const secret = 'mysecretvalue';", "const secret = '«redacted:secret»';"),
        ("let clientSecret = `s3cr3t-value`;", "let clientSecret = `«redacted:secret»`;"),
        ('password := "gopher123"', 'password := "«redacted:password»"'),
        ('var password string = "gopher123"', 'var password string = "«redacted:password»"'),
        ('api_key: str = "abcd-1234-efgh"', 'api_key: str = "«redacted:api_key»"'),
        ("self.passwd = 'hunter22'", "self.passwd = '«redacted:password»'"),
        ('config["pwd"] = "hunter22"', 'config["pwd"] = "«redacted:password»"'),
        ('connect(host="db", password="kw-pass-1")', 'connect(host="db", password="«redacted:password»")'),
        ("x-api-key: abc123xyz", "x-api-key: «redacted:api_key»"),
        ("accessKey = 'AbCdEf123456'", "accessKey = '«redacted:access_key»'"),
        ("private_key = 'deadbeefcafe'", "private_key = '«redacted:private_key»'"),
        ("PRIVATE-KEY = 0xdeadbeefcafe", "PRIVATE-KEY = «redacted:private_key»"),
        ("Authorization = 'Basic dXNlcjpwYXNz'", "Authorization = 'Basic «redacted:auth_header»'"),
        ("auth = 'user:hunter22'", "auth = '«redacted:auth»'"),
        ("GOOGLE_CREDENTIALS='{\"k\": 1234}'", "GOOGLE_CREDENTIALS='«redacted:credential»'"),
        ("[db]\npassword = hunter22\n", "[db]\npassword = «redacted:password»\n"),
        ('dsn = "host=db password=hunter22 dbname=app"', 'dsn = "host=db password=«redacted:password» dbname=app"'),
        ('{\\"password\\": \\"hunter22\\"}', '{\\"password\\": \\"«redacted:password»\\"}'),
        # a value still being typed at the end of the prompt
        ('db.connect(password="hunte', 'db.connect(password="«redacted:password»'),
    ],
)
def test_assignments_redact_only_the_value(text, expected):
    assert redact(text) == expected


NOT_SECRETS = [
    'password = ""',
    "password = ''",
    "password = 'abc'",
    "token = 'xyz'",
    "password = get_password()",
    "password = getpass.getpass('Password: ')",
    'token = os.environ["TOKEN"]',
    "token = os.environ.get('TOKEN')",
    "const secret = process.env.SECRET;",
    "password := os.Getenv(\"DB_PASSWORD\")",
    "password = None",
    "token: null",
    "auth = True",
    "password = password",
    "connect(password=password, token=token)",
    "token = await fetch_token()",
    "def login(password: str, token: Optional[str] = None) -> bool:",
    "interface Creds { password: string; token?: string }",
    "password: ${DB_PASSWORD}",
    'token = "{{ secrets.GITHUB_TOKEN }}"',
    'password = f"{password}"',
    "api_key = '<your-api-key>'",
    "password = '********'",
    "max_tokens = 1000",
    "tokenizer = 'gpt2'",
    "author = 'Jane Doe'",
    "password_min_length = 12",
    "TOKEN_URL = 'https://example.com/oauth/token'",
    "secret_name = 'prod/db'",
    'x = {"token": token}',
    'print("token=" + repr(tok))',
    "auth_header = 'Authorization'",
    "headers = {'Authorization': f'Bearer {token}'}",
    "Authorization: `Bearer ${token}`",
    "db = 'postgres://admin:{password}@db.example.com/app'",
    "db = 'postgres://admin:${DB_PASSWORD}@db.example.com/app'",
    "Bearer authentication is described in RFC 6750.",
    "def tokens(self): return self._tokens",
    "for token in tokens:\n    pass",
]


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_obvious_non_secrets_are_left_alone(text):
    assert redact(text) == text


ALL_SAMPLES = [t for t, _, _ in SHAPED] + NOT_SECRETS + [
    PEM,
    f"a = 1\n{PEM[:80]}",
    f"{PEM_BODY}\n-----END RSA PRIVATE KEY-----\n",
    "DATABASE_URL=postgres://admin:s3cr3tPW@db.example.com:5432/app",
    'password = "hunter22"\ntoken: abcdef\nDB_PASSWORD=hunter,more',
    'headers = {"Authorization": "Bearer ' + JWT + '"}',
    "https://user:ghp_" + BODY36 + "@github.com/x",
    'token = "Bearer abc123def456ghi"',
    'password = "hunte',
]


@pytest.mark.parametrize("text", ALL_SAMPLES)
def test_idempotent(text):
    once = redact(text)
    assert redact(once) == once


def test_idempotent_on_everything_at_once():
    text = "\n".join(ALL_SAMPLES)
    once = redact(text)
    assert once != text
    assert redact(once) == once


def test_several_secrets_in_one_prompt():
    text = f'import os\nAWS = "{AWS_KEY_ID}"\npassword = "hunter22"\n{PEM}\ndef f():\n    return 1\n'
    out = redact(text)
    assert AWS_KEY_ID not in out and "hunter22" not in out and "MIIEow" not in out
    assert out.startswith("import os\n") and out.endswith("def f():\n    return 1\n")


def test_redact_obj_recurses_and_keeps_keys():
    obj = {
        "prompt": 'password = "hunter22"',
        "context": [{"source": "bm25", "score": 0.5, "text": f"key = '{AWS_KEY_ID}'"}],
        "pair": ("plain", f"sk-{BODY36}"),
        "n": 3,
        "ok": None,
        "password": "hunter22",  # the key says what the value is
    }
    out = redact_obj(obj)
    assert out == {
        "prompt": 'password = "«redacted:password»"',
        "context": [{"source": "bm25", "score": 0.5, "text": "key = '«redacted:aws_key»'"}],
        "pair": ("plain", "«redacted:openai_key»"),
        "n": 3,
        "ok": None,
        "password": "«redacted:password»",
    }
    assert obj["password"] == "hunter22"  # the input is not modified


def test_redact_rejects_non_strings():
    with pytest.raises(TypeError):
        redact(b"password = 'hunter22'")
