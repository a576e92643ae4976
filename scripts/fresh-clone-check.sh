#!/usr/bin/env bash
# The newcomer's path, timed: clone main into a temporary folder, run the README's first command
# (`make serve`) there on a free port, wait for /readyz, run `edgestack v2-check` against it, print
# the wall time and each model's variant, then stop the server (its whole process group) and
# remove the clone. Exit 0 only if the server became ready, every default model serves int8,
# the v2-check matrix passed and the playground page, the API docs and abcjs are served.
#
#   bash scripts/fresh-clone-check.sh          (LIMIT_S=2400 by default; KEEP=1 keeps the clone)
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
limit=${LIMIT_S:-2400}
work=$(mktemp -d /tmp/edgestack-fresh-XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
pid=""

stop() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "clone kept: $work"; else rm -rf "$work"; fi
}
trap stop EXIT

echo ">> cloning $(git -C "$repo" rev-parse --short main) of $repo into $work"
git clone --quiet --branch main "$repo" "$work/edgestack" || exit 1
cd "$work/edgestack"
echo ">> make serve PORT=$port (log: $work/make-serve.log); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)," \
     "$(nproc) cores, VNNI: $(grep -q -m1 -E 'avx512_vnni|avx_vnni' /proc/cpuinfo && echo yes || echo no)"
started=$(date +%s)
setsid make serve PORT="$port" > "$work/make-serve.log" 2>&1 &
pid=$!
while ! curl -sf "$url/readyz" > /dev/null 2>&1; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "!! make serve ended before the server was ready; its last lines:"; tail -30 "$work/make-serve.log"; exit 1
  fi
  if [ $(( $(date +%s) - started )) -gt "$limit" ]; then
    echo "!! not ready after ${limit}s; last lines:"; tail -30 "$work/make-serve.log"; exit 1
  fi
  sleep 5
done
ready=$(( $(date +%s) - started ))
echo ">> /readyz answered after ${ready}s ($(( ready / 60 )) min $(( ready % 60 )) s)"
echo ">> build summary:"; sed -n '/^model  *status/,/^$/p' "$work/make-serve.log"
status=0
.venv/bin/edgestack v2-check --url "$url" --artifacts artifacts || status=1
echo ">> served variants:"
curl -sf -X POST "$url/models" -H 'content-type: application/json' -d '{}' | .venv/bin/python -c '
import json, sys
from edgestack.registry import DEFAULT_MODELS
models = {m["name"]: m for m in json.load(sys.stdin)["models"]}
for name in DEFAULT_MODELS:
    m = models.get(name)
    if m is None:
        print(f"   {name:24s} NOT SERVED")
        continue
    version, variant, provider = m["version"], m["variant"], m["provider"]
    warnings = "".join("  WARNING: " + w for w in m.get("warnings", []))
    print(f"   {name:24s} v{version} {variant} on {provider}{warnings}")
sys.exit(0 if all(models.get(n, {}).get("variant") == "int8" for n in DEFAULT_MODELS) else 1)
' || status=1
for page in "/ edgestack playground" "/docs edgestack API" "/playground/abcjs-LICENSE.md Permission"; do
  set -- $page
  if curl -sf "$url$1" | grep -q "$2"; then echo ">> GET $1: served"; else echo "!! GET $1: not served"; status=1; fi
done
echo ">> first make serve to ready: ${ready}s; v2-check, int8 everywhere and the playground: $([ $status = 0 ] && echo pass || echo FAIL)"
exit $status
