/*
 * format.c — the data directory's format version and its migrations (docs/operations.md
 * "Upgrading", docs/storage.md `v/format`).
 *
 * LevelDB holds `v/format` (decimal text). At start, before anything else reads or writes the
 * data (main.c calls format_check right after the database and the chunk store open):
 *   - a new, empty database gets the current format;
 *   - a newer format than this mbyted knows is refused (exit status 4): an older binary must never
 *     write data a newer one laid out differently;
 *   - an older format is migrated step by step, each step one synced batch that also records its
 *     target format, so a crash between steps resumes at the next one. mbyted says what each step
 *     will do and migrates only when started with --backup DIR (a backup is taken first, through
 *     backup.c) or --no-backup; otherwise it refuses (exit status 5) and says how to go on.
 * Every later format change adds a row to `steps` and a test starting from a data directory of
 * the previous format (tests/integration/test_format.py).
 *
 * Threads: the main thread, before the loop and the HTTP threads start.
 */
#include "fs.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORMAT_KEY "v/format"

/* Format 0: data written before the version was recorded (MByte up to 2026-12-03). */
static int to_1(db_batch *b, mb_err *err)
{
    (void)b, (void)err;
    return 0; /* the layout is the same; recording the version is the whole step */
}

/* Format 2 (2026-12-07): an inline chunk written from now on keeps its bytes under
 * cb/<sequence><sha256>, in the order they were written, and ci/<sha256> names that record
 * (blob.c): LevelDB then moves the bytes down its levels without rewriting them at every
 * level. The format-1 records, which hold the bytes under ci/ themselves, are read as they are
 * and go when their chunk goes; nothing is rewritten here, so the step takes no time on any
 * store. The version stops an older mbyted, which would not find the bytes, from starting. */
static int to_2(db_batch *b, mb_err *err)
{
    (void)b, (void)err;
    return 0;
}

static const struct {
    int to;
    const char *what;
    int (*run)(db_batch *b, mb_err *err);
} steps[] = {
    {1, "record the data format version in the database (nothing else changes)", to_1},
    {2, "keep the bytes of small files written from now on in their own records, in the order they are written "
        "(the records of files written before stay as they are)", to_2},
};

static int stored_format(bool *fresh)
{
    char *v = NULL;
    size_t n = 0;
    *fresh = false;
    if (db_get(FORMAT_KEY, strlen(FORMAT_KEY), &v, &n) == 0) {
        char buf[24];
        snprintf(buf, sizeof buf, "%.*s", (int)(n < 23 ? n : 23), v);
        free(v);
        uint64_t f = 0;
        return parse_u64(buf, &f) && f < 1000000 ? (int)f : -1;
    }
    db_iter *it = db_iter_prefix("", 0);
    *fresh = !db_iter_next(it);
    db_iter_free(it);
    return 0;
}

static int put_format(db_batch *b, int f)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%d", f);
    db_batch_put(b, FORMAT_KEY, strlen(FORMAT_KEY), buf, strlen(buf));
    return db_batch_commit(b, true);
}

int format_check(const char *backup_dir, bool no_backup, mb_err *err)
{
    bool fresh;
    int have = stored_format(&fresh);
    if (have < 0)
        return err_set(err, MB_EIO, "the data format version in %s is unreadable", g_cfg->data_dir);
    if (fresh)
        return put_format(db_batch_new(), MBYTE_FORMAT) ? err_set(err, MB_EIO, "cannot record the data format") : 0;
    if (have > MBYTE_FORMAT)
        return err_set(err, MB_EINVAL,
                       "the data in %s is format %d, written by a newer MByte; this mbyted (%s) knows formats up "
                       "to %d. Run the newer mbyted, or restore a backup taken before the upgrade",
                       g_cfg->data_dir, have, MBYTE_VERSION, MBYTE_FORMAT), FORMAT_NEWER;
    if (have == MBYTE_FORMAT)
        return 0;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        if (steps[i].to > have)
            log_info("data format %d -> %d: %s", steps[i].to - 1, steps[i].to, steps[i].what);
    if (!backup_dir && !no_backup)
        return err_set(err, MB_EINVAL,
                       "the data in %s is format %d and this mbyted (%s) needs format %d (the steps are logged "
                       "above). Start it once with --backup DIR to take a backup first and migrate, or with "
                       "--no-backup to migrate without one",
                       g_cfg->data_dir, have, MBYTE_VERSION, MBYTE_FORMAT), FORMAT_OLDER;
    if (backup_dir) {
        log_info("taking a backup into %s before migrating", backup_dir);
        json_t *result = NULL;
        int rc = backup_take(backup_dir, NULL, &result, err);
        if (rc)
            return rc;
        json_decref(result);
    }
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        if (steps[i].to <= have)
            continue;
        db_batch *b = db_batch_new();
        int rc = steps[i].run(b, err);
        if (rc) {
            db_batch_free(b);
            return rc;
        }
        if (put_format(b, steps[i].to))
            return err_set(err, MB_EIO, "cannot commit the migration to data format %d", steps[i].to);
        log_info("data format is now %d", steps[i].to);
    }
    return 0;
}
