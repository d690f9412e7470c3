#!/usr/bin/env bash
# tests/setup/thumbs.sh — what test_thumbnails needs: the ImageMagick CLI and exiftool make the
# test pictures (real files from real tools), identify/convert read the thumbnails back.
#   thumbs.sh            installs the Debian packages (as root; idempotent, quick when present)
#   thumbs.sh --make DIR makes the test files in DIR (the test calls this)
set -euo pipefail
if [ "${1:-}" != "--make" ]; then
  missing=()
  command -v /usr/bin/convert >/dev/null 2>&1 || missing+=(imagemagick)
  command -v exiftool >/dev/null 2>&1 || missing+=(libimage-exiftool-perl)
  command -v vipsthumbnail >/dev/null 2>&1 || missing+=(libvips-tools) # bench/thumbs compares with it
  if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
  exit 0
fi
dir=$2
mkdir -p "$dir"
cd "$dir"
im=/usr/bin/convert
# 12 MP, stored landscape with a white block top-left; EXIF orientation 6 shows it portrait with
# the block top-right.
$im -size 4000x3000 gradient:navy-orange -fill white -draw "rectangle 0,0 800,600" -quality 90 photo.jpg
exiftool -q -overwrite_original -n -Orientation=6 photo.jpg
# PNG with alpha: a half-transparent red disc on transparency, 300x200
$im -size 300x200 xc:none -fill "rgba(255,0,0,0.5)" -draw "circle 150,100 150,20" alpha.png
# HEIC (libheif through ImageMagick), 400x200
$im -size 400x200 gradient:red-blue photo.heic
# GIF, two frames of 120x80 (the first is blue)
$im -size 120x80 xc:blue -size 120x80 xc:green -loop 0 anim.gif
# a truncated JPEG: its first 20 kB
head -c 20000 photo.jpg > truncated.jpg
# a PNG whose header declares 100000 x 100000 pixels (a decompression bomb's header)
python3 - <<'PY'
import struct, zlib
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
row = zlib.compress(b"\0" * (1 + 3 * 100000), 9)
open("bomb.png", "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
                              + chunk(b"IDAT", row) + chunk(b"IEND", b""))
# a one-page PDF written by hand (no ImageMagick, no Ghostscript): 400 x 200 pt, a red band
body = b"1 0 0 rg 0 0 400 100 re f\n"
objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 200] /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(body) + body + b"endstream"]
out, offs = bytearray(b"%PDF-1.4\n"), []
for i, o in enumerate(objs):
    offs.append(len(out))
    out += b"%d 0 obj\n" % (i + 1) + o + b"\nendobj\n"
x = len(out)
out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offs)
out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, x)
open("doc.pdf", "wb").write(out)
open("pdf-named.jpg", "wb").write(out)
PY
printf '# Notes\n\nThe first lines of a Markdown file\nare drawn into its preview.\n' > notes.md
# noise pictures for the cache cap: noise does not compress, so a few fill a small cache
for i in $(seq 1 12); do $im -size 320x240 xc: -seed "$i" +noise Random "noise$i.png"; done
