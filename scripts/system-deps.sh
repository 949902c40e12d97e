#!/usr/bin/env bash
# Installs the system packages the tests and benchmarks use, where they are missing.
# PostgreSQL and Redis are started by the test run itself on loopback; this only makes the
# binaries available. Without root or apt it says what is missing and carries on: tests that
# need a missing server skip locally and fail under CI=true.
set -u
need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
# Text fallback fonts (renderer/text/fonts.py): Noto for Latin/Greek/Cyrillic, Arabic, Hebrew,
# Indic, Thai, Lao and ~150 other scripts (fonts-noto-core, 12 MB download), CJK
# (fonts-noto-cjk, 57 MB) and colour emoji (fonts-noto-color-emoji, 10 MB). SIL OFL 1.1.
# Pillow's wheel bundles raqm and loads FriBiDi at run time for right-to-left text.
ldconfig -p 2>/dev/null | grep -q 'libfribidi\.so\.0' || need+=(libfribidi0)
[ -e /usr/share/fonts/truetype/noto/NotoSans-Regular.ttf ] || need+=(fonts-noto-core)
[ -e /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ] || need+=(fonts-noto-cjk)
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need+=(fonts-noto-color-emoji)
# Headless browser for the console's end-to-end test (tests/e2e/test_console_browser.py).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
# The real-client tests: the reference's JavaScript examples under Node (axios from npm) and
# in headless Chromium (Debian's package; no browser download).
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
    echo "missing system packages (install them with your package manager): ${need[*]}" >&2
fi
exit 0
