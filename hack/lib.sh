# Shared helpers for the hack/build-*.sh scripts (sourced, not run).
#
# They fetch an upstream module through the Go module proxy (`go mod
# download`, checked against the checksum database like any dependency) and
# copy it into a temporary scratch directory, because the module cache is
# read-only and some builds need a small edit first. The copy goes away after
# the build: with -trimpath the Go build cache does not care where the source
# was, so a rebuild of an unchanged version is a cache hit all the same, and
# no upstream source ever sits in our work tree.

export PATH=/usr/local/go/bin:$PATH
# The copy is its own main module: never let a go.work or our own go.mod in.
export GOWORK=off
# The go command builds in readonly mode, so upstream's go.sum pins every
# dependency. The copy is no checkout of upstream's repository: no VCS stamp.
export GOFLAGS="-buildvcs=false"

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# A scratch directory removed when the script exits, whatever the outcome.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/overlaylab-build.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# module_dir MODULE VERSION: prints the module's directory in the module cache,
# downloading it first when needed.
module_dir() {
  local mod=$1 ver=$2 json dir
  # Outside any module, so no go.mod or go.sum of ours is touched.
  json=$(cd "$scratch" && go mod download -json "$mod@$ver") ||
    die "go mod download $mod@$ver failed: $(printf '%s' "$json" | grep '"Error"')"
  dir=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] && [ -d "$dir" ] || die "go mod download $mod@$ver gave no directory"
  echo "$dir"
}

# scratch_copy MODULE VERSION DEST: a fresh writable copy of the module at DEST.
scratch_copy() {
  local src
  src=$(module_dir "$1" "$2")
  rm -rf "$3"
  mkdir -p "$(dirname "$3")"
  cp -r "$src" "$3"
  chmod -R u+w "$3"
  # A module zip keeps only vendor/modules.txt, none of the vendored code;
  # left there, it would make go (>= 1.14 modules) build from an empty vendor/.
  rm -rf "$3/vendor"
}
