#!/usr/bin/env bash
# Build the CNI plugins the lab's cni runtime runs, from their Go modules.
#
#   hack/build-cni-plugins.sh FLANNEL_PLUGIN_VERSION PLUGINS_VERSION OUTDIR
#
# The flannel meta-plugin comes from containernetworking/plugins at
# FLANNEL_PLUGIN_VERSION (v0.9.1 is the last release that has
# plugins/meta/flannel); bridge, host-local and loopback from PLUGINS_VERSION.
# Static binaries (CGO_ENABLED=0), versioned like upstream's release, written
# to OUTDIR.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -eq 3 ] || die "usage: $0 FLANNEL_PLUGIN_VERSION PLUGINS_VERSION OUTDIR"
flannel_ver=$1
plugins_ver=$2
outdir=$(realpath -m "$3")
mod=github.com/containernetworking/plugins

# build VERSION PLUGIN_DIR...: builds each plugin of mod@VERSION into outdir.
build() {
  local ver=$1 dir=$scratch/cni-plugins-$1 p
  shift
  scratch_copy "$mod" "$ver" "$dir"
  for p in "$@"; do
    (cd "$dir" && CGO_ENABLED=0 go build -trimpath -o "$outdir/$(basename "$p")" \
      -ldflags "-s -w -X $mod/pkg/utils/buildversion.BuildVersion=$ver" "./$p") ||
      die "build $p from $mod@$ver failed"
  done
}

mkdir -p "$outdir"
build "$flannel_ver" plugins/meta/flannel
build "$plugins_ver" plugins/main/bridge plugins/ipam/host-local plugins/main/loopback

# Every plugin answers VERSION with the spec versions it supports; a binary
# that cannot is no plugin.
for p in flannel bridge host-local loopback; do
  echo '{"cniVersion":"0.4.0"}' | CNI_COMMAND=VERSION "$outdir/$p" >/dev/null ||
    die "$outdir/$p does not answer CNI VERSION"
done
echo "built $outdir: flannel ($mod@$flannel_ver); bridge, host-local, loopback ($mod@$plugins_ver)"
