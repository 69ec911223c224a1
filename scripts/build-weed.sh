#!/usr/bin/env bash
# build-weed.sh - build SeaweedFS's `weed` (its S3 gateway is the real S3
# server of `make test-seaweedfs`) once, into ~/.cache/dimg-s3test/weed.
# `go install module@version` refuses SeaweedFS (its go.mod has replace
# directives), so the module is fetched through the module proxy and built
# from a copy. It takes minutes and a few GiB of module cache: `make test`
# never runs it.
set -euo pipefail
VERSION=${WEED_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}
out="${XDG_CACHE_HOME:-$HOME/.cache}/dimg-s3test"
bin="$out/weed"
if [ -x "$bin" ] && [ "$(cat "$out/weed.version" 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi
mkdir -p "$out"
dir=$(go mod download -json "github.com/seaweedfs/seaweedfs@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] || { echo "build-weed: could not download github.com/seaweedfs/seaweedfs@$VERSION" >&2; exit 1; }
src=$(mktemp -d "$out/src.XXXXXX")
trap 'rm -rf "$src"' EXIT
cp -r "$dir/." "$src"
chmod -R u+w "$src"
echo "build-weed: building weed $VERSION (several minutes)..." >&2
(cd "$src" && go build -o "$bin.tmp" ./weed)
mv "$bin.tmp" "$bin"
echo "$VERSION" > "$out/weed.version"
