#!/usr/bin/env bash
# Emulated devices for the bundle checks (issue 21), built once and cached in .emu/ (gitignored):
#
#   .emu/qemu/bin/qemu-aarch64, qemu-x86_64   QEMU user-mode emulators 10.x, from Debian bookworm-backports'
#                                             qemu-user package, unpacked here (not installed: apt reads a
#                                             private source list under .emu/apt/, the system's is untouched)
#   .emu/arm64-root/                          a Debian bookworm arm64 root with python3.11 (debootstrap
#                                             --foreign, then every fetched .deb unpacked with dpkg -x)
#
# Why QEMU 10 and not bookworm's own 7.2: under 7.2 an arm64 program reads the host's x86
# /proc/cpuinfo, and the cpuinfo library inside onnxruntime >= 1.28 (pytorch/cpuinfo, at load
# time) dereferences a null pointer when it finds no ARM processor there: onnxruntime 1.31 and
# 1.32 segfault at import. QEMU >= 8.2 shows the program an emulated arm64 /proc/cpuinfo, and
# they load. A real board has a real /proc/cpuinfo: this is an emulator artifact, not a device one.
#
# Needs root (debootstrap, apt-get) the first time; about 40 s and 120 MB of downloads on this
# kind of machine, then nothing (stamps). The Python wheels for the emulated device are fetched by
# bundle/emulate.py (pip download) into .emu/wheels/.
#
#   scripts/emulators.sh            both
#   scripts/emulators.sh qemu       the emulators only (the AVX2-only check needs nothing else)
set -euo pipefail
cd "$(dirname "$0")/.."
EMU=.emu
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
what=${1:-all}
mkdir -p "$EMU"
EMU=$(cd "$EMU" && pwd)

need_root() {
  if [ "$(id -u)" != "0" ]; then
    echo "!! $1 needs root the first time (apt-get, debootstrap); run: sudo scripts/emulators.sh" >&2
    exit 1
  fi
}

if [[ $what == all || $what == qemu ]] && [ ! -f "$EMU/qemu/.installed" ]; then
  need_root "fetching QEMU"
  echo ">> fetching QEMU user-mode emulators (Debian ${SUITE}-backports qemu-user) into $EMU/qemu"
  rm -rf "$EMU/apt" "$EMU/qemu" && mkdir -p "$EMU/apt/lists/partial" "$EMU/qemu/bin" "$EMU/qemu/deb"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR ${SUITE}-backports main" \
    > "$EMU/apt/sources.list"
  APT=(-o "Dir::Etc::sourcelist=$EMU/apt/sources.list" -o "Dir::Etc::sourceparts=-"
       -o "Dir::State::Lists=$EMU/apt/lists" -o "APT::Sandbox::User=root" -qq)
  apt-get "${APT[@]}" update
  version=$(apt-cache "${APT[@]}" policy qemu-user | awk '/Candidate:/ {print $2}')
  case "$version" in 1:7.*|1:8.0*|1:8.1*|"" ) echo "!! ${SUITE}-backports offers qemu-user '$version'; need >= 8.2" >&2; exit 1;; esac
  (cd "$EMU/qemu/deb" && apt-get "${APT[@]}" download "qemu-user=$version")
  dpkg -x "$EMU"/qemu/deb/qemu-user_*.deb "$EMU/qemu/x"
  cp "$EMU/qemu/x/usr/bin/qemu-aarch64" "$EMU/qemu/x/usr/bin/qemu-x86_64" "$EMU/qemu/bin/"
  rm -rf "$EMU/qemu/x" "$EMU/qemu/deb" "$EMU/apt"
  "$EMU/qemu/bin/qemu-aarch64" --version | head -1 > "$EMU/qemu/.installed"
fi

if [[ $what == all || $what == arm64-root ]] && [ ! -f "$EMU/arm64-root/.installed" ]; then
  need_root "the arm64 root"
  if ! command -v debootstrap >/dev/null 2>&1; then
    echo ">> installing Debian package debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
  fi
  echo ">> building a Debian $SUITE arm64 root with python3 in $EMU/arm64-root (once)"
  rm -rf "$EMU/arm64-root.tmp" && mkdir -p "$EMU/arm64-root.tmp"
  debootstrap --foreign --arch=arm64 --variant=minbase --include=python3 "$SUITE" "$EMU/arm64-root.tmp" "$MIRROR" \
    > "$EMU/debootstrap.log" 2>&1 || { tail -20 "$EMU/debootstrap.log" >&2; exit 1; }
  # --foreign unpacks only the essential packages; unpack every fetched one (python3 too). No
  # maintainer scripts run: the emulated python needs files, not a configured system.
  for deb in "$EMU"/arm64-root.tmp/var/cache/apt/archives/*.deb; do dpkg -x "$deb" "$EMU/arm64-root.tmp"; done
  rm -f "$EMU"/arm64-root.tmp/var/cache/apt/archives/*.deb
  test -x "$EMU/arm64-root.tmp/usr/bin/python3.11"
  # The standard library's bytecode (Debian compiles it in a maintainer script, which did not run):
  # .pyc files are the same on every CPU, so this machine's Python 3.11 writes them natively.
  py311=$(command -v python3.11 || true)
  if .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then py311=.venv/bin/python; fi
  if [ -n "$py311" ]; then "$py311" -m compileall -q -j 0 "$EMU/arm64-root.tmp/usr/lib/python3.11" >/dev/null 2>&1 || true; fi
  rm -rf "$EMU/arm64-root" && mv "$EMU/arm64-root.tmp" "$EMU/arm64-root"
  echo "debian $SUITE arm64, python3.11" > "$EMU/arm64-root/.installed"
fi
