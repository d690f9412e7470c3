/*
 * dav_ms.c — the multistatus answers of outside WebDAV servers (RFC 4918 section 13), for the
 * client backends of dav_backend.c: a PROPFIND Depth 1 lists a collection; and the one reader
 * of XML from outside (dav_xml_read), which the server side's request bodies go through too.
 * Pure (libxml2 and the C library only) and fuzzed (tests/fuzz/fuzz_dav_ms.c): the bytes come
 * from a server or client we do not control. The caller bounds their size (HP_BODY_MAX); no DTD, entity or network is
 * ever loaded, and a document that is not well-formed is refused whole.
 */
#include "dav.h"
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static bool is_dav(xmlNodePtr n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && n->ns && n->ns->href && !strcmp((const char *)n->ns->href, "DAV:") &&
           !strcmp((const char *)n->name, name);
}

static xmlNodePtr child(xmlNodePtr n, const char *name)
{
    for (xmlNodePtr c = n ? n->children : NULL; c; c = c->next)
        if (is_dav(c, name))
            return c;
    return NULL;
}

/* The text of n, blanks trimmed, into out (cut to n-1 bytes): false when too long. */
static bool text_of(xmlNodePtr n, char *out, size_t cap)
{
    out[0] = 0;
    xmlChar *t = n ? xmlNodeGetContent(n) : NULL;
    if (!t)
        return true;
    const char *s = (const char *)t;
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    size_t l = strlen(s);
    while (l && (s[l - 1] == ' ' || s[l - 1] == '\t' || s[l - 1] == '\r' || s[l - 1] == '\n'))
        l--;
    bool fits = l < cap;
    if (fits) {
        memcpy(out, s, l);
        out[l] = 0;
    }
    xmlFree(t);
    return fits;
}

int64_t dav_http_time(const char *s)
{
    struct tm tm = {0};
    const char *end = s ? strptime(s, "%a, %d %b %Y %H:%M:%S", &tm) : NULL;
    return end ? (int64_t)timegm(&tm) : 0;
}

/* One <D:response>: its href, and from the propstat whose status is 200 the size, the
 * modification time and whether it is a collection. A response without href is skipped. */
static int one_response(xmlNodePtr r, dav_ms_fn fn, void *ud)
{
    char href[DAV_MS_HREF_MAX], num[32], date[64], status[128];
    if (!text_of(child(r, "href"), href, sizeof href) || !href[0])
        return 0;
    uint64_t size = 0;
    int64_t mtime = 0;
    bool coll = false;
    for (xmlNodePtr ps = r->children; ps; ps = ps->next) {
        if (!is_dav(ps, "propstat"))
            continue;
        if (text_of(child(ps, "status"), status, sizeof status) && status[0] && !strstr(status, " 200"))
            continue; /* the properties this server does not have (404) */
        xmlNodePtr prop = child(ps, "prop");
        if (text_of(child(prop, "getcontentlength"), num, sizeof num) && num[0]) {
            char *end;
            unsigned long long v = strtoull(num, &end, 10);
            if (*end == 0 && num[0] != '-')
                size = v;
        }
        if (text_of(child(prop, "getlastmodified"), date, sizeof date) && date[0])
            mtime = dav_http_time(date);
        coll |= child(child(prop, "resourcetype"), "collection") != NULL;
    }
    return fn(href, size, mtime, coll, ud);
}

void *dav_xml_read(const void *body, size_t len)
{
    if (!body || !len || len > INT32_MAX)
        return NULL;
    xmlParserCtxtPtr ctx = xmlNewParserCtxt();
    if (!ctx)
        return NULL;
    xmlDocPtr d = xmlCtxtReadMemory(ctx, body, (int)len, NULL, NULL,
                                    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    bool ok = d && ctx->wellFormed && ctx->nsWellFormed && xmlDocGetRootElement(d);
    xmlFreeParserCtxt(ctx);
    if (!ok) {
        xmlFreeDoc(d);
        return NULL;
    }
    return d;
}

int dav_ms_parse(const char *xml, size_t len, dav_ms_fn fn, void *ud)
{
    if (!xml || !len || len > DAV_MS_BODY_MAX)
        return MB_EINVAL;
    xmlDocPtr d = dav_xml_read(xml, len);
    xmlNodePtr root = d ? xmlDocGetRootElement(d) : NULL;
    if (!is_dav(root, "multistatus")) {
        xmlFreeDoc(d);
        return MB_EINVAL;
    }
    int rc = 0;
    for (xmlNodePtr r = root->children; r && !rc; r = r->next)
        if (is_dav(r, "response"))
            rc = one_response(r, fn, ud);
    xmlFreeDoc(d);
    return rc;
}
