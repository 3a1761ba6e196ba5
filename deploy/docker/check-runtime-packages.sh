#!/bin/bash
# check-runtime-packages.sh LIST BINARY...
# Fails when a shared library that BINARY links directly (ELF NEEDED) comes from a Debian package
# that LIST (deploy/docker/runtime-packages.txt) does not name, so the runtime image cannot miss a
# library the build picked up. libc6 is in every Debian base image and needs no entry.
# Listed packages no binary needs are reported, not fatal (a library may be linked by code that is
# still being written). Runs in the image's build stage and in scripts/check-deploy.sh.
set -euo pipefail
list=$1
shift
mapfile -t wanted < <(grep -v -e '^#' -e '^[[:space:]]*$' "$list")
declare -A listed=()
for p in "${wanted[@]}"; do listed[$p]=1; done
# Bookworm is usr-merged but dpkg records some files under /lib and others under /usr/lib:
# ask for the path as linked, as resolved, and in its other spelling.
owner() {
  local real
  real=$(readlink -f "$1")
  for candidate in "$1" "$real" "${real#/usr}" "/usr${1}"; do
    dpkg -S "$candidate" 2>/dev/null | head -n1 | cut -d: -f1 && return 0
  done
  return 0
}
declare -A used=()
missing=0
for bin in "$@"; do
  [ -x "$bin" ] || { echo "check-runtime-packages: $bin is not an executable" >&2; exit 2; }
  mapfile -t needed < <(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  resolved=$(ldd "$bin")
  for soname in "${needed[@]}"; do
    path=$(awk -v s="$soname" '$1 == s && $2 == "=>" {print $3}' <<<"$resolved" | head -n1)
    if [ -z "$path" ] || [ "$path" = "not" ]; then
      echo "check-runtime-packages: $bin: $soname does not resolve" >&2
      missing=1
      continue
    fi
    pkg=$(owner "$path")
    if [ -z "$pkg" ]; then
      echo "check-runtime-packages: $bin: no Debian package owns $path ($soname)" >&2
      missing=1
      continue
    fi
    used[$pkg]=1
    if [ "$pkg" != "libc6" ] && [ -z "${listed[$pkg]:-}" ]; then
      echo "check-runtime-packages: $bin needs $soname from $pkg: add $pkg to $list" >&2
      missing=1
    fi
  done
done
for p in "${wanted[@]}"; do
  [ -n "${used[$p]:-}" ] || echo "check-runtime-packages: note: $p is listed but no binary links it"
done
if [ "$missing" -ne 0 ]; then exit 1; fi
echo "check-runtime-packages: every library of $* is covered by $list"
