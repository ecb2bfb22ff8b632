#!/usr/bin/python3
"""The OpenAPI document at /api/v1/openapi.json (api/openapi.json) against the
route table and against real answers.

- The document is the one in the source tree, an OpenAPI 3.1 shape: every
  $ref resolves, every path parameter is declared, every schema is a valid
  JSON Schema (2020-12, OpenAPI 3.1's dialect).
- Every route of api/routes.c's table is described (same method, same path,
  same route name and token scope), and nothing else is: the test reads the
  table from the source, so a route added without its description fails here.
  Every described operation is routed by a live daemon.
- Real answers of live daemons are checked against what the document says
  for their status: the status is listed, the Content-Type is one listed,
  JSON bodies validate against their schema (python3-jsonschema), required
  headers are there. Every status listed for every operation must be met by
  at least one real answer, so no described response goes unchecked.
"""

import copy
import json
import os
import re
import sys
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import ckptd, harness  # noqa: E402

try:
    import jsonschema
except ImportError:  # the test fails with the fix in its message
    jsonschema = None

DATA = os.path.join(ckptd.REPO, "tests", "data")
TORCH = os.path.join(DATA, "torch", "valid")
DCP_SMALL = os.path.join(DATA, "dcp", "small")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
TOKENS = {"r3ad": "read", "wr1te": "write"}

DOC = None  # the document as served
OPEN = None  # a daemon without tokens
LOCKED = None  # a daemon with tokens, --auth-read and a small upload limit
SEEN = set()  # (operationId, status) met by a real answer


