/*
 * modules/ftp/ftp_tls.c — the module's TLS context (control and data connections, explicit
 * and implicit): TLS 1.2 and later, no renegotiation, a server session cache so data
 * connections can resume the control connection's session (require_tls_reuse), and a
 * self-signed P-256 certificate under <data_dir>/m/ftp/ on the first start when tls_cert is
 * not set.
 *
 * Threads: init only (the loop thread); the context is then read-only, shared by sessions.
 */
#include "ftp.h"
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sodium.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static int write_pem(const char *path, int (*fn)(FILE *, void *), void *obj)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    FILE *fp = fdopen(fd, "w");
    if (!fp) {
        close(fd);
        return -1;
    }
    int ok = fn(fp, obj);
    return fclose(fp) == 0 && ok ? 0 : -1;
}
static int pem_key(FILE *fp, void *k) { return PEM_write_PrivateKey(fp, k, NULL, NULL, 0, NULL, NULL); }
static int pem_cert(FILE *fp, void *x) { return PEM_write_X509(fp, x); }

/* A self-signed P-256 certificate for the first start without a configured one. */
static int tls_generate(const char *cert, const char *key)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    int rc = -1;
    if (pk && x) {
        unsigned char serial[8];
        randombytes_buf(serial, sizeof serial);
        serial[0] &= 0x7f;
        BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
        BN_free(bn);
        X509_set_version(x, 2);
        X509_gmtime_adj(X509_getm_notBefore(x), -3600);
        X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 86400);
        X509_set_pubkey(x, pk);
        X509_NAME *n = X509_get_subject_name(x);
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"MByte FTP", -1, -1, 0);
        X509_set_issuer_name(x, n);
        if (X509_sign(x, pk, EVP_sha256()) > 0 && write_pem(key, pem_key, pk) == 0 &&
            write_pem(cert, pem_cert, x) == 0)
            rc = 0;
    }
    X509_free(x);
    EVP_PKEY_free(pk);
    return rc;
}

int tls_setup(ftp_srv *f, const char *cert, const char *key, mb_err *e)
{
    const mb_api *api = f->api;
    char c[1024], k[1024];
    if (!cert[0]) {
        char dir[900];
        snprintf(dir, sizeof dir, "%s/m", api->data_dir());
        mkdir(dir, 0700);
        snprintf(dir, sizeof dir, "%s/m/ftp", api->data_dir());
        mkdir(dir, 0700);
        snprintf(c, sizeof c, "%s/cert.pem", dir);
        snprintf(k, sizeof k, "%s/key.pem", dir);
        if (access(c, R_OK) || access(k, R_OK)) {
            if (tls_generate(c, k))
                return api->err_set(e, MB_EIO, "could not create a self-signed certificate in %s", dir);
            api->log(f->self, MB_LOG_INFO, "created a self-signed TLS certificate in %s", dir);
        }
        cert = c;
        key = k;
    }
    f->ctx = SSL_CTX_new(TLS_server_method());
    if (!f->ctx)
        return api->err_set(e, MB_ENOMEM, "could not create the TLS context");
    SSL_CTX_set_min_proto_version(f->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(f->ctx, SSL_OP_NO_RENEGOTIATION);
    static const unsigned char sid_ctx[] = "mbyte-ftp";
    SSL_CTX_set_session_id_context(f->ctx, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_session_cache_mode(f->ctx, SSL_SESS_CACHE_SERVER);
    if (SSL_CTX_use_certificate_chain_file(f->ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(f->ctx, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(f->ctx) != 1) {
        ERR_clear_error();
        return api->err_set(e, MB_EINVAL, "cannot use the TLS certificate %s with key %s", cert, key);
    }
    return 0;
}
