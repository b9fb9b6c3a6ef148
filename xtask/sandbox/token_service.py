#!/usr/bin/env python3
"""The sandbox registry's token service, as GHCR answers: the distribution token specification.

Started by `cargo xtask sandbox up --registry-auth token` (the xtask embeds this file and runs a
copy from `target/sandbox/token-service/`). The registry (Debian's `docker-registry`, distribution
2.x, `auth: token`) answers every unauthenticated API call with
`401 WWW-Authenticate: Bearer realm=...,service=...,scope=...`; the client asks this service for a
token with its basic credentials and retries with `Authorization: Bearer <token>`.

    token_service.py init  --dir DIR
        creates DIR/key.pem (EC P-256, mode 0600) and DIR/cert.pem (self-signed; the registry's
        `rootcertbundle`) unless both exist
    token_service.py serve --dir DIR --port P --issuer I --service S --user U --password-file F
        GET /token?service=S&scope=repository:NAME:pull,push[&scope=...]  (basic credentials)
        GET /health
    token_service.py mint  --dir DIR --issuer I --service S --user U --scope SCOPE [--lifetime S]
        prints a token signed with DIR's key (a negative lifetime makes an expired one: tests)

Tokens: an ES256 JWT whose header carries `kid`, the libtrust key ID of the signing key (the form
distribution 2.x looks up among the keys of its rootcertbundle's certificates); claims `iss`,
`sub`, `aud` (one string: distribution 2.x reads it as a string), `exp` (LIFETIME seconds),
`nbf`, `iat`, `jti`, and `access`: for each requested `repository:NAME:ACTIONS` scope, the
requested actions among `pull` and `push` (`*` means both). Other resource types get nothing.

Credentials: the one sandbox user, the password compared (constant time) with the content of
`--password-file` (the sandbox registry's generated token), read on every request. Wrong or
missing credentials: 401 with a JSON `errors` body and `WWW-Authenticate: Basic`.

Fault injection for the end-to-end tests: while `DIR/serve-token` exists and is not empty, a
request with valid credentials is answered with that file's content as the token instead of a
freshly minted one (a token for another repository, an expired token). Nothing else reads it.

The log (stdout/stderr, `DIR/token-service.log`) has one line per request: method, path with its
query (service and scopes only; the query never carries a secret) and the status. Neither the
Authorization header nor a token is ever logged.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import secrets
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LIFETIME = 300  # seconds: GHCR's tokens are short-lived too
ACTIONS = ("pull", "push")


def key_path(d):
    return os.path.join(d, "key.pem")


def cert_path(d):
    return os.path.join(d, "cert.pem")


def init(d):
    """Creates the signing key and its self-signed certificate (idempotent)."""
    os.makedirs(d, exist_ok=True)
    if os.path.isfile(key_path(d)) and os.path.isfile(cert_path(d)):
        return
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "observer-sandbox-token-service")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path(d) + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    with open(cert_path(d) + ".tmp", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(key_path(d) + ".tmp", key_path(d))
    os.replace(cert_path(d) + ".tmp", cert_path(d))


def load_key(d):
    with open(key_path(d), "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def libtrust_kid(public_key):
    """libtrust's key ID: SHA-256 of the DER SubjectPublicKeyInfo, first 240 bits, base32,
    twelve groups of four characters joined by ':'."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def access_for(scopes):
    """The `access` claim for the requested scopes: repository scopes only, pull/push only."""
    grants = {}
    for scope in scopes:
        for one in scope.split(" "):
            parts = one.split(":")
            if len(parts) < 3 or parts[0] != "repository":
                continue
            name, wanted = ":".join(parts[1:-1]), parts[-1].split(",")
            if "*" in wanted:
                wanted = list(ACTIONS)
            got = grants.setdefault(name, [])
            for a in ACTIONS:
                if a in wanted and a not in got:
                    got.append(a)
    return [
        {"type": "repository", "name": n, "actions": a} for n, a in grants.items() if a
    ]


