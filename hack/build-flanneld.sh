#!/usr/bin/env bash
# Build upstream flanneld from its Go module, as upstream's release does.
#
#   hack/build-flanneld.sh VERSION OUT
#
# VERSION is a flannel release tag (e.g. v0.28.10), OUT the binary to write. The
# tencentvpc backend is left out: it imports the Tencent Cloud SDK module,
# which the module proxy does not serve; its import in main.go is the only
# reference, so deleting that one line drops the backend and the SDK.
#
# cgo is required: flanneld's udp backend forwards packets in C
# (pkg/backend/udp/proxy_amd64.c), and with CGO_ENABLED=0 that backend does
# not compile. The binary is linked statically like upstream's release
# (-extldflags -static); netgo and osusergo keep glibc's NSS out of it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -eq 2 ] || die "usage: $0 VERSION OUT"
ver=$1
out=$(realpath -m "$2")
mod=github.com/flannel-io/flannel

scratch_copy "$mod" "$ver" "$scratch/flannel"
cd "$scratch/flannel"

tencent='"github.com/flannel-io/flannel/pkg/backend/tencentvpc"'
[ "$(grep -c "$tencent" main.go)" = 1 ] || die "$mod@$ver: expected one tencentvpc import in main.go"
sed -i "\|$tencent|d" main.go
# The SDK must leave the module graph too, or the go command would still
# fetch its go.mod to load the graph.
for req in $(sed -n 's/^[[:space:]]*\(github.com\/tencentcloud\/[^ ]*\) .*/\1/p' go.mod); do
  go mod edit -droprequire "$req"
done

command -v "${CC:-gcc}" >/dev/null || die "needs a C compiler (${CC:-gcc}) for flanneld's udp backend: apt-get install gcc libc6-dev"
CGO_ENABLED=1 go build -trimpath -tags netgo,osusergo -o "$out" \
  -ldflags "-s -w -X $mod/pkg/version.Version=$ver -extldflags -static" .

# flanneld prints its version on stderr.
got=$("$out" --version 2>&1)
[ "$got" = "$ver" ] || die "built $out, but it says its version is '$got', not $ver"
echo "built $out: flanneld $ver (static, without the tencentvpc backend)"