def read_route_table(path=os.path.join(ckptd.REPO, "api", "routes.c")):
    """[(METHOD, pattern, scope, name)] from the routes[] table of api/routes.c:
    string literals (and the file's own #define'd strings) concatenated as the
    compiler does. Raises when an entry cannot be read, so a change of the
    table's shape fails loudly instead of hiding routes."""
    with open(path) as f:
        src = f.read()
    macros = dict(re.findall(r'^#define\s+(\w+)\s+"((?:[^"\\]|\\.)*)"\s*$', src, re.M))
    m = re.search(r"static const struct route routes\[\]\s*=\s*\{(.*?)\n\};", src, re.S)
    if not m:
        raise AssertionError("no 'static const struct route routes[] = {' table in %s" % path)
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    entries = re.findall(r"\{([^{}]*)\}", body)
    routes = []
    for e in entries:
        fields = [x.strip() for x in re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", e)]
        if len(fields) != 6:
            raise AssertionError("cannot read route entry {%s} in %s" % (e.strip(), path))
        method = fields[0].strip('"')
        parts = re.findall(r'"((?:[^"\\]|\\.)*)"|(\w+)', fields[1])
        pattern = ""
        for lit, name in parts:
            if name:
                if name not in macros:
                    raise AssertionError("route pattern uses %s, not a string #define" % name)
                pattern += macros[name]
            else:
                pattern += lit
        scope = {"SCOPE_NONE": "none", "SCOPE_READ": "read", "SCOPE_WRITE": "write"}.get(fields[4])
        if scope is None:
            raise AssertionError("route %s %s: unknown scope %s" % (method, pattern, fields[4]))
        routes.append((method, pattern, scope, fields[5].strip('"')))
    return routes


def route_key(pattern):
    """A route pattern (":" one segment, "*" the rest) in the document's form,
    with the parameter names left out: /models/{}/checkpoints/{}/tensors/{}."""
    return re.sub(r"(?<=/)[:*](?=/|$)", "{}", pattern)


def doc_key(path):
    return re.sub(r"\{[^}/]+\}", "{}", path)


def operations(doc):
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def compare_routes(doc, routes):
    """Differences between the route table and the document, as sentences."""
    problems = []
    ops = {(m.upper(), doc_key(p)): (p, op) for p, m, op in operations(doc)}
    table = set()
    for method, pattern, scope, name in routes:
        key = (method, route_key(pattern))
        table.add(key)
        if key not in ops:
            problems.append("route %s %s (%s) is not in the document" % (method, pattern, name))
            continue
        path, op = ops[key]
        if op.get("x-ckptd-route") != name:
            problems.append("%s %s: x-ckptd-route is %r, the table says %r"
                            % (method, path, op.get("x-ckptd-route"), name))
        if op.get("x-ckptd-scope") != scope:
            problems.append("%s %s: x-ckptd-scope is %r, the table says %r"
                            % (method, path, op.get("x-ckptd-scope"), scope))
    for key, (path, op) in ops.items():
        if key not in table:
            problems.append("the document describes %s %s, which api/routes.c does not route"
                            % (key[0], path))
    return problems


def resolve(doc, node):
    """node with its $ref followed (repeatedly), within doc."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node and len(node) == 1:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise AssertionError("external $ref %s" % ref)
        node = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise AssertionError("$ref %s does not resolve" % ref)
            node = node[part]
        seen += 1
        if seen > 20:
            raise AssertionError("$ref loop at %s" % ref)
    return node


REST = None  # the document's paths whose last parameter is a route's "*" (slashes allowed)


def find_op(doc, method, path):
    """(doc path, operation) for a request, by the document's path templates."""
    global REST
    if REST is None:
        REST = {route_key(p) for _m, p, _s, _n in read_route_table() if p.endswith("*")}
    hits = []
    for tpath, m, op in operations(doc):
        if m != method.lower():
            continue
        rx = "^" + re.sub(r"\\\{(\w+)\\\}", "([^/]+)", re.escape(tpath)) + "$"
        if doc_key(tpath) in REST:
            rx = rx[:-len("([^/]+)$")] + "(.+)$"
        if re.match(rx, path):
            hits.append((tpath.count("{"), tpath, op))
    if not hits:
        raise AssertionError("%s %s: no operation in the document matches" % (method, path))
    hits.sort()
    return hits[0][1], hits[0][2]


def validator(doc, schema):
    resolver = jsonschema.RefResolver.from_schema(doc)
    return jsonschema.Draft202012Validator(schema, resolver=resolver)


def check_answer(tc, method, url, r):
    """Checks a real answer against the document; records (operationId, status)."""
    path = urllib.parse.urlsplit(url).path
    tpath, op = find_op(DOC, method, urllib.parse.unquote(path))
    what = "%s %s -> %d" % (method, url, r.status)
    responses = op["responses"]
    tc.assertIn(str(r.status), responses,
                "%s: status %d is not described for %s %s (it has %s); body %r"
                % (what, r.status, method, tpath, sorted(responses), r.body[:200]))
    resp = resolve(DOC, responses[str(r.status)])
    content = resp.get("content")
    ctype = r.header("Content-Type")
    if not content:
        tc.assertEqual(r.body, b"", "%s: described without a body, got %r" % (what, r.body[:200]))
    else:
        tc.assertIn(ctype, content, "%s: Content-Type %r is not one of %s"
                    % (what, ctype, sorted(content)))
        schema = content[ctype].get("schema")
        if schema is not None and ctype == "application/json":
            body = r.json()
            errs = sorted(validator(DOC, schema).iter_errors(body), key=lambda e: list(e.path))
            tc.assertEqual([], ["%s at %s" % (e.message, "/".join(map(str, e.path))) for e in errs],
                           "%s: the JSON answer does not match its schema: %s"
                           % (what, json.dumps(body)[:400]))
        elif schema is not None and ctype.startswith("text/plain") and "const" in schema:
            tc.assertEqual(r.body.decode(), schema["const"], what)
    for name, h in resp.get("headers", {}).items():
        h = resolve(DOC, h)
        value = r.header(name)
        if h.get("required"):
            tc.assertIsNotNone(value, "%s: header %s is described as always sent" % (what, name))
        if value is not None and "schema" in h:
            errs = list(validator(DOC, h["schema"]).iter_errors(value))
            tc.assertEqual([], [e.message for e in errs], "%s: header %s: %r" % (what, name, value))
    SEEN.add((op["operationId"], str(r.status)))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def call(tc, d, method, url, status, body=None, headers=None, token=None):
    """One real request (url below /api/v1 unless it starts with '/!'); checks
    the status the scenario expects, then the answer against the document."""
    r = d.request(method, url, body=body, headers=headers, token=token)
    full = url[2:] if url.startswith("/!") else ckptd.API + url
    tc.assertEqual(r.status, status, "%s %s: want %d, got %d %r"
                   % (method, full, status, r.status, r.body[:300]))
    check_answer(tc, method, full, r)
    return r


def setUpModule():
    global DOC, OPEN, LOCKED
    OPEN = ckptd.Daemon(name="openapi").start()
    scratch = ckptd.work_dir()
    tokens = os.path.join(scratch, "tokens")
    with open(tokens, "w") as f:
        for tok, scope in TOKENS.items():
            f.write("%s %s\n" % (tok, scope))
    LOCKED = ckptd.Daemon(name="openapi-locked", args=[
        "--token-file", tokens, "--auth-read", "--max-upload-size", "64K"]).start()
    r = OPEN.request("GET", "/openapi.json")
    if r.status == 200:
        DOC = r.json()


def tearDownModule():
    for d in (OPEN, LOCKED):
        if d:
            d.stop_checked()
            d.cleanup()


class Document(unittest.TestCase):
    def test_1_the_served_document_is_the_one_in_the_source_tree(self):
        r = OPEN.request("GET", "/openapi.json")
        self.assertEqual(r.status, 200, r.body[:300])
        self.assertEqual(r.header("Content-Type"), "application/json")
        with open(os.path.join(ckptd.REPO, "api", "openapi.json"), "rb") as f:
            self.assertEqual(r.body, f.read(), "build/ckptd serves another document than api/openapi.json")

    def test_2_it_has_the_shape_of_an_openapi_3_document(self):
        self.assertIsNotNone(jsonschema, "python3-jsonschema is missing (apt-get install python3-jsonschema)")
        self.assertRegex(DOC.get("openapi", ""), r"^3\.1\.\d+$")
        info = DOC["info"]
        self.assertTrue(info.get("title"))
        with open(os.path.join(ckptd.REPO, "VERSION")) as f:
            self.assertEqual(info.get("version"), f.read().strip(), "info.version is not VERSION")
        self.assertTrue(DOC["paths"])
        schemes = DOC.get("components", {}).get("securitySchemes", {})
        ids = set()
        for path, item in DOC["paths"].items():
            self.assertTrue(path.startswith("/"), path)
            self.assertTrue(set(item) <= set(METHODS) | {"parameters", "summary", "description"},
                            "%s: unknown keys %s" % (path, sorted(set(item) - set(METHODS))))
            for m in METHODS:
                if m not in item:
                    continue
                op = item[m]
                where = "%s %s" % (m.upper(), path)
                self.assertNotIn(op.get("operationId"), ids, where + ": operationId used twice")
                self.assertTrue(op.get("operationId"), where + ": no operationId")
                ids.add(op["operationId"])
                self.assertTrue(op.get("responses"), where + ": no responses")
                for code, resp in op["responses"].items():
                    self.assertRegex(code, r"^([1-5][0-9][0-9]|default)$", where)
                    resp = resolve(DOC, resp)
                    self.assertTrue(resp.get("description"), "%s %s: no description" % (where, code))
                    for mt, media in resp.get("content", {}).items():
                        self.assertRegex(mt, r"^[a-z]+/[a-z0-9.+-]+(;.*)?$", where)
                        self.assertIn("schema", media, "%s %s %s" % (where, code, mt))
                        jsonschema.Draft202012Validator.check_schema(resolve(DOC, media["schema"]))
                for req in op.get("security", []):
                    for name in req:
                        self.assertIn(name, schemes, where + ": unknown security scheme")
                # every {name} in the path is a required path parameter, and
                # every path parameter is in the path
                params = [resolve(DOC, p) for p in item.get("parameters", []) + op.get("parameters", [])]
                for p in params:
                    self.assertIn(p.get("in"), ("query", "header", "path", "cookie"), where)
                    self.assertTrue(p.get("name"), where)
                    self.assertTrue("schema" in p or "content" in p, "%s: parameter %s" % (where, p["name"]))
                    if "schema" in p:
                        jsonschema.Draft202012Validator.check_schema(p["schema"])
                declared = {p["name"] for p in params if p["in"] == "path"}
                named = set(re.findall(r"\{(\w+)\}", path))
                self.assertEqual(declared, named, where + ": path parameters")
                for p in params:
                    if p["in"] == "path":
                        self.assertTrue(p.get("required"), "%s: path parameter %s not required"
                                        % (where, p["name"]))
                if "requestBody" in op:
                    rb = resolve(DOC, op["requestBody"])
                    self.assertTrue(rb.get("content"), where + ": requestBody without content")
        for name, schema in DOC["components"]["schemas"].items():
            jsonschema.Draft202012Validator.check_schema(schema)

    def test_3_every_ref_resolves(self):
        refs = []

        def walk(n):
            if isinstance(n, dict):
                if isinstance(n.get("$ref"), str):
                    refs.append(n["$ref"])
                for v in n.values():
                    walk(v)
            elif isinstance(n, list):
                for v in n:
                    walk(v)
        walk(DOC)
        self.assertGreater(len(refs), 20)
        for ref in set(refs):
            resolve(DOC, {"$ref": ref})


class Routes(unittest.TestCase):
    def test_1_every_route_of_the_table_is_described_and_nothing_else(self):
        routes = read_route_table()
        self.assertGreaterEqual(len(routes), 18, routes)
        self.assertEqual([], compare_routes(DOC, routes))

    def test_2_the_comparison_fails_when_a_route_is_missing_from_the_document(self):
        routes = read_route_table()
        before = set(compare_routes(DOC, routes))
        doc = copy.deepcopy(DOC)
        del doc["paths"]["/api/v1/models/{model}/checkpoints/{a}/diff/{b}"]
        self.assertEqual(set(compare_routes(doc, routes)) - before, {
            "route GET /api/v1/models/:/checkpoints/:/diff/: (checkpoint.diff) is not in the document"})
        doc = copy.deepcopy(DOC)
        doc["paths"]["/api/v1/models/{model}"]["delete"]["x-ckptd-scope"] = "read"
        self.assertEqual(len(set(compare_routes(doc, routes)) - before), 1)
        doc = copy.deepcopy(DOC)
        doc["paths"]["/api/v1/extra"] = {"get": {"responses": {}}}
        self.assertEqual(set(compare_routes(doc, routes)) - before, {
            "the document describes GET /api/v1/extra, which api/routes.c does not route"})

    def test_3_every_described_operation_is_routed_by_the_server(self):
        fill = {"model": "no-such-model", "ref": "1", "a": "1", "b": "2", "path": "w",
                "asset": "app.js", "name": "x.pt"}
        for path, method, op in operations(DOC):
            url = re.sub(r"\{(\w+)\}", lambda g: fill[g.group(1)], path)
            r = OPEN.request(method.upper(), "/!" + url, body=b"" if method in ("post", "put", "patch") else None)
            self.assertNotIn(r.status, (405,), "%s %s: %r" % (method, url, r.body[:200]))
            if r.status == 404:
                self.assertNotIn(b"no such endpoint", r.body, "%s %s is not routed" % (method, url))


class Answers(unittest.TestCase):
    """Real answers for every described status of every operation."""

    def test_1_service_routes(self):
        call(self, OPEN, "GET", "/models", 200)  # empty store
        call(self, OPEN, "GET", "/stats", 200)
        call(self, OPEN, "GET", "/healthz", 200)
        call(self, OPEN, "GET", "/openapi.json", 200)

    def test_2_uploads(self):
        call(self, OPEN, "POST", "/models/oa/checkpoints?epoch=1&loss=0.5&metric.acc=0.8&tag=nightly",
             201, body=read(os.path.join(TORCH, "general_checkpoint.pt")),
             headers={"Content-Type": "application/octet-stream"})
        call(self, OPEN, "PUT", "/models/oa/checkpoints?epoch=2&run=b", 201,
             body=read(os.path.join(TORCH, "cnn_state_dict.pt")))
        with open(os.path.join(DATA, "safetensors", "valid", "simple.safetensors"), "rb") as f:
            ctype, body = ckptd.multipart([("field", ("epoch", "3")), ("field", ("loss", "0.25")),
                                           ("file", ("file", "simple.safetensors", f.read()))])
        call(self, OPEN, "POST", "/models/oa/checkpoints", 201, body=body,
             headers={"Content-Type": ctype})
        call(self, OPEN, "POST", "/models/oa/checkpoints", 201,
             body=read(os.path.join(TORCH, "sgd_state.pt")))
        for method in ("POST", "PUT"):
            call(self, OPEN, method, "/models/-bad/checkpoints", 400, body=b"x")
            call(self, OPEN, method, "/models/oa/checkpoints", 415, body=b"not a checkpoint at all")
            head = read(os.path.join(TORCH, "general_checkpoint.pt"))[:700]
            call(self, OPEN, method, "/models/oa/checkpoints", 422, body=head)
            call(self, LOCKED, method, "/models/oa/checkpoints", 413, body=b"\0" * (100 << 10),
                 token="wr1te")
            # a thin upload naming a blob the store lacks
            thin = (b"R" + (64).to_bytes(8, "little") + bytes(32) +
                    b"E" + (32).to_bytes(8, "little") + bytes(32))
            call(self, OPEN, method, "/models/oa/checkpoints", 409, body=thin,
                 headers={"Content-Type": "application/x-ckptd-thin"})

    def test_2b_blobs_missing(self):
        ask = {"blobs": [{"sha256": "0" * 64, "size": 3}]}
        r = call(self, OPEN, "POST", "/blobs/missing", 200, body=ask)
        self.assertEqual(r.json(), {"missing": ["0" * 64]})
        call(self, OPEN, "POST", "/blobs/missing", 400, body={"blobs": [{"sha256": "x"}]})
        call(self, OPEN, "POST", "/blobs/missing", 413, body=b" " * (17 << 20),
             headers={"Content-Type": "application/json"})

    def test_2c_checkpoints_of_several_files(self):
        pt = read(os.path.join(TORCH, "cnn_state_dict.pt"))
        r = call(self, OPEN, "POST", "/models/oa-files/checkpoints?staged=1&epoch=1", 201)
        cid = r.json()["id"]
        base = "/models/oa-files/checkpoints/%d" % cid
        call(self, OPEN, "POST", base + "/commit", 409)  # no file yet
        call(self, OPEN, "PUT", base + "/files/model.pt", 201, body=pt)
        call(self, OPEN, "PUT", base + "/files/sub/notes.pkl", 201, body=b"\x80\x04N.")
        call(self, OPEN, "PUT", base + "/files/a//b.pt", 400, body=pt)
        call(self, OPEN, "PUT", base + "/files/cut.pt", 422, body=pt[:-200])
        call(self, OPEN, "PUT", "/models/oa-files/checkpoints/999999/files/x.pt", 404, body=pt)
        call(self, LOCKED, "PUT", base + "/files/big.pt", 413, body=b"\0" * (100 << 10),
             token="wr1te")
        thin = (b"R" + (64).to_bytes(8, "little") + bytes(32) +
                b"E" + (32).to_bytes(8, "little") + bytes(32))
        call(self, OPEN, "PUT", base + "/files/thin.pt", 409, body=thin,
             headers={"Content-Type": "application/x-ckptd-thin"})
        # a torch.distributed.checkpoint's .metadata without its data files
        r = call(self, OPEN, "POST", "/models/oa-files/checkpoints?staged=1", 201)
        dcp_base = "/models/oa-files/checkpoints/%d" % r.json()["id"]
        call(self, OPEN, "PUT", dcp_base + "/files/.metadata", 201,
             body=read(os.path.join(DCP_SMALL, ".metadata")))
        call(self, OPEN, "PUT", dcp_base + "/files/bad/.metadata", 422, body=b"\x80\x04N.")
        call(self, OPEN, "POST", dcp_base + "/commit", 422)
        for name in sorted(os.listdir(DCP_SMALL)):  # its files: then it commits
            if name.endswith(".distcp"):
                call(self, OPEN, "PUT", dcp_base + "/files/" + name, 201,
                     body=read(os.path.join(DCP_SMALL, name)))
        r = call(self, OPEN, "POST", dcp_base + "/commit", 200)
        self.assertEqual(r.json()["format"], "dcp")
        t = {x["path"]: x for x in call(self, OPEN, "GET", dcp_base, 200).json()["tensors"]}
        self.assertEqual((t["/w"]["blob"], t["/w"]["pieces"], t["/w"]["shape"]), (None, 2, [4, 6]))
        call(self, OPEN, "DELETE", dcp_base, 204)
        call(self, OPEN, "POST", "/models/oa-files/checkpoints/x/commit", 400)
        call(self, OPEN, "POST", "/models/oa-files/checkpoints/999999/commit", 404)
        call(self, OPEN, "POST", base + "/commit", 200)
        call(self, OPEN, "POST", base + "/commit", 409)  # committed already
        call(self, OPEN, "PUT", base + "/files/late.pt", 409, body=pt)
        call(self, OPEN, "GET", base, 200)
        call(self, OPEN, "GET", base + "/files", 200)
        call(self, OPEN, "GET", "/models/oa-files/checkpoints/first/files", 400)
        call(self, OPEN, "GET", "/models/oa-files/checkpoints/999999/files", 404)
        r = call(self, OPEN, "GET", base + "/files/model.pt", 200)
        call(self, OPEN, "GET", base + "/files/sub/notes.pkl", 200)
        call(self, OPEN, "GET", base + "/files/model.pt", 206, headers={"Range": "bytes=0-9"})
        call(self, OPEN, "GET", base + "/files/model.pt", 304,
             headers={"If-None-Match": r.header("ETag")})
        call(self, OPEN, "GET", base + "/files/model.pt", 416,
             headers={"Range": "bytes=99999999-"})
        call(self, OPEN, "GET", base + "/files/a/../b", 400)
        call(self, OPEN, "GET", base + "/files/nope.pt", 404)
        call(self, OPEN, "GET", base + "/archive", 200)
        call(self, OPEN, "GET", base + "/archive", 206, headers={"Range": "bytes=0-9"})
        call(self, OPEN, "GET", base + "/archive", 416, headers={"Range": "bytes=99999999-"})
        call(self, OPEN, "GET", "/models/oa-files/checkpoints/first/archive", 400)
        call(self, OPEN, "GET", "/models/oa-files/checkpoints/999999/archive", 404)

    def test_3_models_stats_and_metrics_with_data(self):
        call(self, OPEN, "GET", "/models", 200)
        call(self, OPEN, "GET", "/stats", 200)
        call(self, OPEN, "GET", "/metrics", 200)
        call(self, OPEN, "GET", "/!/metrics", 200)

    def test_4_listing_and_reading_checkpoints(self):
        call(self, OPEN, "GET", "/models/oa/checkpoints?order=-loss&limit=2", 200)
        call(self, OPEN, "GET", "/models/oa/checkpoints?run=b", 200)
        call(self, OPEN, "GET", "/models/oa/checkpoints?limit=-1", 400)
        call(self, OPEN, "GET", "/models/nope/checkpoints", 404)
        for ref in ("1", "2", "3", "latest", "best", "best?metric=acc&mode=max"):
            call(self, OPEN, "GET", "/models/oa/checkpoints/" + ref, 200)
        call(self, OPEN, "GET", "/models/oa/checkpoints/first", 400)
        call(self, OPEN, "GET", "/models/oa/checkpoints/999", 404)
        call(self, OPEN, "GET", "/models/oa/checkpoints/1/diff/2", 200)
        call(self, OPEN, "GET", "/models/oa/checkpoints/1/diff/latest", 200)
        call(self, OPEN, "GET", "/models/oa/checkpoints/1/diff/first", 400)
        call(self, OPEN, "GET", "/models/oa/checkpoints/1/diff/999", 404)

    def test_5_downloads(self):
        base = "/models/oa/checkpoints/1"
        r = call(self, OPEN, "GET", base + "/file", 200)
        call(self, OPEN, "GET", "/models/oa/checkpoints/3/file", 200)
        call(self, OPEN, "GET", base + "/file", 206, headers={"Range": "bytes=0-9"})
        call(self, OPEN, "GET", base + "/file", 304, headers={"If-None-Match": r.header("ETag")})
        call(self, OPEN, "GET", base + "/file", 416, headers={"Range": "bytes=99999999-"})
        call(self, OPEN, "GET", "/models/oa/checkpoints/x/file", 400)
        call(self, OPEN, "GET", "/models/oa/checkpoints/999/file", 404)

        sd = base + "/state_dict"
        call(self, OPEN, "GET", sd, 200)
        call(self, OPEN, "GET", sd + "?format=safetensors&keys=conv1.*", 200)
        call(self, OPEN, "GET", sd, 206, headers={"Range": "bytes=-10"})
        call(self, OPEN, "GET", sd, 416, headers={"Range": "bytes=99999999-"})
        call(self, OPEN, "GET", sd + "?format=zip", 400)
        call(self, OPEN, "GET", sd + "?keys=nothing.*", 404)
        call(self, OPEN, "GET", "/models/oa/checkpoints/4/state_dict", 422)

        t = base + "/tensors/model_state_dict/conv1.weight"
        call(self, OPEN, "GET", t, 200)
        call(self, OPEN, "GET", t + "?format=raw", 200)
        call(self, OPEN, "GET", t, 206, headers={"Range": "bytes=0-9"})
        call(self, OPEN, "GET", t, 416, headers={"Range": "bytes=99999999-"})
        call(self, OPEN, "GET", t + "?format=csv", 400)
        call(self, OPEN, "GET", base + "/tensors/model_state_dict/nope", 404)

    def test_6_patching_and_retention(self):
        c = "/models/oa/checkpoints/2"
        call(self, OPEN, "PATCH", c, 200, body={"pinned": True, "tags": ["keep"], "loss": 0.3})
        call(self, OPEN, "PATCH", c, 200, body={"metrics": {"acc": 0.9}, "loss": None})
        call(self, OPEN, "PATCH", c, 400, body={"epoch": 3})
        call(self, OPEN, "PATCH", "/models/oa/checkpoints/999", 404, body={"pinned": True})
        call(self, OPEN, "PATCH", c, 413, body=b"[" + b"0," * (600 << 10) + b"0]",
             headers={"Content-Type": "application/json"})

        ret = "/models/oa/retention"
        call(self, OPEN, "GET", ret, 200)  # none yet: {}
        call(self, OPEN, "PUT", ret, 200, body={"keep_best": 10, "keep_last": 10})
        call(self, OPEN, "PUT", ret, 200, body={"keep_best": 10, "metric": "f1", "mode": "max"})
        call(self, OPEN, "GET", ret, 200)
        call(self, OPEN, "PUT", ret, 400, body={"keep_best": 0})
        call(self, OPEN, "GET", "/models/-x/retention", 400)
        call(self, OPEN, "GET", "/models/nope/retention", 404)
        call(self, OPEN, "PUT", "/models/early/retention", 200, body={"keep_last": 1})
        call(self, OPEN, "PUT", ret, 413, body=b"{\"a\":\"" + b"x" * (1200 << 10) + b"\"}",
             headers={"Content-Type": "application/json"})

    def test_7_deletes(self):
        call(self, OPEN, "DELETE", "/models/oa/checkpoints/3", 204)
        call(self, OPEN, "DELETE", "/models/oa/checkpoints/3", 404)
        call(self, OPEN, "DELETE", "/models/oa/checkpoints/third", 400)
        call(self, OPEN, "DELETE", "/models/oa", 204)
        call(self, OPEN, "DELETE", "/models/oa", 404)
        call(self, OPEN, "DELETE", "/models/-oa", 400)

    def test_8_the_dashboard(self):
        call(self, OPEN, "GET", "/!/", 200)
        for asset in ("index.html", "app.js", "style.css", "models/x"):
            call(self, OPEN, "GET", "/!/ui/" + asset, 200)

    def test_9_tokens_on_every_operation_that_needs_one(self):
        fill = {"model": "m", "ref": "1", "a": "1", "b": "2", "path": "w", "asset": "app.js",
                "name": "x.pt"}
        n = 0
        for path, method, op in operations(DOC):
            scope = op["x-ckptd-scope"]
            if scope == "none":
                continue
            url = "/!" + re.sub(r"\{(\w+)\}", lambda g: fill[g.group(1)], path)
            body = b"{}" if method in ("put", "patch", "post") else None
            call(self, LOCKED, method.upper(), url, 401, body=body, token="")
            call(self, LOCKED, method.upper(), url, 401, body=body, token="not-a-token")
            if scope == "write":
                call(self, LOCKED, method.upper(), url, 403, body=body, token="r3ad")
            n += 1
        self.assertGreater(n, 10)

    def test_z_every_described_status_was_met_by_a_real_answer(self):
        want = set()
        for path, method, op in operations(DOC):
            for code in op["responses"]:
                if code != "default":
                    want.add((op["operationId"], code))
        self.assertEqual(sorted(want - SEEN), [], "described but never checked against a real answer")


if __name__ == "__main__":
    harness.main()
