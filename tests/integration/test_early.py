#!/usr/bin/python3
# backends: sqlite postgresql
"""Early sends on the filesystem store (store_early_offer, --compress off):
each storage record is copied into its blob's temporary file, and its
writeback started, while the rest of the body still arrives. The copies
are in blobs/tmp before the body ends and none is a blob until the commit;
the checkpoint is whole and dedups; an upload refused, cut off (after its
--resume-grace) or killed with the daemon leaves no blob and no temporary
file behind. (test_s3.py checks the same on S3.)
"""

import hashlib
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import checks, ckptd, harness, store  # noqa: E402


def ckpt(seed, n=4, floats=256 * 1024):
    return store.save_torch({"t%d" % i: store.randn(seed * 100 + i, floats) for i in range(n)})


def sha(b):
    return hashlib.sha256(b).hexdigest()


def tmp_files(data_dir):
    p = os.path.join(data_dir, "blobs", "tmp")
    return sorted(os.listdir(p)) if os.path.isdir(p) else []


def send_part(d, model, data, upto):
    """Opens an upload of data and sends its first `upto` bytes; the socket."""
    s = socket.create_connection(("127.0.0.1", d.port), timeout=60)
    s.sendall(("POST %s/models/%s/checkpoints HTTP/1.1\r\nHost: x\r\n"
               "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
               % (ckptd.API, model, len(data))).encode())
    s.sendall(data[:upto])
    return s


def wait_for(pred, timeout=20):
    end = time.time() + timeout
    while not pred() and time.time() < end:
        time.sleep(0.05)
    return pred()


class EarlySends(ckptd.DaemonCase):
    NAME = "fs-early"
    ARGS = ("--compress", "off", "--resume-grace", "3")

    def blobs(self):
        return store.blob_files(self.d.data_dir)[0]

    def test_1_storages_are_copied_before_the_body_ends_and_the_checkpoint_is_whole(self):
        data = ckpt(5, n=6, floats=1 << 20)  # 24 MiB
        before = self.blobs()
        s = send_part(self.d, "early", data, len(data) * 3 // 4)
        try:
            self.assertTrue(wait_for(lambda: tmp_files(self.d.data_dir)),
                            "no storage was copied before the body ended")
            self.assertEqual(self.blobs(), before, "a blob was visible before the commit")
            s.sendall(data[len(data) * 3 // 4:])
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                reply += b
        finally:
            s.close()
        self.assertTrue(reply.startswith(b"HTTP/1.1 201"), reply[:200])
        self.assertEqual(len(self.blobs() - before), 7, "six storages and the skeleton")
        self.assertEqual(tmp_files(self.d.data_dir), [])
        cks = self.d.get_json("/models/early/checkpoints")["checkpoints"]
        store.assert_intact(self, self.d, "/models/early/checkpoints/%d/file"
                            % cks[0]["id"], data, "early-again")
        self.assertEqual(len(self.blobs() - before), 7)

    def test_2_a_refused_upload_leaves_no_blob_and_no_temporary_file(self):
        before = self.blobs()
        data = ckpt(6, n=6, floats=1 << 20)
        r = self.d.upload("early-bad", data[:-40])  # no end of central directory
        checks.error_json(self, r, tuple(range(400, 500)), "a zip without its directory")
        # undone before the answer: nothing of it is left when the client hears
        self.assertEqual(self.blobs(), before, "blobs stayed")
        self.assertEqual(tmp_files(self.d.data_dir), [])
        self.assertEqual(self.d.get("/models/early-bad/checkpoints").status, 404)

    def test_3_an_upload_cut_off_is_kept_for_its_grace_then_leaves_nothing(self):
        before = self.blobs()
        data = ckpt(7, n=8, floats=1 << 20)  # 32 MiB
        s = send_part(self.d, "early-cut", data, len(data) * 3 // 4)
        try:
            self.assertTrue(wait_for(lambda: tmp_files(self.d.data_dir)),
                            "no storage was copied before the body ended")
        finally:
            s.close()
        # what arrived whole is kept for a retry (SPEC 3.1) ...
        self.assertTrue(wait_for(lambda: len(self.blobs() - before) >= 5),
                        "the storages that arrived are not kept")
        # ... until the grace ends: then the next request that asks ends it
        time.sleep(3.5)
        end = time.time() + 20
        while self.blobs() != before and time.time() < end:
            r = self.d.request("POST", "/blobs/missing", body=b'{"blobs": []}',
                               headers={"Content-Type": "application/json"})
            self.assertEqual(r.status, 200)
            time.sleep(0.2)
        self.assertEqual(self.blobs(), before, "kept storages stayed after the grace")
        self.assertTrue(wait_for(lambda: not tmp_files(self.d.data_dir)),
                        tmp_files(self.d.data_dir))
        self.assertEqual(self.d.get("/models/early-cut/checkpoints").status, 404)


class KilledMidUpload(unittest.TestCase):
    def test_kill_9_after_the_early_copies_leaves_nothing_after_a_restart(self):
        d = ckptd.Daemon(name="fs-early-kill", args=["--compress", "off"]).start()
        try:
            kept = ckpt(8)
            j = d.upload_ok("kept", kept)
            before = store.blob_files(d.data_dir)[0]
            data = ckpt(9, n=8, floats=1 << 20)
            s = send_part(d, "killed", data, len(data) * 7 // 8)
            try:
                self.assertTrue(wait_for(lambda: tmp_files(d.data_dir)),
                                "no storage was copied before the body ended")
                d.kill()
            finally:
                s.close()
            self.assertEqual(store.blob_files(d.data_dir)[0], before)
            d.start()
            self.assertEqual(tmp_files(d.data_dir), [], "a restart removes the copies")
            self.assertEqual(d.get("/models/killed/checkpoints").status, 404)
            st, _h, got, n = d.stream_download("/models/kept/checkpoints/%d/file" % j["id"])
            self.assertEqual((st, got, n), (200, sha(kept), len(kept)))
            j2 = d.upload_ok("killed", data)
            st, _h, got, n = d.stream_download("/models/killed/checkpoints/%d/file" % j2["id"])
            self.assertEqual((st, got, n), (200, sha(data), len(data)))
            d.stop_checked()
            p = store.cli("verify", "--data", d.data_dir)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        finally:
            d.stop()
            d.cleanup()


if __name__ == "__main__":
    harness.main()
