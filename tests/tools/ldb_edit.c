/*
 * tests/tools/ldb_edit.c — a test helper that edits one value in a stopped mbyted's LevelDB
 * directly, the way an attacker with disk access would (test_audit uses it to tamper with
 * one audit entry). Not part of the server; never installed.
 *
 *   ldb_edit DBDIR KEY FIND REPLACE   replace the first FIND in KEY's value with REPLACE
 *   ldb_edit DBDIR --keys PREFIX      print every key with PREFIX, one a line
 *   ldb_edit DBDIR --get KEY          print KEY's value
 *   ldb_edit DBDIR --del KEY          delete KEY (test_format makes an older data directory this way)
 *   ldb_edit DBDIR --rename KEY NEW   move KEY's value to the key NEW (one synced batch), as an
 *                                     entry made under older rules would be (test_files_attacks)
 * Exit 0 on success, 1 when the key or the text is not there, 2 on usage or open errors.
 */
#include <leveldb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 5 && !(argc == 4 && (!strcmp(argv[2], "--keys") || !strcmp(argv[2], "--get") ||
                                     !strcmp(argv[2], "--del")))) {
        fprintf(stderr, "usage: ldb_edit DBDIR KEY FIND REPLACE | ldb_edit DBDIR --keys PREFIX|--get KEY|--del KEY | "
                        "ldb_edit DBDIR --rename KEY NEW\n");
        return 2;
    }
    char *err = NULL;
    leveldb_options_t *o = leveldb_options_create();
    leveldb_t *db = leveldb_open(o, argv[1], &err);
    if (err) {
        fprintf(stderr, "ldb_edit: %s\n", err);
        return 2;
    }
    int rc = 0;
    if (argc == 4 && strcmp(argv[2], "--keys")) {
        size_t vl;
        leveldb_readoptions_t *ro = leveldb_readoptions_create();
        leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
        leveldb_writeoptions_set_sync(wo, 1);
        char *v = leveldb_get(db, ro, argv[3], strlen(argv[3]), &vl, &err);
        if (!v)
            rc = 1;
        else if (!strcmp(argv[2], "--get"))
            printf("%.*s\n", (int)vl, v);
        else
            leveldb_delete(db, wo, argv[3], strlen(argv[3]), &err);
        leveldb_free(v);
        leveldb_writeoptions_destroy(wo);
        leveldb_readoptions_destroy(ro);
    } else if (argc == 5 && !strcmp(argv[2], "--rename")) {
        leveldb_readoptions_t *ro = leveldb_readoptions_create();
        size_t vl;
        char *v = leveldb_get(db, ro, argv[3], strlen(argv[3]), &vl, &err);
        leveldb_readoptions_destroy(ro);
        if (!v) {
            fprintf(stderr, "ldb_edit: no such key\n");
            rc = 1;
        } else {
            leveldb_writebatch_t *b = leveldb_writebatch_create();
            leveldb_writebatch_delete(b, argv[3], strlen(argv[3]));
            leveldb_writebatch_put(b, argv[4], strlen(argv[4]), v, vl);
            leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
            leveldb_writeoptions_set_sync(wo, 1);
            leveldb_write(db, wo, b, &err);
            leveldb_writeoptions_destroy(wo);
            leveldb_writebatch_destroy(b);
            free(v);
            if (err) {
                fprintf(stderr, "ldb_edit: %s\n", err);
                rc = 2;
            }
        }
    } else if (argc == 4) {
        leveldb_readoptions_t *ro = leveldb_readoptions_create();
        leveldb_iterator_t *it = leveldb_create_iterator(db, ro);
        size_t pl = strlen(argv[3]);
        for (leveldb_iter_seek(it, argv[3], pl); leveldb_iter_valid(it); leveldb_iter_next(it)) {
            size_t kl;
            const char *k = leveldb_iter_key(it, &kl);
            if (kl < pl || memcmp(k, argv[3], pl))
                break;
            printf("%.*s\n", (int)kl, k);
        }
        leveldb_iter_destroy(it);
        leveldb_readoptions_destroy(ro);
    } else {
        leveldb_readoptions_t *ro = leveldb_readoptions_create();
        size_t vl;
        char *v = leveldb_get(db, ro, argv[2], strlen(argv[2]), &vl, &err);
        leveldb_readoptions_destroy(ro);
        char *hit = NULL;
        if (v) {
            v = realloc(v, vl + 1);
            v[vl] = 0;
            hit = strstr(v, argv[3]);
        }
        if (!hit) {
            fprintf(stderr, "ldb_edit: %s\n", v ? "text not found in the value" : "no such key");
            rc = 1;
        } else {
            size_t fl = strlen(argv[3]), rl = strlen(argv[4]);
            char *nv = malloc(vl - fl + rl + 1);
            size_t pre = (size_t)(hit - v);
            memcpy(nv, v, pre);
            memcpy(nv + pre, argv[4], rl);
            memcpy(nv + pre + rl, hit + fl, vl - pre - fl);
            leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
            leveldb_writeoptions_set_sync(wo, 1);
            leveldb_put(db, wo, argv[2], strlen(argv[2]), nv, vl - fl + rl, &err);
            leveldb_writeoptions_destroy(wo);
            free(nv);
            if (err) {
                fprintf(stderr, "ldb_edit: %s\n", err);
                rc = 2;
            }
        }
        free(v);
    }
    leveldb_close(db);
    leveldb_options_destroy(o);
    return rc;
}
