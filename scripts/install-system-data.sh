#!/usr/bin/env bash
# Installs the Debian dataset packages the default models train on, when they are missing.
# Without root or apt, it says what is missing and how to use your own files instead.
set -euo pipefail
# abc2midi (Debian abcmidi): folk-lstm renders tunes to MIDI with it, and `edgestack abc-check`
# uses it as a strict ABC parser.
if ! command -v abc2midi >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo ">> installing Debian package abcmidi (abc2midi: ABC tunes -> MIDI)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq abcmidi
  else
    echo "!! abc2midi is missing: folk-lstm's /render_midi needs it (as root: apt-get install abcmidi)" >&2
  fi
fi
# h2load (Debian nghttp2-client): the load generator of `edgestack bench MODEL --protocols`, a C
# program that drives HTTP/1.1 and HTTP/2 (gRPC) alike, so the client is never the bottleneck.
if ! command -v h2load >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo ">> installing Debian package nghttp2-client (h2load: the benchmark's load generator)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client
  else
    echo "!! h2load is missing: edgestack bench --protocols needs it (as root: apt-get install nghttp2-client)" >&2
  fi
fi
# Fonts: digits-cnn adds digits printed in Liberation, FreeFont and URW faces to its training
# split, and its evaluation set of digits no scanner made (python -m training.data.font_digits)
# is rendered from the DejaVu faces, which it never trains on (training/data/font_digits.py).
FONT_PACKAGES="fonts-dejavu-core fonts-dejavu-extra fonts-liberation2 fonts-freefont-ttf fonts-urw-base35"
missing_fonts=$(for p in $FONT_PACKAGES; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
if [ -n "$missing_fonts" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo ">> installing Debian font packages for digits-cnn's printed digits: $missing_fonts"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing_fonts
  else
    echo "!! missing font packages ($missing_fonts): digits-cnn then trains without printed digits (as root: apt-get install $missing_fonts)" >&2
  fi
fi
FASHION_DIR=/usr/share/datasets/fashion-mnist
if [ -f "$FASHION_DIR/train-images-idx3-ubyte.gz" ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo ">> installing Debian package dataset-fashion-mnist (Fashion-MNIST, 60k/10k images)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
  exit 0
fi
cat >&2 <<MSG
!! Fashion-MNIST is missing: $FASHION_DIR has no IDX files.
   Install it as root with:   apt-get install dataset-fashion-mnist
   or point edgestack at your own IDX files (train-images-idx3-ubyte[.gz] etc.):
       export EDGESTACK_FASHION_DIR=/path/to/fashion-mnist
MSG
[ -n "${EDGESTACK_FASHION_DIR:-}" ] && exit 0
exit 1
