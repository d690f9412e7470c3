"""The data directory's format version (docs/operations.md "Upgrading"): a new directory records the
current format; a directory of the previous format (made here as the previous release left it: no
`v/format` key) is migrated only with --backup DIR or --no-backup, after saying what will change;
a directory written by a newer format is refused with exit status 4."""
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
CURRENT = "1"  # MBYTE_FORMAT in kernel/fs.h


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
