#!/usr/bin/env bash
# Fetch Triton's perf_analyzer (PyPI package `perf-analyzer`) into bench/work/perf_analyzer/ and write a launcher,
# bench/work/perf_analyzer/perf_analyzer, that runs it on this machine.
#
# The PyPI wheels are tagged manylinux_2_38 (glibc >= 2.38, libstdc++ from GCC >= 13), so pip refuses them on older
# systems such as Debian 12 (glibc 2.36). There the binary is fetched anyway and run with the C runtime of Debian 13
# (libc6, libstdc++6, libgcc-s1, fetched with apt-get into bench/work, never installed) through that runtime's own
# dynamic loader; the system's libssl and zlib are used as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${PERF_ANALYZER_VERSION:-2.60.0}"
DEST=bench/work/perf_analyzer
PYTHON="${PYTHON:-python3}"
mkdir -p "$DEST"

wheel=$(ls "$DEST"/perf_analyzer-"$VERSION"-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --platform "manylinux_2_38_$(uname -m)" \
    -d "$DEST" "perf-analyzer==$VERSION"
  wheel=$(ls "$DEST"/perf_analyzer-"$VERSION"-*.whl | head -1)
fi
"$PYTHON" -m zipfile -e "$wheel" "$DEST/wheel"
binary="$(pwd)/$DEST/wheel/perf_analyzer/bin/perf_analyzer"
chmod +x "$binary"

launcher="$DEST/perf_analyzer"
if "$binary" --version >/dev/null 2>&1; then
  printf '#!/bin/sh\nexec "%s" "$@"\n' "$binary" >"$launcher"
else
  echo "perf_analyzer needs a newer C runtime than this system's; fetching Debian 13's into $DEST/runtime" >&2
  apt_dir="$(pwd)/$DEST/apt"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs" "$DEST/runtime"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    >"$apt_dir/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
            -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o "APT::Sandbox::User=root")
  apt-get "${apt_opts[@]}" -qq update
  (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download libc6 libstdc++6 libgcc-s1)
  for deb in "$apt_dir"/debs/*.deb; do dpkg-deb -x "$deb" "$DEST/runtime"; done
  lib="$(pwd)/$DEST/runtime/usr/lib/$(uname -m)-linux-gnu"
  loader=$(ls "$lib"/ld-linux*.so.* | head -1)
  printf '#!/bin/sh\nexec "%s" --library-path "%s:/lib/%s-linux-gnu:/usr/lib/%s-linux-gnu" "%s" "$@"\n' \
    "$loader" "$lib" "$(uname -m)" "$(uname -m)" "$binary" >"$launcher"
fi
chmod +x "$launcher"
"$launcher" --version
echo "perf_analyzer ready: $launcher"
