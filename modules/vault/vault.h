/*
 * modules/vault/vault.h — what the vault module's two files share: the module's state, the
 * HTTP client to Vault (vault_http.c) and the login life cycle (vault_http.c), used by the
 * module proper (vault.c: the caches, the providers, the timer).
 *
 * Threads: `net` serialises everything that talks to Vault or changes the login (token,
 * secret_id, backoff); `cache_mu` guards the value cache only, so a cached read never waits
 * behind a network call. Lock order: net before cache_mu.
 */
#ifndef MB_VAULT_H
#define MB_VAULT_H

#include "mbyte.h"
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define VAULT_TOKEN_MAX 512

typedef enum { AUTH_TOKEN, AUTH_APPROLE } vault_method;

/* One cached KV v2 value: "<mount>/<path>#<key>[@version]". */
typedef struct vcache {
    struct vcache *next;
    char *ref;   /* the reference after "vault:" */
    char *value; /* the key's value; zeroed before it is freed */
    int64_t version; /* the KV version the value came from */
} vcache;

typedef struct vault {
    mb_module *self;
    const mb_api *api;
    /* settings (init; read-only afterwards) */
    char addr[512];
    char ca_file[1024];
    vault_method method;
    char token_file[1024];
    char role_id[256];
    char secret_id_file[1024];
    char state_file[1024];
    bool wrapped;
    char transit_mount[128];
    int64_t refresh_s, retry_max_s, timeout_s;
    /* login, under net */
    pthread_mutex_t net;
    char token[VAULT_TOKEN_MAX];
    char secret_id[VAULT_TOKEN_MAX];
    int64_t token_ttl_s;  /* the TTL the token had when last obtained or renewed; 0: never expires */
    int64_t renew_at;     /* monotonic ms; 0: no renewal planned */
    bool renewable;
    bool down;            /* the last call could not reach an unsealed Vault */
    int64_t retry_at;     /* monotonic ms of the next attempt after a failure */
    int64_t backoff_ms;
    int64_t next_refresh; /* monotonic ms */
    /* the cache, under cache_mu */
    pthread_mutex_t cache_mu;
    vcache *cache;
    mb_timer *timer;
    pthread_t loop_thread; /* where init ran: network work asked for there moves to a helper thread */
} vault;

/* An answer from Vault: the status and the parsed body (NULL when it was not JSON), or
 * status 0 with `why` when Vault could not be reached. */
typedef struct vresp {
    long status;
    json_t *body;
    char why[1024];
} vresp;

int64_t vault_now_ms(void);

/* One request: method, path under /v1/ ("secret/data/app"), the token for X-Vault-Token (may be
 * NULL), a JSON body (borrowed, may be NULL). Always fills r; the caller json_decrefs r->body.
 * The body bytes are zeroed after parsing (they may hold secrets). net held or not: it only
 * reads settings. */
void vault_call(vault *v, const char *method, const char *path, const char *token, const json_t *body, vresp *r);

/* Vault's own sentence for a failed answer ("permission denied", "Vault is sealed"), from its
 * {"errors": [...]} body, or a description of the status. */
const char *vault_why(const vresp *r, char *buf, size_t n);

/* Make sure there is a usable token: the one held, else the one kept in state_file, else a
 * new login (token file / VAULT_TOKEN, or AppRole with the secret_id, unwrapped first when
 * wrapped). net held. 0, or a negative code with err filled. */
int vault_login(vault *v, mb_err *err);

/* Renew the token when 2/3 of its TTL passed; a refused renewal means a new login (AppRole).
 * net held. */
int vault_renew_if_due(vault *v, mb_err *err);

/* Is the held token still good (auth/token/lookup-self)? 1 yes, 0 no, negative: Vault cannot
 * answer. A 403 elsewhere is either a dead token or a policy that does not allow the path:
 * this tells them apart. net held. */
int vault_token_alive(vault *v, mb_err *err);

/* Forget the token (a 403 said it is no good); net held. */
void vault_drop_token(vault *v);

/* The kept login state: read at start, written after each login (owner-only, atomic). */
void vault_state_save(vault *v);

#endif
