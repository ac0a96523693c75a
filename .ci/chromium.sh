#!/usr/bin/env bash
# Install Debian's chromium for the explorer's browser test (tests/e2e/test_explorer_browser.py).
# Playwright drives /usr/bin/chromium directly: no `playwright install` (it downloads browsers).
# Never fatal: without chromium that test skips, it does not fail.
set -u

if [ -x /usr/bin/chromium ]; then
    echo "chromium: /usr/bin/chromium present"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "warning: not root and no sudo; cannot install chromium; the explorer browser test will skip" >&2
        exit 0
    fi
fi

echo "chromium: installing Debian's chromium (apt-get)"
if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium; then
    if [ -x /usr/bin/chromium ]; then
        echo "chromium: installed /usr/bin/chromium"
    else
        echo "warning: apt-get installed chromium but /usr/bin/chromium is missing; the explorer browser test will skip" >&2
    fi
else
    echo "warning: apt-get could not install chromium; the explorer browser test will skip" >&2
fi
exit 0
