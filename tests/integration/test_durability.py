"""durability: strict and relaxed (issue 16; docs/operations.md "Durability").

strict (the default): an upload is answered only after the group commit's fsync covers it, so
  - right after every answer, the writes made durable (mbyte_group_commit_writes_sum) count it;
  - SIGKILL right after an acknowledged upload (HTTP PUT, or FTP STOR's 226 in one session) loses
    nothing, round after round.
relaxed: the answer goes out before the sync, and the flusher syncs within the window:
  - the writes made durable catch up with every acknowledged one without another request
    (polled with a deadline: the bound is documented, never timed here);
  - a killed process loses nothing either (the write reached the kernel before the answer);
    what relaxed can lose is a power cut's last window, which a test cannot cut.
And the setting itself: a bad value stops the server with the line named."""
import ftplib
import glob
import io
import os
import random
import re
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import ADMIN_PASSWORD, Server, ServerTest, free_port, main, refused_at_start  # noqa: E402


def synced_writes(srv, token):
    r = srv.request("GET", "/metrics", token=token)
    assert r.status == 200, r
    m = re.search(rb"^mbyte_group_commit_writes_sum (\d+)$", r.body, re.M)
    return int(m.group(1))


class Durability:
    """The shared steps; the classes below pick the setting."""

    def upload(self, name, data):
        r = self.srv.request("PUT", "/api/v1/stores/%s/files/d/%s?parents=true" % (self.sid, name), data,
                             token=self.admin)
        self.assertIn(r.status, (200, 201), r)

    def setUp(self):
        self.ftp_port = free_port()
        base = random.randrange(20000, 60000, 100)
        env = {"MBYTE_FTP_LISTEN": "127.0.0.1:%d" % self.ftp_port, "MBYTE_FTP_PASV_PORTS": "%d-%d" % (base, base + 99)}
        self.srv = Server(modules={"ftp": True}, env=env, conf=self.conf)
        self.srv.start()
        self.admin = self.srv.login()
        self.sid = self.srv.request("GET", "/api/v1/stores", token=self.admin).json()[0]["id"]

    def restart_after_kill(self):
        self.srv.kill()
        self.srv.start()
        self.admin = self.srv.login()

    def check_all(self, sent):
        for name, data in sent.items():
            r = self.srv.request("GET", "/api/v1/stores/%s/files/d/%s" % (self.sid, name), token=self.admin)
            self.assertEqual((r.status, r.body), (200, data), name)

    def test_sigkill_after_each_acknowledged_upload_loses_nothing(self):
        sent = {}
        for rnd in range(4):
            for i in range(5):
                name = "r%d-%d.bin" % (rnd, i)
                sent[name] = os.urandom(4096 if i % 2 == 0 else 300000)  # inline, and a chunk file
                self.upload(name, sent[name])
            self.restart_after_kill()  # SIGKILL right after the last answer
            self.check_all(sent)
        r = self.srv.ctl("fsck")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_sigkill_after_the_226_of_each_ftp_stor_in_one_session_loses_nothing(self):
        sent = {}
        for rnd in range(3):
            f = ftplib.FTP(timeout=30)
            f.connect("127.0.0.1", self.ftp_port)
            f.login("admin", ADMIN_PASSWORD)
            if rnd == 0:
                f.mkd("/Home/d")
            for i in range(5):
                name = "ftp%d-%d.bin" % (rnd, i)
                sent[name] = os.urandom(4096 if i % 2 == 0 else 300000)
                self.assertTrue(f.storbinary("STOR /Home/d/" + name, io.BytesIO(sent[name])).startswith("226"))
            self.restart_after_kill()  # SIGKILL right after the last 226, the session still open
            f.close()
            self.check_all(sent)


class StrictTest(Durability, ServerTest):
    def test_every_answer_comes_after_the_sync_that_covers_it(self):
        for i in range(20):
            before = synced_writes(self.srv, self.admin)
            self.upload("s%d.bin" % i, os.urandom(4096))
            self.assertGreaterEqual(synced_writes(self.srv, self.admin), before + 1, "answered before the sync")


class RelaxedTest(Durability, ServerTest):
    conf = {"durability": "relaxed", "durability_window_ms": 200}

    def test_the_flusher_syncs_every_acknowledged_write_without_another_request(self):
        start = synced_writes(self.srv, self.admin)
        for i in range(30):
            self.upload("x%d.bin" % i, os.urandom(4096))
        deadline = time.time() + 30
        while synced_writes(self.srv, self.admin) < start + 30 and time.time() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(synced_writes(self.srv, self.admin), start + 30)


class LogTest(Durability, ServerTest):
    conf = {"db_write_buffer": 1 << 20}  # a memtable of 1 MiB: LevelDB moves to a new log soon

    def newest_log(self):
        logs = sorted(glob.glob(os.path.join(self.srv.data, "meta", "*.log")))
        st = os.stat(logs[-1])
        return logs[-1], st.st_size, st.st_blocks * 512

    def zeros_at_end(self, path, n=65536):
        with open(path, "rb") as f:
            f.seek(-n, os.SEEK_END)
            return f.read() == bytes(n)

    def test_each_new_log_has_zeros_written_ahead_of_leveldb(self):
        # The sync barrier writes zeros over a memtable and an eighth of each new log of
        # LevelDB's (docs/storage.md), so a strict commit's append overwrites blocks the file
        # has and its fdatasync writes no inode; LevelDB passes over the zeros when it reads.
        want = (1 << 20) + (1 << 17)
        first, size, allocated = self.newest_log()
        self.assertEqual(size, want)
        self.assertGreaterEqual(allocated, want)
        self.assertTrue(self.zeros_at_end(first))
        sent = {}
        for i in range(90):  # 2.7 MiB of small files: they live in LevelDB, so in its log
            sent["log%02d.bin" % i] = os.urandom(30000)
            self.upload("log%02d.bin" % i, sent["log%02d.bin" % i])
        second, size, allocated = self.newest_log()
        self.assertNotEqual(second, first, "LevelDB did not move to a new log")
        self.assertEqual(size, want)
        self.assertGreaterEqual(allocated, want)
        # LevelDB's records are at the start, the zeros after them
        with open(second, "rb") as f:
            self.assertNotEqual(f.read(4096), bytes(4096))
        self.assertTrue(self.zeros_at_end(second))
        # the zeros are no records, and none of them fell on one: a killed server reads back
        # every file, those written before the zeros went in and those written over them
        self.restart_after_kill()
        self.check_all(sent)
        for i in range(20):  # and it goes on writing into a log of its own
            sent["after%02d.bin" % i] = os.urandom(30000)
            self.upload("after%02d.bin" % i, sent["after%02d.bin" % i])
        self.restart_after_kill()
        self.check_all(sent)


class SettingTest(unittest.TestCase):
    def test_a_bad_value_is_refused_with_its_line(self):
        refused_at_start(self, {"durability": "sometimes"}, "durability must be strict or relaxed")


if __name__ == "__main__":
    main()
