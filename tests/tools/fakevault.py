#!/usr/bin/env python3
"""fakevault — a local stand-in for HashiCorp Vault, for tests only (issue 20).

HashiCorp Vault cannot be installed on the test machines, so this server follows Vault's
published HTTP API (the Vault 1.15 API documentation) for exactly the endpoints MByte's vault
module uses, with the same paths, request bodies, answers, status codes and error JSON
({"errors": [...]}):

  GET  /v1/sys/health                          200 active, 503 sealed (body says sealed: true)
  POST /v1/sys/wrapping/unwrap                 the wrapping token in X-Vault-Token; single use
  POST /v1/auth/approle/login                  {role_id, secret_id} -> auth.client_token
  POST /v1/auth/approle/role/<name>            create a role {token_ttl, token_max_ttl} (root)
  GET  /v1/auth/approle/role/<name>/role-id    (root)
  POST /v1/auth/approle/role/<name>/secret-id  (root; X-Vault-Wrap-TTL answers wrap_info)
  POST /v1/auth/token/renew-self               a new TTL, capped by the token's max TTL
  GET  /v1/auth/token/lookup-self              data.ttl, data.renewable
  GET  /v1/<mount>/data/<path>[?version=N]     KV v2 read; POST/PUT writes a new version
  GET  /v1/<mount>/metadata/<path>             KV v2 metadata (current_version, versions)
  POST /v1/transit/keys/<name>                 create a key; .../rotate makes a new version
  POST /v1/transit/encrypt|decrypt|rewrap/<name>, /v1/transit/datakey/plaintext/<name>

Tokens have real TTLs that expire (a dead token is answered 403 "permission denied"), a sealed
server answers 503 {"errors": ["Vault is sealed"]} to everything but sys/health, and wrong
credentials are refused as Vault refuses them. Transit ciphertexts read "vault:v<N>:<base64>"
as Vault's do; the cipher inside is an HMAC-SHA256 keystream with an HMAC tag (the standard
library has no AES-GCM), which keeps what matters here: opaque, versioned, tamper-evident.

Test control (not Vault's API, no token): POST /_control/seal, /_control/unseal,
/_control/revoke-tokens (every token but root dies: the next renewal is refused),
GET /_control/stats (counts of logins, renewals, unwraps, requests; live_tokens: unexpired non-root tokens).

Usage: fakevault.py --port N --root-token T [--cert F --key F]   (prints "ready" when serving)
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

VERSION = "1.15.6"


class VaultError(Exception):
    def __init__(self, status, *errors):
        super().__init__(status)
        self.status = status
        self.errors = list(errors)


class State:
    def __init__(self, root_token):
        self.lock = threading.Lock()
        self.sealed = False
        self.root = root_token
        # token -> {"expires": monotonic or None, "max": monotonic or None, "ttl": s, "renewable": bool}
        self.tokens = {root_token: {"expires": None, "max": None, "ttl": 0, "renewable": False}}
        self.wrapping = {}  # wrapping token -> (expires, response data)
        self.roles = {}  # name -> {"role_id", "token_ttl", "token_max_ttl", "secret_ids": set()}
        self.kv = {}  # (mount, path) -> [ {data, created} ... ] (index = version - 1)
        self.transit = {}  # name -> [key bytes per version]
        self.stats = {"logins": 0, "renewals": 0, "unwraps": 0, "requests": 0, "kv_reads": 0, "refused": 0}

    # ------------------------------------------------------------ tokens ---
    def token(self, tok):
        t = self.tokens.get(tok or "")
        if not t or (t["expires"] is not None and time.monotonic() >= t["expires"]):
            raise VaultError(403, "permission denied")
        return t

    def root_only(self, tok):
        if tok != self.root:
            raise VaultError(403, "permission denied")

    def new_token(self, ttl, max_ttl):
        tok = "hvs." + secrets.token_urlsafe(24)
        now = time.monotonic()
        self.tokens[tok] = {"expires": now + ttl if ttl else None, "max": now + max_ttl if max_ttl else None,
                            "ttl": ttl, "renewable": bool(ttl)}
        return tok

    def auth_block(self, tok):
        t = self.tokens[tok]
        left = 0 if t["expires"] is None else max(0, int(round(t["expires"] - time.monotonic())))
        return {"client_token": tok, "accessor": hashlib.sha256(tok.encode()).hexdigest()[:24],
                "policies": ["default"], "token_policies": ["default"], "metadata": {},
                "lease_duration": left, "renewable": t["renewable"], "entity_id": "", "token_type": "service",
                "orphan": True}


def envelope(data=None, auth=None, wrap_info=None):
    return {"request_id": str(uuid.uuid4()), "lease_id": "", "renewable": False, "lease_duration": 0,
            "data": data, "wrap_info": wrap_info, "warnings": None, "auth": auth}


def keystream_seal(key, plain):
    nonce = secrets.token_bytes(16)
    stream = b""
    i = 0
    while len(stream) < len(plain):
        stream += hmac.new(key, nonce + i.to_bytes(8, "big"), hashlib.sha256).digest()
        i += 1
    ct = bytes(a ^ b for a, b in zip(plain, stream))
    tag = hmac.new(key, b"tag" + nonce + ct, hashlib.sha256).digest()
    return nonce + ct + tag


def keystream_open(key, blob):
    if len(blob) < 48:
        raise VaultError(400, "invalid ciphertext: too short")
    nonce, ct, tag = blob[:16], blob[16:-32], blob[-32:]
    if not hmac.compare_digest(tag, hmac.new(key, b"tag" + nonce + ct, hashlib.sha256).digest()):
        raise VaultError(400, "cipher: message authentication failed")
    stream = b""
    i = 0
    while len(stream) < len(ct):
        stream += hmac.new(key, nonce + i.to_bytes(8, "big"), hashlib.sha256).digest()
        i += 1
    return bytes(a ^ b for a, b in zip(ct, stream))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body):
        raw = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return {}
        try:
            b = json.loads(raw)
        except ValueError:
            raise VaultError(400, "failed to parse JSON input")
        if not isinstance(b, dict):
            raise VaultError(400, "failed to parse JSON input")
        return b

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("POST")

    def dispatch(self, method):
        st = self.state
        u = urlparse(self.path)
        path, query = u.path, parse_qs(u.query)
        try:
            body = self.body()
            with st.lock:
                st.stats["requests"] += 1
                if path.startswith("/_control/"):
                    return self.reply(200, self.control(path[len("/_control/"):]))
                if not path.startswith("/v1/"):
                    raise VaultError(404)
                p = path[len("/v1/"):]
                if p == "sys/health":
                    h = {"initialized": True, "sealed": st.sealed, "standby": False, "performance_standby": False,
                         "replication_performance_mode": "disabled", "replication_dr_mode": "disabled",
                         "server_time_utc": int(time.time()), "version": VERSION, "cluster_name": "fakevault",
                         "cluster_id": "fakevault"}
                    return self.reply(503 if st.sealed else 200, h)
                if st.sealed:
                    raise VaultError(503, "Vault is sealed")
                status, out = self.api(method, p, query, body, self.headers.get("X-Vault-Token"))
                return self.reply(status, out)
        except VaultError as e:
            with st.lock:
                st.stats["refused"] += 1
            self.reply(e.status, {"errors": e.errors})

    def control(self, what):
        st = self.state
        if what == "seal":
            st.sealed = True
        elif what == "unseal":
            st.sealed = False
        elif what == "revoke-tokens":
            st.tokens = {st.root: st.tokens[st.root]}
        elif what != "stats":
            raise VaultError(404)
        now = time.monotonic()
        live = sum(1 for t, v in st.tokens.items() if t != st.root and (v["expires"] is None or v["expires"] > now))
        return dict(st.stats, sealed=st.sealed, live_tokens=live)

    # --------------------------------------------------------------- api ---
    def api(self, method, p, query, body, tok):
        st = self.state
        parts = p.split("/")
        if p == "sys/wrapping/unwrap" and method == "POST":
            w = st.wrapping.pop(tok or "", None)  # single use: gone whatever happens next
            if not w or time.monotonic() >= w[0]:
                raise VaultError(400, "wrapping token is not valid or does not exist")
            st.stats["unwraps"] += 1
            return 200, envelope(data=w[1])
        if p == "auth/approle/login" and method == "POST":
            rid, sid = body.get("role_id"), body.get("secret_id")
            for role in st.roles.values():
                if role["role_id"] == rid and sid in role["secret_ids"]:
                    tok = st.new_token(role["token_ttl"], role["token_max_ttl"])
                    st.stats["logins"] += 1
                    return 200, envelope(auth=st.auth_block(tok))
            raise VaultError(400, "invalid role or secret ID")
        if p == "auth/token/lookup-self" and method == "GET":
            t = st.token(tok)
            left = 0 if t["expires"] is None else max(0, int(round(t["expires"] - time.monotonic())))
            return 200, envelope(data={"id": tok, "ttl": left, "renewable": t["renewable"], "policies": ["default"],
                                       "creation_ttl": t["ttl"], "type": "service"})
        if p == "auth/token/renew-self" and method == "POST":
            t = st.token(tok)
            if not t["renewable"]:
                raise VaultError(400, "lease is not renewable")
            now = time.monotonic()
            new = now + t["ttl"]
            if t["max"] is not None:
                new = min(new, t["max"])
            t["expires"] = new
            st.stats["renewals"] += 1
            return 200, envelope(auth=st.auth_block(tok))
        if parts[:3] == ["auth", "approle", "role"] and len(parts) >= 4:
            st.root_only(tok)
            name = parts[3]
            if len(parts) == 4 and method == "POST":
                role = st.roles.setdefault(name, {"role_id": str(uuid.uuid4()), "secret_ids": set()})
                role["token_ttl"] = int(body.get("token_ttl", 3600))
                role["token_max_ttl"] = int(body.get("token_max_ttl", 0))
                return 204, None
            role = st.roles.get(name)
            if not role:
                raise VaultError(400, "invalid role name \"%s\"" % name)
            if parts[4:] == ["role-id"] and method == "GET":
                return 200, envelope(data={"role_id": role["role_id"]})
            if parts[4:] == ["secret-id"] and method == "POST":
                sid = str(uuid.uuid4())
                role["secret_ids"].add(sid)
                data = {"secret_id": sid, "secret_id_accessor": str(uuid.uuid4()), "secret_id_ttl": 0,
                        "secret_id_num_uses": 0}
                wrap = self.headers.get("X-Vault-Wrap-TTL")
                if wrap:
                    wt = "hvs." + secrets.token_urlsafe(24)
                    ttl = int(wrap.rstrip("s"))
                    st.wrapping[wt] = (time.monotonic() + ttl, data)
                    return 200, envelope(wrap_info={"token": wt, "accessor": str(uuid.uuid4()), "ttl": ttl,
                                                    "creation_time": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                                    "creation_path": p})
                return 200, envelope(data=data)
            raise VaultError(405, "unsupported operation")
        if parts[0] == "transit":
            return self.transit(method, parts[1:], body, tok)
        if len(parts) >= 3 and parts[1] in ("data", "metadata"):
            return self.kv(method, parts[0], parts[1], "/".join(parts[2:]), query, body, tok)
        raise VaultError(404, "no handler for route \"%s\"" % p)

    def kv(self, method, mount, kind, path, query, body, tok):
        st = self.state
        st.token(tok)
        versions = st.kv.get((mount, path))
        if kind == "data" and method == "POST":
            if not isinstance(body.get("data"), dict):
                raise VaultError(400, "no data provided")
            versions = st.kv.setdefault((mount, path), [])
            versions.append({"data": body["data"], "created": time.strftime("%Y-%m-%dT%H:%M:%SZ")})
            return 200, envelope(data={"version": len(versions), "created_time": versions[-1]["created"],
                                       "deletion_time": "", "destroyed": False, "custom_metadata": None})
        if method != "GET":
            raise VaultError(405, "unsupported operation")
        if not versions:
            raise VaultError(404)
        if kind == "metadata":
            vs = {str(i + 1): {"created_time": v["created"], "deletion_time": "", "destroyed": False}
                  for i, v in enumerate(versions)}
            return 200, envelope(data={"current_version": len(versions), "oldest_version": 1, "versions": vs,
                                       "max_versions": 0, "cas_required": False, "custom_metadata": None})
        n = int(query.get("version", ["0"])[0] or 0) or len(versions)
        if n < 1 or n > len(versions):
            raise VaultError(404)
        st.stats["kv_reads"] += 1
        v = versions[n - 1]
        return 200, envelope(data={"data": v["data"], "metadata": {"version": n, "created_time": v["created"],
                                                                   "deletion_time": "", "destroyed": False,
                                                                   "custom_metadata": None}})

    def transit(self, method, parts, body, tok):
        st = self.state
        st.token(tok)
        if method != "POST" or not parts:
            raise VaultError(405, "unsupported operation")
        if parts[0] == "keys" and len(parts) == 2:
            st.transit.setdefault(parts[1], [secrets.token_bytes(32)])
            return 204, None
        if parts[0] == "keys" and len(parts) == 3 and parts[2] == "rotate":
            keys = self.key(parts[1])
            keys.append(secrets.token_bytes(32))
            return 200, envelope(data={"name": parts[1], "latest_version": len(keys), "type": "aes256-gcm96"})
        op = parts[0]
        if op == "datakey" and len(parts) == 3 and parts[1] in ("plaintext", "wrapped"):
            keys = self.key(parts[2])
            bits = int(body.get("bits", 256))
            if bits not in (128, 256, 512):
                raise VaultError(400, "invalid bits value")
            plain = secrets.token_bytes(bits // 8)
            data = {"ciphertext": self.seal(keys, plain), "key_version": len(keys)}
            if parts[1] == "plaintext":
                data["plaintext"] = base64.b64encode(plain).decode()
            return 200, envelope(data=data)
        if len(parts) != 2:
            raise VaultError(404)
        keys = self.key(parts[1])
        if op == "encrypt":
            try:
                plain = base64.b64decode(body.get("plaintext", ""), validate=True)
            except ValueError:
                raise VaultError(400, "failed to base64-decode plaintext")
            return 200, envelope(data={"ciphertext": self.seal(keys, plain), "key_version": len(keys)})
        if op in ("decrypt", "rewrap"):
            plain = self.open(keys, body.get("ciphertext", ""))
            if op == "decrypt":
                return 200, envelope(data={"plaintext": base64.b64encode(plain).decode()})
            return 200, envelope(data={"ciphertext": self.seal(keys, plain), "key_version": len(keys)})
        raise VaultError(404)

    def key(self, name):
        keys = self.state.transit.get(name)
        if not keys:
            raise VaultError(400, "encryption key not found")
        return keys

    @staticmethod
    def seal(keys, plain):
        return "vault:v%d:%s" % (len(keys), base64.b64encode(keystream_seal(keys[-1], plain)).decode())

    @staticmethod
    def open(keys, ct):
        try:
            _, ver, b = ct.split(":", 2)
            n = int(ver[1:])
            blob = base64.b64decode(b, validate=True)
        except ValueError:
            raise VaultError(400, "invalid ciphertext")
        if n < 1 or n > len(keys):
            raise VaultError(400, "invalid key version")
        return keystream_open(keys[n - 1], blob)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--root-token", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    a = ap.parse_args()
    Handler.state = State(a.root_token)
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("ready", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
