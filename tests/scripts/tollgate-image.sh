#!/usr/bin/env bash
# tollgate's image without Docker or a registry: the release binary and the libraries it links,
# packed as a docker-archive tar that `ctr images import` (or `docker load`) reads. Equivalent to
# deploy/Dockerfile's image, which users build: same binary path and entrypoint, same user,
# same port (a test holds the two equal).
#
#   tollgate-image.sh BINARY REF OUT.tar
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
binary="${1:?release tollgate binary}" ref="${2:?image reference}" out="${3:?output tar}"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp"
cp "$binary" "$root/usr/local/bin/tollgate"
# glibc and libgcc, as in distroless/cc: whatever the binary links, from this machine.
for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"
python3 "$here/image-tar.py" "$root" "$ref" "$out" --entrypoint '["/usr/local/bin/tollgate"]' \
  --user 65532:65532 --expose 9102/tcp
