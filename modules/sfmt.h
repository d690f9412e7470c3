/*
 * modules/sfmt.h — snprintf that may cut, for messages and paths that are checked
 * afterwards (a cut path fails its open/stat; a cut reason still says what happened), without
 * -Wformat-truncation noise. Header only; shared by the thumbnails and search modules.
 */
#ifndef MBYTE_SFMT_H
#define MBYTE_SFMT_H
#include <stdarg.h>
#include <stdio.h>

__attribute__((format(printf, 3, 4))) static inline void sfmt(char *out, size_t n, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vsnprintf(out, n, f, ap);
    va_end(ap);
}

#endif
