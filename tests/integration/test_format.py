"""The data directory's format version (docs/operations.md "Upgrading"): a new directory records the
current format; a directory of the previous format (made here as the previous release left it: no
`v/format` key) is migrated only with --backup DIR or --no-backup, after saying what will change;
a directory written by a newer format is refused with exit status 4."""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import MBYTED, Server, main  # noqa: E402
from storeutil import home, put  # noqa: E402

LDB_EDIT = os.environ.get("MBYTE_LDB_EDIT")
CURRENT = "2"  # MBYTE_FORMAT in kernel/fs.h


def ldb(srv, *args):
    r = subprocess.run([LDB_EDIT, os.path.join(srv.data, "meta")] + list(args), capture_output=True, text=True)
    return r.returncode, r.stdout.strip()


class Format(unittest.TestCase):
    def setUp(self):
        if not LDB_EDIT:
            raise AssertionError("MBYTE_LDB_EDIT is not set (tests/meson.build sets it)")
        self.srv = Server()
        self.srv.start()
        admin = self.srv.login()
        self.sid = home(self.srv, admin)
        self.data = os.urandom(700 * 1024)
        self.assertIn(put(self.srv, admin, self.sid, "kept.bin", self.data).status, (200, 201))
        self.srv.stop()
        self.backups = tempfile.mkdtemp(prefix="mbyte-format-backup-")

    def tearDown(self):
        if self.srv.proc:
            self.srv.stop()
        self.srv.cleanup()
        shutil.rmtree(self.backups, ignore_errors=True)

    def run_mbyted(self, *args):
        """mbyted on the test's data with extra arguments, expected to exit by itself."""
        return subprocess.run([MBYTED, "--config", self.srv.confdir] + list(args), env=self.srv.env(),
                              capture_output=True, text=True, timeout=120)

    def start_with(self, *args):
        self.srv.log = open(self.srv.log_path, "ab")
        self.srv.proc = subprocess.Popen([MBYTED, "--config", self.srv.confdir] + list(args), env=self.srv.env(),
                                         stdout=self.srv.log, stderr=subprocess.STDOUT)
        self.srv.wait_ready()

    def assert_kept_file_reads_back(self):
        admin = self.srv.login()
        g = self.srv.request("GET", "/api/v1/stores/%d/files/kept.bin" % self.sid, token=admin)
        self.assertEqual(g.status, 200, g)
        self.assertEqual(g.body, self.data)

    def test_a_new_data_directory_records_the_current_format(self):
        self.assertEqual(ldb(self.srv, "--get", "v/format"), (0, CURRENT))

    def test_the_previous_format_is_migrated_only_with_a_backup_or_no_backup_and_says_what_changes(self):
        self.assertEqual(ldb(self.srv, "--del", "v/format")[0], 0)  # as the previous release left it
        r = self.run_mbyted()
        self.assertEqual(r.returncode, 5, r.stderr)
        self.assertIn("--backup DIR", r.stderr)
        self.assertIn("--no-backup", r.stderr)
        self.assertIn("data format 0 -> 1: record the data format version", r.stderr)
        self.assertEqual(ldb(self.srv, "--get", "v/format")[0], 1, "refused, yet something was written")

        self.start_with("--backup", self.backups)
        self.assert_kept_file_reads_back()
        self.srv.stop()
        self.assertEqual(ldb(self.srv, "--get", "v/format"), (0, CURRENT))
        # The backup taken before the migration is whole, and holds the old format.
        v = self.srv.ctl("backup", "verify", self.backups)
        self.assertEqual(v.returncode, 0, v.stderr)
        restored = self.backups + "-restored"
        self.addCleanup(shutil.rmtree, restored, True)
        self.assertEqual(self.srv.ctl("restore", self.backups, "--data", restored).returncode, 0)
        r = subprocess.run([LDB_EDIT, os.path.join(restored, "meta"), "--get", "v/format"], capture_output=True)
        self.assertEqual(r.returncode, 1, "the backup was taken after the migration")

    def test_no_backup_migrates_without_one(self):
        ldb(self.srv, "--del", "v/format")
        self.start_with("--no-backup")
        self.assert_kept_file_reads_back()
        self.srv.stop()
        self.assertEqual(ldb(self.srv, "--get", "v/format"), (0, CURRENT))

    def test_format_1_small_files_read_back_after_the_step_to_2_and_go_with_their_chunk(self):
        # Format 1 kept a small file's bytes in ci/<sha256> itself; format 2 keeps them in
        # cb/<sequence><sha256> and ci/ names that record. Made here as format 1 left it: the body
        # record moved back to ci/ and the version set to 1.
        self.srv.start()
        admin = self.srv.login()
        old = {"old-%d.txt" % i: ("format one, file %d\n" % i).encode() * 40 for i in range(3)}
        for name, data in old.items():
            self.assertEqual(put(self.srv, admin, self.sid, name, data).status, 201)
        self.srv.stop()
        bodies = ldb(self.srv, "--keys", "cb/")[1].split()
        self.assertEqual(len(bodies), 3, bodies)
        for k in bodies:
            self.assertEqual(ldb(self.srv, "--rename", k, "ci/" + k[19:])[0], 0)
        self.assertEqual(ldb(self.srv, "--keys", "cb/"), (0, ""))
        self.assertEqual(ldb(self.srv, "v/format", CURRENT, "1")[0], 0)
        r = self.run_mbyted()
        self.assertEqual(r.returncode, 5, r.stderr)
        self.assertIn("data format 1 -> 2: keep the bytes of small files", r.stderr)
        self.assertNotIn("data format 0 -> 1", r.stderr)

        self.start_with("--no-backup")
        admin = self.srv.login()
        for name, data in old.items():
            g = self.srv.request("GET", "/api/v1/stores/%d/files/%s" % (self.sid, name), token=admin)
            self.assertEqual((g.status, g.body), (200, data), name)
        new = b"format two\n" * 40
        self.assertEqual(put(self.srv, admin, self.sid, "new.txt", new).status, 201)
        for name in ("old-0.txt", "old-1.txt"):
            self.assertEqual(self.srv.request("DELETE", "/api/v1/stores/%d/files/%s" % (self.sid, name),
                                              token=admin).status, 204)
        f = self.srv.request("POST", "/api/v1/admin/fsck", token=admin)
        self.assertEqual((f.status, f.json()["problems"]), (200, []))
        self.srv.stop()
        self.assertEqual(ldb(self.srv, "--get", "v/format"), (0, CURRENT))
        self.srv.extra_env["MBYTE_GC_GRACE"] = "0"
        self.start_with()
        p = self.srv.ctl("fsck", "--repair")  # runs the collector (grace 0 here)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        admin = self.srv.login()
        for name, data in (("old-2.txt", old["old-2.txt"]), ("new.txt", new)):
            g = self.srv.request("GET", "/api/v1/stores/%d/files/%s" % (self.sid, name), token=admin)
            self.assertEqual((g.status, g.body), (200, data), name)
        self.srv.stop()
        h = {n: hashlib.sha256(d).hexdigest() for n, d in list(old.items()) + [("new.txt", new)]}
        inline = ldb(self.srv, "--keys", "ci/")[1].split()
        self.assertEqual(sorted(inline), sorted("ci/" + h[n] for n in ("old-2.txt", "new.txt")))
        # the old form is still the old form; the new file's bytes are in a body record it names
        self.assertEqual(ldb(self.srv, "--get", "ci/" + h["old-2.txt"])[1], "\x01" + old["old-2.txt"].decode().strip())
        body = ldb(self.srv, "--keys", "cb/")[1].split()
        self.assertEqual([k[19:] for k in body], [h["new.txt"]])
        self.assertEqual(ldb(self.srv, "--get", "ci/" + h["new.txt"])[1], "\x02" + body[0][3:19])

    def test_a_newer_format_is_refused_with_exit_status_4_and_nothing_changes(self):
        self.assertEqual(ldb(self.srv, "v/format", CURRENT, "99")[0], 0)
        r = self.run_mbyted()
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("format 99, written by a newer MByte", r.stderr)
        r = self.run_mbyted("--no-backup")
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertEqual(ldb(self.srv, "--get", "v/format"), (0, "99"))


if __name__ == "__main__":
    main()