def mint(key, issuer, service, subject, access, lifetime=LIFETIME, now=None):
    now = int(time.time() if now is None else now)
    claims = {
        "iss": issuer,
        "sub": subject,
        "aud": service,
        "exp": now + lifetime,
        "nbf": min(now, now + lifetime) - 1,
        "iat": min(now, now + lifetime) - 1,
        "jti": secrets.token_hex(16),
        "access": access,
    }
    headers = {"kid": libtrust_kid(key.public_key()), "typ": "JWT"}
    return jwt.encode(claims, key, algorithm="ES256", headers=headers)


def basic_credentials(header):
    if not header or not header.startswith("Basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    user, sep, password = raw.partition(":")
    return (user, password) if sep else None


def make_handler(opts, key):
    class Handler(BaseHTTPRequestHandler):
        server_version = "observer-sandbox-token-service"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # the request line has no secret; headers never logged
            sys.stderr.write("%s %s\n" % (self.log_date_time_string(), fmt % args))
            sys.stderr.flush()

        def answer(self, status, body, extra=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def error(self, status, code, message, extra=()):
            self.answer(status, {"errors": [{"code": code, "message": message}]}, extra)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/health":
                return self.answer(200, {"status": "ok"})
            if url.path != "/token":
                return self.error(404, "NOT_FOUND", "no such endpoint")
            q = urllib.parse.parse_qs(url.query)
            service = q.get("service", [""])[0]
            if service != opts.service:
                return self.error(400, "INVALID_REQUEST", "unknown service %r" % service)
            creds = basic_credentials(self.headers.get("Authorization"))
            try:
                with open(opts.password_file, encoding="utf-8") as f:
                    password = f.read().strip()
            except OSError:
                return self.error(500, "UNAVAILABLE", "the service cannot read its password file")
            ok = (
                creds is not None
                and hmac.compare_digest(creds[0].encode(), opts.user.encode())
                and hmac.compare_digest(creds[1].encode(), password.encode())
            )
            if not ok:
                return self.error(
                    401,
                    "UNAUTHORIZED",
                    "invalid username or password" if creds else "authentication required",
                    [("WWW-Authenticate", 'Basic realm="observer-sandbox-token-service"')],
                )
            token = None
            try:
                with open(os.path.join(opts.dir, "serve-token"), encoding="utf-8") as f:
                    token = f.read().strip() or None
            except OSError:
                pass
            now = int(time.time())
            if token is None:
                token = mint(key, opts.issuer, opts.service, creds[0], access_for(q.get("scope", [])), now=now)
            issued = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
            self.answer(
                200,
                {
                    "token": token,
                    "access_token": token,
                    "expires_in": LIFETIME,
                    "issued_at": issued.strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            )

        def do_POST(self):  # OAuth2 form posts: clients fall back to GET on 404
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self.error(404, "UNSUPPORTED", "use GET with basic credentials")

    return Handler


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("init", "serve", "mint"):
        s = sub.add_parser(name)
        s.add_argument("--dir", required=True)
        if name != "init":
            s.add_argument("--issuer", required=True)
            s.add_argument("--service", required=True)
            s.add_argument("--user", required=True)
        if name == "serve":
            s.add_argument("--port", type=int, required=True)
            s.add_argument("--password-file", required=True)
        if name == "mint":
            s.add_argument("--scope", action="append", default=[])
            s.add_argument("--lifetime", type=int, default=LIFETIME)
    opts = p.parse_args(argv)
    if opts.cmd == "init":
        init(opts.dir)
        return 0
    key = load_key(opts.dir)
    if opts.cmd == "mint":
        print(mint(key, opts.issuer, opts.service, opts.user, access_for(opts.scope), opts.lifetime))
        return 0
    server = ThreadingHTTPServer(("127.0.0.1", opts.port), make_handler(opts, key))
    server.daemon_threads = True
    sys.stderr.write(
        "token service on http://127.0.0.1:%d/token (service %s, issuer %s, kid %s)\n"
        % (opts.port, opts.service, opts.issuer, libtrust_kid(key.public_key()))
    )
    sys.stderr.flush()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
