/* Fuzz target: the thumbnails module's parsers of outside bytes — what a file is from its first
 * bytes (thumb_sniff), a client's Accept header, and the ThumbHash encoder over any pixels.
 * The pure files are included whole so the replay build and tools/dev fuzz need nothing more. */
#include "../../modules/thumbnails/thumb_util.c"
#include "../../modules/thumbnails/thumbhash.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    thumb_kind k = thumb_sniff(data, size);
    if (k >= TH_KINDS || !thumb_kind_name(k) || !thumb_kind_class(k))
        __builtin_trap();
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;
    (void)thumb_accepts_webp(s);
    free(s);
    if (size >= 2) {
        int w = data[0] % 101, h = data[1] % 101;
        uint8_t hash[THUMBHASH_MAX];
        if ((size_t)w * h * 4 <= size - 2) {
            size_t n = thumbhash_encode(w, h, data + 2, hash);
            if (n > THUMBHASH_MAX || (w && h && !n))
                __builtin_trap(); /* a size it takes always gives a hash */
        }
    }
    return 0;
}
