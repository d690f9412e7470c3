/*
 * chunker.c — content-defined chunking (FastCDC, Xia et al. 2016/2020) for the chunk store.
 *
 * A file version is an ordered list of chunks whose boundaries depend on the content, not on
 * offsets: inserting a byte near the start of a file moves only the boundary of the chunk it
 * lands in, so a re-upload of an edited file stores only what changed (DESIGN.md: Storage).
 *
 * The rolling hash is the Gear hash: fp = (fp << 1) + gear[byte], so bit k of fp depends on
 * the last k+1 bytes and the top bits on the last 64. A boundary is where the masked top bits
 * are all zero. Normalized chunking (level 2) uses a harder mask (22 bits) before the average
 * size and an easier one (18 bits) after it, which pulls chunk sizes towards 1 MiB. Nothing
 * before CHUNK_MIN is examined (cut-point skipping), and CHUNK_MAX is a hard cut.
 *
 * The function is pure and stateless: the caller keeps a buffer and asks for the next cut
 * once it holds at least CHUNK_MAX bytes or the input has ended, so the same bytes always
 * give the same chunks whatever the network delivered them in.
 *
 * Threads: any; the gear table is built once (pthread_once) and read-only afterwards.
 */
#include "fs.h"

static uint64_t gear[256];
static pthread_once_t gear_once = PTHREAD_ONCE_INIT;

/* splitmix64 from a fixed seed: the table must be identical on every machine and forever,
 * or the same file would chunk differently after an upgrade and dedup would be lost. */
static void gear_build(void)
{
    uint64_t x = 0x4d42797465434443ULL; /* "MByteCDC" */
    for (int i = 0; i < 256; i++) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        gear[i] = z ^ (z >> 31);
    }
}

#define MASK_S (~0ULL << (64 - 22)) /* before the average: 1 in 4 Mi positions */
#define MASK_L (~0ULL << (64 - 18)) /* after the average: 1 in 256 Ki positions */

size_t chunker_cut(const uint8_t *p, size_t n)
{
    pthread_once(&gear_once, gear_build);
    if (n <= CHUNK_MIN)
        return n;
    if (n > CHUNK_MAX)
        n = CHUNK_MAX;
    size_t normal = n < CHUNK_AVG ? n : CHUNK_AVG;
    uint64_t fp = 0;
    size_t i = CHUNK_MIN;
    for (; i < normal; i++) {
        fp = (fp << 1) + gear[p[i]];
        if (!(fp & MASK_S))
            return i + 1;
    }
    for (; i < n; i++) {
        fp = (fp << 1) + gear[p[i]];
        if (!(fp & MASK_L))
            return i + 1;
    }
    return n;
}
