/* Unit tests: password and token handling (kernel/auth.c), and a new account's first store
 * made in one transaction like every other store (the commit observer sees it, and a refused
 * commit leaves neither the account nor its store). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include "../../kernel/kernel.h"
#include "../../kernel/txn.h"

static void test_password_hash_is_argon2id_and_verifies(void **s)
{
    (void)s;
    char hash[128];
    mb_err err = {0};
    assert_int_equal(auth_password_hash("correct horse", hash, &err), 0);
    assert_true(strncmp(hash, "$argon2id$", 10) == 0);
    assert_true(auth_password_check(hash, "correct horse"));
    assert_false(auth_password_check(hash, "correct hors"));
    assert_false(auth_password_check(hash, ""));
    char hash2[128];
    assert_int_equal(auth_password_hash("correct horse", hash2, &err), 0);
    assert_string_not_equal(hash, hash2); /* salted */
}

/* With the login cache on, a remembered match changes nothing a caller can observe: a wrong
 * password is still refused right after a right one, and the match belongs to that one hash
 * (a changed password is a new hash, with a new salt). */
static void test_remembered_passwords_stay_bound_to_their_hash(void **s)
{
    (void)s;
    kcfg cfg = {.login_cache_ttl = 600};
    kcfg *saved = g_cfg;
    g_cfg = &cfg;
    char a[128], b[128];
    mb_err err = {0};
    assert_int_equal(auth_password_hash("first password", a, &err), 0);
    assert_int_equal(auth_password_hash("second password", b, &err), 0);
    for (int i = 0; i < 3; i++) { /* a miss, then hits */
        assert_true(auth_password_check(a, "first password"));
        assert_false(auth_password_check(a, "first passwor"));
        assert_false(auth_password_check(a, "second password"));
        assert_false(auth_password_check(b, "first password"));
        assert_true(auth_password_check(b, "second password"));
    }
    assert_false(auth_password_check(NULL, "first password"));
    g_cfg = saved;
}

static void test_short_and_huge_passwords_are_refused(void **s)
{
    (void)s;
    char hash[128], big[2000];
    mb_err err = {0};
    assert_int_equal(auth_password_hash("short", hash, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "at least 8"));
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(auth_password_hash(big, hash, &err), MB_EINVAL);
}

static void test_token_hash_is_sha256_hex(void **s)
{
    (void)s;
    char h[65];
    auth_token_hash("abc", h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    char h2[65];
    auth_token_hash("abd", h2);
    assert_string_not_equal(h, h2);
}

static void test_usernames(void **s)
{
    (void)s;
    assert_true(auth_valid_username("alice"));
    assert_true(auth_valid_username("bob.smith-2"));
    assert_false(auth_valid_username(""));
    assert_false(auth_valid_username("Alice"));
    assert_false(auth_valid_username("../etc"));
    assert_false(auth_valid_username(".hidden"));
    assert_false(auth_valid_username("a b"));
    assert_false(auth_valid_username("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")); /* 65 */
}

static int commits, refuse;

static int count_commit(const db_batch *b, uint64_t *wait, mb_err *err)
{
    (void)b;
    *wait = 0;
    commits++;
    return refuse ? err_set(err, MB_EIO, "refused by the test") : 0;
}

static int no_wait(uint64_t ticket, mb_err *err)
{
    (void)ticket, (void)err;
    return 0;
}

static const txn_observer counter = {count_commit, no_wait};

static bool key_exists(const char *key)
{
    char *v;
    size_t n;
    if (db_get(key, strlen(key), &v, &n))
        return false;
    free(v);
    return true;
}

static size_t keys_under(const char *prefix)
{
    size_t n = 0;
    db_iter *it = db_iter_prefix(prefix, strlen(prefix));
    while (db_iter_next(it))
        n++;
    db_iter_free(it);
    return n;
}

static void test_a_new_account_and_its_store_are_one_transaction(void **s)
{
    (void)s;
    char dir[64] = "/tmp/mbauthXXXXXX";
    assert_non_null(mkdtemp(dir));
    mb_err err = {0};
    assert_int_equal(db_open(dir, &err), 0);
    txn_observe(&counter);
    uint64_t id = 0;
    assert_int_equal(auth_user_add("alice", "a long password", MB_ROLE_USER, &id, &err), 0);
    assert_int_equal(commits, 1); /* the observer saw the change: it went through txn_end */
    assert_true(key_exists("u/alice"));
    assert_int_equal(keys_under("s/"), 1); /* her Home store */
    refuse = 1;
    assert_int_not_equal(auth_user_add("bob", "a long password", MB_ROLE_USER, &id, &err), 0);
    assert_int_equal(commits, 2);
    assert_false(key_exists("u/bob")); /* refused: no account, no store */
    assert_int_equal(keys_under("s/"), 1);
    txn_observe(NULL);
    db_close();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_password_hash_is_argon2id_and_verifies),
        cmocka_unit_test(test_remembered_passwords_stay_bound_to_their_hash),
        cmocka_unit_test(test_short_and_huge_passwords_are_refused),
        cmocka_unit_test(test_token_hash_is_sha256_hex),
        cmocka_unit_test(test_usernames),
        cmocka_unit_test(test_a_new_account_and_its_store_are_one_transaction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
