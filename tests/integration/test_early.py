#!/usr/bin/python3
# backends: sqlite postgresql
"""Writing before the commit on the filesystem store (--compress off).

Each large storage payload is written, as it arrives, straight into a
temporary blob file of its own, which the commit renames into place when
the blob is new (writing once, store.h's store_direct): the files are in
blobs/tmp before the body ends and none is a blob until the commit; the
committed blob is the very file written while the body arrived (the same
inode: no copy); the checkpoint is whole and dedups; an upload refused, cut
off (after its --resume-grace) or killed with the daemon leaves no blob and
no temporary file behind. The files are right when a record's data
descriptor arrives in two writes, when its sizes are in its local header
(Python's zipfile), and when a record named like a storage is none (its
bytes go back into the spool). (test_s3.py checks the early sends on S3.)
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


def direct_files(data_dir):
    """Temporary files of payloads written before their hash is known (named
    with 64 zeros for it), with their inodes."""
    p = os.path.join(data_dir, "blobs", "tmp")
    out = {}
    for n in tmp_files(data_dir):
        if n.startswith("0" * 64 + "."):
            try:
                out[n] = os.stat(os.path.join(p, n)).st_ino
            except FileNotFoundError:
                pass
    return out


def blob_inode(data_dir, h):
    return os.stat(os.path.join(data_dir, "blobs", h[:2], h[2:])).st_ino


def finish(s, data, start):
    """Sends data[start:] on s and reads the whole reply."""
    s.sendall(data[start:])
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        reply += b
    s.close()
    return reply


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
            reply = finish(s, data, len(data) * 3 // 4)
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


    def test_4_a_new_tensor_is_the_file_it_was_written_into(self):
        big = store.randn(41, 3 << 20)  # 12 MiB: its own file
        sd = {"big": big, "small": store.randn(42, 1000), "mid": store.randn(43, 200 * 1024)}
        data = store.save_torch(sd)
        name, (start, length) = store.record_named(data, "/data/0")
        self.assertEqual(length, big.numel() * 4, name)
        s = send_part(self.d, "once", data, start + length // 2)
        try:
            self.assertTrue(wait_for(lambda: direct_files(self.d.data_dir)),
                            "the payload is not written into a file of its own")
            inodes = set(direct_files(self.d.data_dir).values())
            reply = finish(s, data, start + length // 2)
        finally:
            s.close()
        self.assertTrue(reply.startswith(b"HTTP/1.1 201"), reply[:300])
        h = sha(data[start:start + length])
        self.assertIn(blob_inode(self.d.data_dir, h), inodes,
                      "the blob is a copy, not the file written as the body arrived")
        self.assertEqual(tmp_files(self.d.data_dir), [])
        cks = self.d.get_json("/models/once/checkpoints")["checkpoints"]
        store.assert_intact(self, self.d, "/models/once/checkpoints/%d/file" % cks[0]["id"],
                            data, "once-again")
        # stored already: the files written while it arrived go, unflushed
        self.assertEqual(tmp_files(self.d.data_dir), [])

    def test_5_a_descriptor_that_arrives_in_two_writes(self):
        data = ckpt(11, n=3, floats=1 << 20)
        recs = store.tensor_records(data)
        hashes = []
        for _name, (start, length) in recs:
            # torch puts the sizes in a descriptor after the payload: the
            # body pauses 10 bytes into it
            self.assertEqual(data[start + length:start + length + 4], b"PK\x07\x08")
            hashes.append(sha(data[start:start + length]))
        cut = recs[1][1][0] + recs[1][1][1] + 10
        s = send_part(self.d, "desc", data, cut)
        try:
            self.assertTrue(wait_for(lambda: len(direct_files(self.d.data_dir)) >= 2))
            time.sleep(0.3)
            inodes = set(direct_files(self.d.data_dir).values())
            reply = finish(s, data, cut)
        finally:
            s.close()
        self.assertTrue(reply.startswith(b"HTTP/1.1 201"), reply[:300])
        for h in hashes[:2]:
            self.assertIn(blob_inode(self.d.data_dir, h), inodes, h)
        cks = self.d.get_json("/models/desc/checkpoints")["checkpoints"]
        store.assert_intact(self, self.d, "/models/desc/checkpoints/%d/file" % cks[0]["id"],
                            data, "desc-again")

    def test_6_sizes_in_the_local_header_and_a_storage_record_that_is_none(self):
        import zipfile
        import io
        torch_file = ckpt(12, n=2, floats=1 << 20)
        extra = store.randn(99, 1 << 20).numpy().tobytes()  # 4 MiB, named like a storage
        src = zipfile.ZipFile(io.BytesIO(torch_file))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            prefix = src.infolist()[0].filename.split("/")[0]
            for info in src.infolist():
                z.writestr(info.filename, src.read(info.filename))
                if info.filename.endswith("/data/0"):
                    z.writestr(prefix + "/data/77", extra)
        data = out.getvalue()
        before = self.blobs()
        j = self.d.upload_ok("sizes", data)
        self.assertEqual(j["tensor_count"], 2, j)
        self.assertEqual(tmp_files(self.d.data_dir), [])
        self.assertNotIn(sha(extra), self.blobs() - before, "a record no tensor uses is a blob")
        store.assert_intact(self, self.d, "/models/sizes/checkpoints/%d/file" % j["id"], data,
                            "sizes-again")
        for _name, (start, length) in store.tensor_records(torch_file):
            self.assertIn(sha(torch_file[start:start + length]), self.blobs())


    def test_7_every_archive_of_a_distcp_file_is_written_once(self):
        # DCP's .distcp file: a torch.save archive per item, one after another
        parts = [store.save_torch(store.randn(70 + i, 1 << 20)) for i in range(3)]  # 4 MiB each
        data = b"".join(parts)
        hashes = []
        for part in parts:
            (_name, (start, length)), = store.tensor_records(part)
            hashes.append(sha(part[start:start + length]))
        cid = self.d.request("POST", "/models/dcp-once/checkpoints?staged=1").json()["id"]
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=60)
        cut = len(data) - len(parts[-1]) // 2  # halfway into the last archive's tensor
        try:
            s.sendall(("PUT %s/models/dcp-once/checkpoints/%d/files/__0_0.distcp HTTP/1.1\r\n"
                       "Host: x\r\nContent-Type: application/octet-stream\r\n"
                       "Content-Length: %d\r\n\r\n" % (ckptd.API, cid, len(data))).encode())
            s.sendall(data[:cut])
            self.assertTrue(wait_for(lambda: len(direct_files(self.d.data_dir)) >= 3),
                            "the third archive's tensor is not written into a file of its own")
            inodes = set(direct_files(self.d.data_dir).values())
            reply = finish(s, data, cut)
        finally:
            s.close()
        self.assertTrue(reply.startswith(b"HTTP/1.1 201"), reply[:300])
        for h in hashes:
            self.assertIn(blob_inode(self.d.data_dir, h), inodes,
                          "a blob is a copy, not the file written as the body arrived")
        r = self.d.request("POST", "/models/dcp-once/checkpoints/%d/commit" % cid)
        self.assertEqual(r.status, 200, r.body[:300])
        self.assertEqual(tmp_files(self.d.data_dir), [])
        got = self.d.get("/models/dcp-once/checkpoints/%d/files/__0_0.distcp" % cid)
        self.assertEqual(got.status, 200)
        self.assertEqual(sha(got.body), sha(data))


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
