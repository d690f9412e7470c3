#!/usr/bin/env bash
# tests/setup/search.sh — the real tools test_search.py makes its documents with: pandoc (DOCX,
# ODT, HTML, EPUB), groff with gropdf (PDF), LibreOffice Calc and Impress headless (XLSX and ODS from
# CSV, ODP from PPTX), ImageMagick
# and exiftool (a JPEG with camera, date and GPS tags); the .eml comes from Python's email package.
# Idempotent and quick when everything is there.
set -euo pipefail
missing=()
command -v pandoc >/dev/null 2>&1 || missing+=(pandoc)
command -v gropdf >/dev/null 2>&1 || missing+=(groff)
command -v soffice >/dev/null 2>&1 || missing+=(libreoffice-calc-nogui)
dpkg -s libreoffice-impress-nogui >/dev/null 2>&1 || missing+=(libreoffice-impress-nogui) # ODP from PPTX
command -v convert >/dev/null 2>&1 || missing+=(imagemagick)
command -v exiftool >/dev/null 2>&1 || missing+=(libimage-exiftool-perl)
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
