"""The redaction corpus: secrets in realistic surroundings, and ordinary code that holds none.

Positives are templates of code, configuration, shell and HTTP text with the secret as a placeholder;
`positives(seed)` fills each one with a fresh random value of the secret's real shape (a seeded
`random.Random`, so no live credential is ever written down: the values are made here, never stored).
In a template, `{s_GEN}` is a secret made by generator GEN (it must disappear), `{GEN}` a random value
that is not a secret (it must survive, like every literal piece of the template).

Negatives are files nobody wrote secrets into: the standard library (its packages, their test packages
left out, and its single-file modules) and the JavaScript and TypeScript inside the VS Code extension's
npm packages, with the package lockfiles (integrity hashes) beside them. `hindsight.redact` is measured on both by
`hindsight bench redact` (hindsight/evaluation/bench_redact.py).
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import string
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "editors" / "vscode" / "node_modules"

_UPPER_DIGITS = string.ascii_uppercase + string.digits
_ALNUM = string.ascii_letters + string.digits
_URLSAFE = _ALNUM + "-_"
_HEX = "0123456789abcdef"
_B64 = _ALNUM + "+/"
_WORDS = """orange falcon maple river copper lantern velvet harbor quartz meadow tiger cobalt summit
pepper willow ember canyon violet granite thunder""".split()


def _s(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b64(rng: random.Random, n_bytes: int) -> str:
    return base64.b64encode(rng.randbytes(n_bytes)).decode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _password(rng: random.Random) -> str:
    """What people choose: words, digits, a symbol or two."""
    style = rng.randrange(4)
    if style == 0:
        return rng.choice(_WORDS).capitalize() + str(rng.randrange(10, 9999)) + rng.choice("!#$%*?")
    if style == 1:
        return "-".join(rng.sample(_WORDS, 4))
    if style == 2:
        return _s(rng, _ALNUM + "!#%*-_", 20)
    return rng.choice(_WORDS) + rng.choice(_WORDS).capitalize() + str(rng.randrange(100))


def _url_password(rng: random.Random) -> str:
    """A password as it stands in a URL: letters, digits and the unreserved punctuation."""
    return _s(rng, _ALNUM, rng.randrange(10, 20)) + rng.choice("-_.~") + _s(rng, _ALNUM, 4)


def _jwt(rng: random.Random) -> str:
    header = {"alg": rng.choice(["HS256", "RS256"]), "typ": "JWT"}
    payload = {"sub": str(rng.randrange(10**9)), "name": rng.choice(_WORDS), "iat": 1700000000 + rng.randrange(10**7)}
    parts = [json.dumps(header, separators=(",", ":")).encode(), json.dumps(payload, separators=(",", ":")).encode()]
    return ".".join(_b64url(p) for p in parts) + "." + _b64url(rng.randbytes(32 if header["alg"] == "HS256" else 256))


def _pem(label: str, der_head: bytes, n_bytes: int) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        body = base64.b64encode(der_head + rng.randbytes(n_bytes)).decode()
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"])

    return make


def _base64_lines(data: bytes) -> str:
    text = base64.b64encode(data).decode()
    return "\n".join(text[i : i + 64] for i in range(0, len(text), 64))


def _putty_public(rng: random.Random) -> str:
    return _base64_lines(b"\x00\x00\x00\x07ssh-rsa" + rng.randbytes(270))  # 6 lines


def _putty_private(rng: random.Random) -> str:
    return _base64_lines(rng.randbytes(650))  # 14 lines


# Generators by name: what `{s_NAME}` and `{NAME}` in a template are filled with.
GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "aws_id": lambda r: "AKIA" + _s(r, _UPPER_DIGITS, 16),
    "aws_sts_id": lambda r: "ASIA" + _s(r, _UPPER_DIGITS, 16),
    "aws_secret": lambda r: _s(r, _B64, 40),
    "aws_session": lambda r: "IQoJb3JpZ2luX2Vj" + _s(r, _B64, 300),
    "ghp": lambda r: "ghp_" + _s(r, _ALNUM, 36),
    "gho": lambda r: "gho_" + _s(r, _ALNUM, 36),
    "ghs": lambda r: "ghs_" + _s(r, _ALNUM, 36),
    "ghu": lambda r: "ghu_" + _s(r, _ALNUM, 36),
    "github_pat": lambda r: "github_pat_11" + _s(r, _UPPER_DIGITS, 20) + "_" + _s(r, _ALNUM, 59),
    "glpat": lambda r: "glpat-" + _s(r, _URLSAFE, 20),
    "glrt": lambda r: "glrt-" + _s(r, _URLSAFE, 20),
    "xoxb": lambda r: f"xoxb-{_s(r, string.digits, 12)}-{_s(r, string.digits, 13)}-{_s(r, _ALNUM, 24)}",
    "xoxp": lambda r: f"xoxp-{_s(r, string.digits, 12)}-{_s(r, string.digits, 12)}-{_s(r, string.digits, 13)}-{_s(r, _HEX, 32)}",
    "xapp": lambda r: f"xapp-1-A{_s(r, _UPPER_DIGITS, 10)}-{_s(r, string.digits, 13)}-{_s(r, _HEX, 64)}",
    "slack_hook": lambda r: f"T{_s(r, _UPPER_DIGITS, 8)}/B{_s(r, _UPPER_DIGITS, 10)}/{_s(r, _ALNUM, 24)}",
    "sk_live": lambda r: "sk_live_" + _s(r, _ALNUM, 99),
    "sk_live_short": lambda r: "sk_live_" + _s(r, _ALNUM, 24),
    "rk_live": lambda r: "rk_live_" + _s(r, _ALNUM, 99),
    "whsec": lambda r: "whsec_" + _s(r, _ALNUM, 32),
    "google": lambda r: "AIza" + _s(r, _URLSAFE, 35),
    "gocspx": lambda r: "GOCSPX-" + _s(r, _URLSAFE, 28),
    "google_refresh": lambda r: "1//0" + _s(r, _URLSAFE, 100),
    "openai_proj": lambda r: "sk-proj-" + _s(r, _URLSAFE, 74) + "T3BlbkFJ" + _s(r, _URLSAFE, 74),
    "openai_legacy": lambda r: "sk-" + _s(r, _ALNUM, 20) + "T3BlbkFJ" + _s(r, _ALNUM, 20),
    "openai_svc": lambda r: "sk-svcacct-" + _s(r, _URLSAFE, 74) + "T3BlbkFJ" + _s(r, _URLSAFE, 74),
    "anthropic": lambda r: "sk-ant-api03-" + _s(r, _URLSAFE, 93) + "AA",
    "npm": lambda r: "npm_" + _s(r, _ALNUM, 36),
    "pypi": lambda r: "pypi-AgEIcHlwaS5vcmc" + _s(r, _URLSAFE, 160),
    "jwt": _jwt,
    "sendgrid": lambda r: "SG." + _s(r, _URLSAFE, 22) + "." + _s(r, _URLSAFE, 43),
    "twilio_sid": lambda r: "AC" + _s(r, _HEX, 32),
    "twilio_key": lambda r: "SK" + _s(r, _HEX, 32),
    "hex32": lambda r: _s(r, _HEX, 32),
    "hex40": lambda r: _s(r, _HEX, 40),
    "hex64": lambda r: _s(r, _HEX, 64),
    "b64_32": lambda r: _b64(r, 32),
    "b64url_32": lambda r: _b64url(r.randbytes(32)) + "=",
    "azure_key": lambda r: _b64(r, 64),
    "uuid": lambda r: str(uuid.UUID(bytes=r.randbytes(16), version=4)),
    "shopify": lambda r: "shpat_" + _s(r, _HEX, 32),
    "digitalocean": lambda r: "dop_v1_" + _s(r, _HEX, 64),
    "vault": lambda r: "hvs." + _s(r, _URLSAFE, 90),
    "telegram": lambda r: f"{r.randrange(10**9, 10**10)}:AA{_s(r, _URLSAFE, 33)}",
    "django": lambda r: "django-insecure-" + _s(r, string.ascii_lowercase + string.digits + "!@#$%^&*(-_=+)", 50),
    "password": _password,
    "url_password": _url_password,
    "basic": lambda r: base64.b64encode(f"{r.choice(_WORDS)}:{_password(r)}".encode()).decode(),
    "docker_auth": lambda r: base64.b64encode(f"{r.choice(_WORDS)}:{_s(r, _ALNUM, 24)}".encode()).decode(),
    "sas_sig": lambda r: _b64(r, 32).replace("+", "%2B").replace("/", "%2F").replace("=", "%3D"),
    "pem_rsa": _pem("RSA PRIVATE KEY", b"\x30\x82\x04\xa4\x02\x01\x00\x02\x82\x01\x01\x00", 1180),
    "pem_ec": _pem("EC PRIVATE KEY", b"\x30\x77\x02\x01\x01\x04\x20", 112),
    "pem_pkcs8": _pem("PRIVATE KEY", b"\x30\x82\x04\xbd\x02\x01\x00\x30\x0d\x06\x09\x2a\x86\x48", 1200),
    "pem_encrypted": _pem("ENCRYPTED PRIVATE KEY", b"\x30\x82\x05\x0e\x30\x40\x06\x09\x2a\x86\x48", 1290),
    "pem_openssh": _pem("OPENSSH PRIVATE KEY", b"openssh-key-v1\x00\x00\x00\x00\x04none", 380),
    "pem_dsa": _pem("DSA PRIVATE KEY", b"\x30\x82\x01\xbb\x02\x01\x00\x02\x81\x81\x00", 430),
    "pem_pgp": _pem("PGP PRIVATE KEY BLOCK", b"\x95\x03\xc6\x04", 900),
    "putty_public": _putty_public,  # public: it may stay
    "putty_private": _putty_private,
    # not secrets: they must survive
    "word": lambda r: r.choice(_WORDS),
    "port": lambda r: str(r.randrange(1024, 65000)),
}


# (kind, template). Placeholders: {s_GEN} a secret, {GEN} a random non-secret; `{{`/`}}` are braces.
TEMPLATES: list[tuple[str, str]] = [
    # AWS
    ("aws", "[default]\naws_access_key_id = {s_aws_id}\naws_secret_access_key = {s_aws_secret}\nregion = eu-west-1\n"),
    ("aws", "s3 = boto3.client(\n    \"s3\",\n    aws_access_key_id=\"{s_aws_id}\",\n    aws_secret_access_key=\"{s_aws_secret}\",\n)\n"),
    ("aws", "AWS_ACCESS_KEY_ID={s_aws_id}\nAWS_SECRET_ACCESS_KEY={s_aws_secret}\nAWS_DEFAULT_REGION=us-east-1\n"),
    ("aws", '{{\n  "Credentials": {{\n    "AccessKeyId": "{s_aws_sts_id}",\n    "SecretAccessKey": "{s_aws_secret}",\n    "SessionToken": "{s_aws_session}",\n    "Expiration": "2025-01-01T00:00:00Z"\n  }}\n}}\n'),
    ("aws", "const s3 = new AWS.S3({{ accessKeyId: '{s_aws_id}', secretAccessKey: '{s_aws_secret}', region: 'us-west-2' }});\n"),
    ("aws", 'provider "aws" {{\n  region     = "us-west-2"\n  access_key = "{s_aws_id}"\n  secret_key = "{s_aws_secret}"\n}}\n'),
    ("aws", "export AWS_SECRET_ACCESS_KEY='{s_aws_secret}'\nexport AWS_SESSION_TOKEN='{s_aws_session}'\n"),
    ("aws", "# temporary credentials for the backfill job: {s_aws_id}\nrun_backfill(bucket=\"logs-{word}\")\n"),
    # GitHub
    ("github", 'GITHUB_TOKEN = "{s_ghp}"\ngh = Github(GITHUB_TOKEN)\n'),
    ("github", "curl -H \"Authorization: token {s_ghp}\" https://api.github.com/user/repos\n"),
    ("github", "const octokit = new Octokit({{ auth: \"{s_gho}\" }});\n"),
    ("github", "GH_PAT={s_github_pat}\n"),
    ("github", "git remote set-url origin https://x-access-token:{s_ghs}@github.com/acme/{word}.git\n"),
    ("github", "      - run: gh release upload v1.2 dist/*\n        env:\n          GH_TOKEN: {s_ghs}\n"),
    ("github", "pip install git+https://{s_ghp}@github.com/acme/private-lib.git\n"),
    ("github", "headers = {{'Accept': 'application/vnd.github+json', 'X-GitHub-Api-Version': '2022-11-28'}}\nrequests.get(url, headers={{**headers, 'Authorization': 'Bearer {s_ghu}'}})\n"),
    # GitLab
    ("gitlab", "gl = gitlab.Gitlab('https://gitlab.example.com', private_token='{s_glpat}')\n"),
    ("gitlab", "curl --header \"PRIVATE-TOKEN: {s_glpat}\" \"https://gitlab.example.com/api/v4/projects\"\n"),
    ("gitlab", "gitlab-runner register --url https://gitlab.com --token {s_glrt} --executor docker\n"),
    # Slack
    ("slack", 'client = WebClient(token="{s_xoxb}")\nclient.chat_postMessage(channel="#{word}", text="deployed")\n'),
    ("slack", "SLACK_BOT_TOKEN={s_xoxb}\nSLACK_APP_TOKEN={s_xapp}\n"),
    ("slack", "const web = new WebClient('{s_xoxp}');\n"),
    ("slack", 'SLACK_WEBHOOK = "https://hooks.slack.com/services/{s_slack_hook}"\nrequests.post(SLACK_WEBHOOK, json={{"text": msg}})\n'),
    ("slack", "curl -X POST -H 'Content-type: application/json' --data '{{\"text\":\"hi\"}}' https://hooks.slack.com/services/{s_slack_hook}\n"),
    # Stripe
    ("stripe", "stripe.api_key = \"{s_sk_live}\"\ncharge = stripe.Charge.create(amount=2000, currency=\"usd\")\n"),
    ("stripe", "const stripe = require('stripe')('{s_sk_live_short}');\n"),
    ("stripe", "STRIPE_RESTRICTED_KEY={s_rk_live}\nSTRIPE_WEBHOOK_SECRET={s_whsec}\n"),
    ("stripe", "event = stripe.Webhook.construct_event(payload, sig_header, \"{s_whsec}\")\n"),
    # Google
    ("google", '<script src="https://maps.googleapis.com/maps/api/js?key={s_google}&callback=initMap"></script>\n'),
    ("google", "genai.configure(api_key=\"{s_google}\")\nmodel = genai.GenerativeModel(\"gemini-pro\")\n"),
    ("google", '{{"web": {{"client_id": "{port}-{word}.apps.googleusercontent.com", "client_secret": "{s_gocspx}", "redirect_uris": ["http://localhost"]}}}}\n'),
    ("google", 'creds = Credentials(None, refresh_token="{s_google_refresh}", client_id=CLIENT_ID, client_secret="{s_gocspx}")\n'),
    ("google", '{{\n  "type": "service_account",\n  "project_id": "{word}-prod",\n  "private_key_id": "{hex40}",\n  "private_key": "{s_pem_pkcs8}\\n",\n  "client_email": "ci@{word}-prod.iam.gserviceaccount.com"\n}}\n'),
    # OpenAI, Anthropic
    ("openai", 'client = OpenAI(api_key="{s_openai_proj}")\n'),
    ("openai", "OPENAI_API_KEY={s_openai_legacy}\n"),
    ("openai", "const openai = new OpenAI({{ apiKey: '{s_openai_svc}' }});\n"),
    ("openai", "curl https://api.openai.com/v1/models -H \"Authorization: Bearer {s_openai_proj}\"\n"),
    ("anthropic", 'client = anthropic.Anthropic(api_key="{s_anthropic}")\n'),
    ("anthropic", "export ANTHROPIC_API_KEY={s_anthropic}\n"),
    ("anthropic", "curl https://api.anthropic.com/v1/messages -H \"x-api-key: {s_anthropic}\" -H \"anthropic-version: 2023-06-01\"\n"),
    # npm, PyPI
    ("npm", "//registry.npmjs.org/:_authToken={s_npm}\n"),
    ("npm", "      - run: npm publish\n        env:\n          NODE_AUTH_TOKEN: {s_npm}\n"),
    ("npm", "npm config set //registry.npmjs.org/:_authToken {s_npm}\n"),
    ("npm", "//npm.pkg.github.com/:_authToken={s_ghp}\n@acme:registry=https://npm.pkg.github.com\n"),
    ("pypi", "[pypi]\n  username = __token__\n  password = {s_pypi}\n"),
    ("pypi", "twine upload -u __token__ -p {s_pypi} dist/*\n"),
    ("pypi", "TWINE_PASSWORD={s_pypi}\n"),
    ("pypi", "[[tool.uv.index]]\nname = \"pypi\"\n# token {s_pypi}\n"),
    # JWT
    ("jwt", 'const token = "{s_jwt}";\nfetch("/api/me", {{ headers: {{ Authorization: `Bearer ${{token}}` }} }});\n'),
    ("jwt", "curl -H 'Authorization: Bearer {s_jwt}' https://api.example.com/v1/orders\n"),
    ("jwt", "Cookie: session={s_jwt}; theme=dark\n"),
    ("jwt", "    def test_decode(self):\n        claims = decode_jwt(\"{s_jwt}\")\n"),
    ("jwt", "localStorage.setItem('access_token', '{s_jwt}');\n"),
    # PEM and SSH private keys
    ("private_key", "{s_pem_rsa}\n"),
    ("private_key", 'KEY = """\n{s_pem_ec}\n"""\nsigner = load_pem_private_key(KEY.encode(), None)\n'),
    ("private_key", "{s_pem_openssh}\n"),
    ("private_key", "tls:\n  key: |\n    {s_pem_pkcs8}\n  cert: server.crt\n"),
    ("private_key", "const key = `{s_pem_encrypted}`;\n"),
    ("private_key", "{s_pem_dsa}\n"),
    ("private_key", "{s_pem_pgp}\n"),
    ("private_key", "cat > ~/.ssh/id_ed25519 <<'EOF'\n{s_pem_openssh}\nEOF\nchmod 600 ~/.ssh/id_ed25519\n"),
    ("private_key", "PuTTY-User-Key-File-3: ssh-rsa\nEncryption: none\nComment: rsa-key-20240101\nPublic-Lines: 6\n"
                    "{putty_public}\nPrivate-Lines: 14\n{s_putty_private}\nPrivate-MAC: {hex64}\n"),
    # connection strings
    ("connection_string", "DATABASE_URL=postgres://app:{s_url_password}@db.internal:5432/app\n"),
    ("connection_string", "engine = create_engine(\"postgresql+psycopg2://etl:{s_url_password}@10.0.3.7:{port}/warehouse\")\n"),
    ("connection_string", 'MONGO_URI = "mongodb+srv://admin:{s_url_password}@cluster0.ab1cd.mongodb.net/?retryWrites=true&w=majority"\n'),
    ("connection_string", "const redis = new Redis('redis://:{s_url_password}@cache.internal:6379/0');\n"),
    ("connection_string", "REDIS_URL=rediss://default:{s_url_password}@{word}.upstash.io:6379\n"),
    ("connection_string", "spring.datasource.url=jdbc:mysql://root:{s_url_password}@localhost:3306/shop\n"),
    ("connection_string", "BROKER_URL = 'amqp://worker:{s_url_password}@rabbitmq:5672/{word}'\n"),
    ("connection_string", 'String url = "jdbc:postgresql://db:5432/app?user=app&password={s_url_password}&ssl=true";\n'),
    ("connection_string", 'conn = pyodbc.connect("Driver={{ODBC Driver 18 for SQL Server}};Server=tcp:{word}.database.windows.net,1433;Database=app;Uid=admin;Pwd={s_url_password};Encrypt=yes;")\n'),
    ("connection_string", '"ConnectionStrings": {{ "Default": "Server=db;Database=app;User Id=sa;Password={s_url_password};TrustServerCertificate=True" }}\n'),
    ("connection_string", "ftp = 'ftp://anonymous:{s_url_password}@ftp.{word}.org/pub'\n"),
    ("connection_string", "psql \"host=db.internal port=5432 dbname=app user=app password={s_url_password} sslmode=require\"\n"),
    ("connection_string", "smtp_url = \"smtps://mailer%40acme.com:{s_url_password}@smtp.gmail.com:465\"\n"),
    # passwords and generic secrets by name
    ("password", 'password = "{s_password}"\n'),
    ("password", "DB_PASSWORD={s_password}\n"),
    ("password", "database:\n  host: db\n  user: app\n  PASSWORD: {s_url_password}\n"),
    ("password", "export SECRET_KEY={s_hex64}\npython manage.py runserver\n"),
    ("password", "SECRET_KEY = '{s_django}'\nDEBUG = False\n"),
    ("password", "services:\n  db:\n    image: postgres:16\n    environment:\n      - POSTGRES_PASSWORD={s_url_password}\n"),
    ("password", "    environment:\n      MYSQL_ROOT_PASSWORD: \"{s_password}\"\n"),
    ("password", "mysql -h db -u root --password={s_url_password} shop < dump.sql\n"),
    ("password", "PGPASSWORD={s_url_password} psql -h localhost -U postgres\n"),
    ("password", "apiVersion: v1\nkind: Secret\ntype: Opaque\ndata:\n  password: {s_b64_32}\n"),
    ("password", "$env:DB_PASSWORD = \"{s_password}\"\n"),
    ("password", "conn = psycopg2.connect(host=\"db\", user=\"app\", password=\"{s_password}\")\n"),
    ("password", 'r = requests.get("https://api.{word}.com/v1/items", auth=("svc-reader", "{s_password}"))\n'),
    ("password", "curl -u admin:{s_url_password} https://jenkins.internal/api/json\n"),
    ("password", "machine api.heroku.com\n  login me@example.com\n  password {s_uuid}\n"),
    ("password", "let passphrase = \"{s_password}\";\n"),
    ("password", "[mysql]\nuser=root\npassword={s_url_password}\n"),
    ("generic", "JWT_SECRET={s_b64url_32}\n"),
    ("generic", "WEBHOOK_SECRET = \"{s_hex40}\"\n"),
    ("generic", "ENCRYPTION_KEY = '{s_b64_32}'\n"),
    ("generic", "signing_key = \"{s_hex64}\"\n"),
    ("generic", "app.config['SESSION_SECRET'] = '{s_b64_32}'\n"),
    ("generic", "const clientSecret = '{s_b64url_32}';\n"),
    ("generic", "refresh_token: {s_b64url_32}\n"),
    ("generic", "FERNET_KEY={s_b64url_32}\n"),
    ("generic", "HMAC_KEY: \"{s_hex64}\"\n"),
    # Authorization headers
    ("auth_header", "Authorization: Basic {s_basic}\n"),
    ("auth_header", "GET /v1/orders HTTP/1.1\nHost: api.{word}.com\nAuthorization: Bearer {s_b64url_32}\nAccept: application/json\n"),
    ("auth_header", "headers = {{\"Authorization\": \"Basic {s_basic}\", \"Content-Type\": \"application/json\"}}\n"),
    ("auth_header", "req.setRequestHeader('Authorization', 'Bearer {s_hex40}');\n"),
    ("auth_header", "proxy_set_header Authorization \"Basic {s_basic}\";\n"),
    # Azure
    ("azure", "AZURE_STORAGE_CONNECTION_STRING=DefaultEndpointsProtocol=https;AccountName={word}store;AccountKey={s_azure_key};EndpointSuffix=core.windows.net\n"),
    ("azure", 'blob = BlobServiceClient.from_connection_string("DefaultEndpointsProtocol=https;AccountName={word};AccountKey={s_azure_key};EndpointSuffix=core.windows.net")\n'),
    ("azure", '"ServiceBus": "Endpoint=sb://{word}.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={s_b64_32}"\n'),
    ("azure", 'url = "https://{word}.blob.core.windows.net/exports/data.csv?sv=2022-11-02&ss=b&srt=o&sp=r&se=2030-01-01T00:00:00Z&sig={s_sas_sig}"\n'),
    # Twilio, SendGrid, Heroku
    ("twilio", "account_sid = \"{twilio_sid}\"\nauth_token = \"{s_hex32}\"\nclient = Client(account_sid, auth_token)\n"),
    ("twilio", "TWILIO_ACCOUNT_SID={twilio_sid}\nTWILIO_AUTH_TOKEN={s_hex32}\nTWILIO_API_KEY={s_twilio_key}\n"),
    ("sendgrid", "sg = SendGridAPIClient(\"{s_sendgrid}\")\n"),
    ("sendgrid", "SENDGRID_API_KEY={s_sendgrid}\n"),
    ("sendgrid", "sgMail.setApiKey('{s_sendgrid}');\n"),
    ("heroku", "HEROKU_API_KEY={s_uuid}\n"),
    ("heroku", "heroku_api_key: \"{s_uuid}\"\n"),
    # Docker
    ("docker", '{{\n  "auths": {{\n    "https://index.docker.io/v1/": {{\n      "auth": "{s_docker_auth}"\n    }}\n  }}\n}}\n'),
    ("docker", '{{"auths": {{"ghcr.io": {{"auth": "{s_docker_auth}"}}, "registry.gitlab.com": {{"username": "ci", "password": "{s_glpat}"}}}}}}\n'),
    ("docker", "echo {s_ghp} | docker login ghcr.io -u {word} --password-stdin\n"),
    ("docker", "docker login -u {word} -p {s_url_password} registry.example.com\n"),
    # other services with a recognisable shape
    ("other", "SHOPIFY_ACCESS_TOKEN={s_shopify}\n"),
    ("other", "session = shopify.Session(shop_url, api_version, \"{s_shopify}\")\n"),
    ("other", "client = digitalocean.Manager(token=\"{s_digitalocean}\")\n"),
    ("other", "vault login {s_vault}\n"),
    ("other", "bot = telebot.TeleBot(\"{s_telegram}\")\n"),
]


@dataclass(frozen=True)
class Positive:
    kind: str
    template: str
    text: str
    secrets: tuple[str, ...]  # each must be gone from redact(text)
    keep: tuple[str, ...]  # each must still be in redact(text): the template's literal pieces, the non-secret values


_FIELD = re.compile(r"\{(s_)?(\w+)\}")


def fill(template: str, rng: random.Random) -> Positive:
    values: dict[str, str] = {}
    secrets: list[str] = []
    keep: list[str] = []
    for m in _FIELD.finditer(template.replace("{{", "\0\0").replace("}}", "\1\1")):
        field = m.group(0)[1:-1]
        if field not in values:
            values[field] = GENERATORS[m.group(2)](rng)
            (secrets if m.group(1) else keep).append(values[field])
    text = template.format(**values)
    pieces = _FIELD.split(template.replace("{{", "\0\0").replace("}}", "\1\1"))[::3]
    keep += [p.replace("\0\0", "{").replace("\1\1", "}").strip() for p in pieces]
    return Positive("", template, text, tuple(secrets), tuple(k for k in keep if k))


def positives(seed: int = 0, variants: int = 3) -> list[Positive]:
    """Every template, filled `variants` times with values drawn from one seeded generator."""
    rng = random.Random(seed)
    out = []
    for _ in range(variants):
        for kind, template in TEMPLATES:
            p = fill(template, rng)
            out.append(Positive(kind, template, p.text, p.secrets, p.keep))
    return out


def leaks(secret: str, redacted: str, template: str) -> list[str]:
    """The parts of `secret` still in `redacted`: any 12 characters of it (a secret cut in half, or one
    line of a key, still leaks), except runs the template itself spells out."""
    n = min(12, len(secret))
    windows = {secret[i : i + n] for i in range(len(secret) - n + 1)}
    return sorted(w for w in windows if w in redacted and w not in template)


# Negatives ---------------------------------------------------------------------------------------------

_SKIP_DIRS = {"test", "tests", "idle_test", "__pycache__", "site-packages"}


def stdlib_files() -> list[Path]:
    """The standard library's packages (directories with an __init__.py, their test packages left out),
    then its single-file modules. Never site-packages: the third-party packages there are not ours to
    measure on."""
    root = Path(os.__file__).parent
    files: list[Path] = []
    for pkg in sorted(p for p in root.iterdir() if p.name not in _SKIP_DIRS and (p / "__init__.py").is_file()):
        for folder, dirs, names in os.walk(pkg):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
            files += [Path(folder) / n for n in sorted(names) if n.endswith(".py")]
    return files + sorted(root.glob("*.py"))


def npm_files(suffixes: tuple[str, ...], root: Path = NODE_MODULES) -> list[Path]:
    """Files with these suffixes in the npm packages under `root`."""
    if not root.is_dir():
        return []
    return [p for p in sorted(root.rglob("*")) if p.name.endswith(suffixes) and p.is_file()]


def lockfiles(root: Path = NODE_MODULES) -> list[Path]:
    """The extension's package-lock.json and those inside its packages: integrity hashes, resolved URLs."""
    if not root.is_dir():
        return []
    locks = [root.parent / "package-lock.json", *sorted(root.rglob("package-lock.json")), *sorted(root.rglob("yarn.lock"))]
    return [p for p in locks if p.is_file()]


def negative_sets() -> dict[str, list[Path]]:
    return {
        "python-stdlib": stdlib_files(),
        "npm-js": npm_files((".js", ".mjs", ".cjs")) + lockfiles(),
        "npm-ts": npm_files((".ts", ".mts", ".cts")),
    }


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def changed_lines(text: str, redacted: str) -> Iterator[tuple[int, str, str]]:
    """(1-based line number, original, redacted) for each line `redact` changed."""
    if redacted == text:
        return
    a, b = text.split("\n"), redacted.split("\n")
    if len(a) == len(b):
        yield from ((i + 1, x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y)
        return
    import difflib

    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            for k in range(i1, i2):
                yield k + 1, a[k], "\n".join(b[j1:j2]) if k == i1 else ""
