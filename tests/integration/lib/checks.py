"""Assertions on ckptd's answers shared by the integration tests (SPEC 3)."""

import re

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]00:00)$")
CHECKPOINT_KEYS = (
    "id", "model", "run", "epoch", "step", "loss", "metrics", "tags", "pinned",
    "created_at", "format", "size", "sha256", "tensor_count",
)
TENSOR_KEYS = ("path", "dtype", "shape", "strides", "offset", "nbytes", "blob")


def checkpoint_json(tc, j, model=None, run="default"):
    """j has every checkpoint field with the right types."""
    tc.assertIsInstance(j, dict, j)
    missing = [k for k in CHECKPOINT_KEYS if k not in j]
    tc.assertEqual(missing, [], "checkpoint JSON lacks %s: %r" % (missing, j))
    tc.assertIsInstance(j["id"], int)
    if model is not None:
        tc.assertEqual(j["model"], model)
    if run is not None:
        tc.assertEqual(j["run"], run)
    for k in ("epoch", "step"):
        tc.assertTrue(j[k] is None or (isinstance(j[k], int) and not isinstance(j[k], bool)),
                      "%s=%r" % (k, j[k]))
    tc.assertTrue(j["loss"] is None or isinstance(j["loss"], (int, float)), "loss=%r" % j["loss"])
    tc.assertIsInstance(j["metrics"], dict)
    tc.assertIsInstance(j["tags"], list)
    tc.assertIsInstance(j["pinned"], bool)
    tc.assertRegex(j["created_at"], RFC3339)
    tc.assertIsInstance(j["size"], int)
    tc.assertRegex(j["sha256"], r"^[0-9a-f]{64}$")
    tc.assertIsInstance(j["tensor_count"], int)


def dedup_json(tc, j):
    tc.assertIn("dedup", j, "upload answer lacks dedup: %r" % j)
    d = j["dedup"]
    for k in ("tensors", "new_tensors", "bytes", "new_bytes"):
        tc.assertIn(k, d, "dedup lacks %s: %r" % (k, d))
        tc.assertIsInstance(d[k], int, "dedup.%s=%r" % (k, d[k]))
        tc.assertGreaterEqual(d[k], 0)
    tc.assertLessEqual(d["new_tensors"], d["tensors"])
    tc.assertLessEqual(d["new_bytes"], d["bytes"])
    return d


def tensor_json(tc, t):
    missing = [k for k in TENSOR_KEYS if k not in t]
    tc.assertEqual(missing, [], "tensor entry lacks %s: %r" % (missing, t))
    tc.assertEqual(len(t["strides"]), len(t["shape"]), t)
    tc.assertIsInstance(t["offset"], int)
    tc.assertIsInstance(t["nbytes"], int)


def error_json(tc, r, statuses, what=""):
    """r answered one of statuses with a JSON {"error", "message"} body."""
    if isinstance(statuses, int):
        statuses = (statuses,)
    tc.assertIn(r.status, statuses, "%s: want %s, got %d %r" % (what, statuses, r.status, r.body[:300]))
    ctype = r.header("Content-Type", "")
    tc.assertTrue(ctype.startswith("application/json"),
                  "%s: error Content-Type %r, want application/json" % (what, ctype))
    j = r.json()
    tc.assertIsInstance(j, dict, j)
    tc.assertIsInstance(j.get("error"), str, "%s: no \"error\" string in %r" % (what, j))
    tc.assertTrue(j["error"], j)
    tc.assertIsInstance(j.get("message"), str, "%s: no \"message\" string in %r" % (what, j))
    tc.assertTrue(j["message"], j)
    return j


def etag_value(h):
    if h is None:
        return None
    h = h.strip()
    if h.startswith("W/"):
        h = h[2:]
    return h.strip('"')


def disposition_filename(h):
    if not h:
        return None
    m = re.search(r"filename\*=UTF-8''([^;]+)", h) or re.search(r'filename="([^"]+)"', h) \
        or re.search(r"filename=([^;\s]+)", h)
    return m.group(1) if m else None
