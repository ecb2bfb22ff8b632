#!/usr/bin/python3
"""Bearer tokens (SPEC 3): --token-file with read, write and admin scopes.

Writes need a token with write (or admin) scope: none -> 401, a read token ->
403. Reads are open unless --auth-read. Tokens never appear in the log.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import checks, ckptd, fixtures, harness  # noqa: E402

TOKENS = "tok-w write\ntok-r read\ntok-a admin\n"
DATA = None


def token_file():
    path = os.path.join(ckptd.work_dir(), "tokens")
    with open(path, "w") as f:
        f.write(TOKENS)
    os.chmod(path, 0o600)
    return path


def setUpModule():
    global DATA
    DATA = fixtures.seed_bytes("views_and_tied.pt")


class Tokens(ckptd.DaemonCase):
    NAME = "auth"

    @classmethod
    def daemon_args(cls):
        return ["--token-file", token_file()]

    def test_upload_without_a_token_is_401(self):
        r = self.d.upload("auth-m", DATA)
        checks.error_json(self, r, 401, "upload without token")
        checks.error_json(self, self.d.get("/models/auth-m/checkpoints"), 404, "model")

    def test_upload_with_an_unknown_token_is_401(self):
        r = self.d.upload("auth-m", DATA, token="tok-nope")
        checks.error_json(self, r, 401, "upload with an unknown token")
        r = self.d.upload("auth-m", DATA, token="tok-w2")
        checks.error_json(self, r, 401, "upload with a token that extends a real one")
        r = self.d.upload("auth-m", DATA, token="tok-")
        checks.error_json(self, r, 401, "upload with a prefix of a real token")

    def test_malformed_authorization_is_401(self):
        for h in ("tok-w", "Basic dG9rLXc6", "Bearer", "Bearer  "):
            with self.subTest(h=h):
                r = self.d.request("POST", "/models/auth-m/checkpoints", body=DATA,
                                   headers={"Authorization": h})
                checks.error_json(self, r, 401, "Authorization: %r" % h)

    def test_upload_with_a_read_token_is_403(self):
        r = self.d.upload("auth-m", DATA, token="tok-r")
        checks.error_json(self, r, 403, "upload with read token")

    def test_upload_with_write_and_admin_tokens_is_201(self):
        r = self.d.upload("auth-m", DATA, token="tok-w")
        self.assertEqual(r.status, 201, r)
        r = self.d.upload("auth-m", DATA, token="tok-a")
        self.assertEqual(r.status, 201, r)

    def test_reads_need_no_token(self):
        j = self.d.upload_ok("auth-r", DATA, token="tok-w")
        self.assertEqual(self.d.get("/models").status, 200)
        self.assertEqual(self.d.get("/models/auth-r/checkpoints").status, 200)
        self.assertEqual(self.d.get("/models/auth-r/checkpoints/%d" % j["id"]).status, 200)
        f = self.d.get("/models/auth-r/checkpoints/%d/file" % j["id"])
        self.assertEqual((f.status, f.body), (200, DATA))
        self.assertEqual(self.d.get("/stats").status, 200)

    def test_delete_needs_a_token(self):
        j = self.d.upload_ok("auth-d", DATA, token="tok-w")
        url = "/models/auth-d/checkpoints/%d" % j["id"]
        checks.error_json(self, self.d.request("DELETE", url), 401, "DELETE without token")
        checks.error_json(self, self.d.request("DELETE", url, token="tok-r"), 403,
                          "DELETE with read token")
        checks.error_json(self, self.d.request("DELETE", "/models/auth-d", token="tok-r"), 403,
                          "DELETE model with read token")
        self.assertEqual(self.d.get(url).status, 200, "checkpoint gone after refused DELETEs")
        r = self.d.request("DELETE", url, token="tok-a")
        self.assertEqual(r.status, 204, r)

    def test_patch_needs_a_write_token(self):
        j = self.d.upload_ok("auth-p", DATA, {"loss": 1.0}, token="tok-w")
        url = "/models/auth-p/checkpoints/%d" % j["id"]
        checks.error_json(self, self.d.request("PATCH", url, body={"loss": 0.5}), 401, "PATCH")
        checks.error_json(self, self.d.request("PATCH", url, body={"loss": 0.5}, token="tok-r"),
                          403, "PATCH with read token")
        self.assertEqual(self.d.get_json(url)["loss"], 1.0)

    def test_tokens_never_appear_in_the_log(self):
        self.d.upload("auth-log", DATA, token="tok-r")
        self.d.upload("auth-log", DATA, token="tok-w")
        self.d.get("/models", token="tok-a")
        log = self.d.log_text()
        for t in ("tok-w", "tok-r", "tok-a"):
            self.assertNotIn(t, log, "token %s logged" % t)


class AuthRead(ckptd.DaemonCase):
    NAME = "auth-read"

    @classmethod
    def daemon_args(cls):
        return ["--token-file", token_file(), "--auth-read"]

    def test_reads_need_a_token_with_auth_read(self):
        j = self.d.upload_ok("ar", DATA, token="tok-w")
        for path in ("/models", "/models/ar/checkpoints", "/models/ar/checkpoints/%d" % j["id"],
                     "/models/ar/checkpoints/%d/file" % j["id"]):
            with self.subTest(path=path):
                checks.error_json(self, self.d.get(path), 401, "GET %s without token" % path)
                self.assertEqual(self.d.get(path, token="tok-r").status, 200, path)
                checks.error_json(self, self.d.get(path, token="tok-bad"), 401, path)

    def test_write_token_can_read(self):
        self.assertEqual(self.d.get("/models", token="tok-w").status, 200)


if __name__ == "__main__":
    harness.main()
