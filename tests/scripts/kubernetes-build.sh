# Sourced by the scripts that run Kubernetes: installs Debian packages and builds Kubernetes
# binaries from Debian's `kubernetes` source package (Debian ships no server binaries).
#
#   apt_install PACKAGE...               install what is missing
#   kubernetes_build CACHE_DIR TARGET... build `make WHAT=TARGET...` and copy the binaries (and
#                                        the pause container's binary) into CACHE_DIR
kubernetes_version=1.20.2

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # A failed maintainer script (seen once with etcd-server) is finished by a second pass.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { apt-get update -qq && dpkg --configure -a \
      && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
}

kubernetes_build() {
  local cache="$1"
  shift
  apt_install golang-1.19-go golang-github-modern-go-reflect2-dev rsync dpkg-dev ca-certificates gcc libc6-dev
  local work
  work="$(mktemp -d)"
  # A deb-src list derived from the machine's own apt sources, used for this download only.
  mkdir -p "$work/apt/lists/partial" "$work/apt/sources.list.d"
  local src
  for src in /etc/apt/sources.list.d/*.sources; do
    [ -f "$src" ] || continue
    sed 's/^Types:.*/Types: deb-src/' "$src" > "$work/apt/sources.list.d/$(basename "$src")"
  done
  if [ -f /etc/apt/sources.list ]; then
    sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > "$work/apt/sources.list"
  else
    : > "$work/apt/sources.list"
  fi
  local opts=(-o "Dir::Etc::SourceList=$work/apt/sources.list"
    -o "Dir::Etc::SourceParts=$work/apt/sources.list.d"
    -o "Dir::State::Lists=$work/apt/lists" -o APT::Sandbox::User=root)
  apt-get "${opts[@]}" update -qq
  (cd "$work" && apt-get "${opts[@]}" source --download-only -qq kubernetes >/dev/null)
  # Debian names it 1.20.5+really1.20.2: the tree is the upstream release below.
  ls "$work"/kubernetes_*really"$kubernetes_version"*.dsc >/dev/null
  (cd "$work" && dpkg-source --no-check -x kubernetes_*.dsc tree >/dev/null)
  # reflect2 1.0.1 (vendored) panics on Go >= 1.18; Debian's packaged copy is fixed.
  rm -rf "$work/tree/vendor/github.com/modern-go/reflect2"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$work/tree/vendor/github.com/modern-go/reflect2"
  rm -f "$work/tree/vendor/github.com/modern-go/reflect2/go.mod"
  # The tree has no .git: the version the binaries report comes from this file.
  printf "KUBE_GIT_VERSION='v%s'\nKUBE_GIT_MAJOR='1'\nKUBE_GIT_MINOR='20'\nKUBE_GIT_TREE_STATE='clean'\n" \
    "$kubernetes_version" > "$work/version.env"
  (cd "$work/tree" && PATH=/usr/lib/go-1.19/bin:$PATH CGO_ENABLED=0 GOPROXY=off \
    KUBE_GIT_VERSION_FILE="$work/version.env" make WHAT="$*" >"$work/build.log" 2>&1) \
    || { tail -n 30 "$work/build.log" >&2; return 1; }
  gcc -Os -static -DVERSION=v3.2 -o "$work/tree/_output/bin/pause" "$work/tree/build/pause/linux/pause.c"
  mkdir -p "$cache"
  local name
  for name in pause "${@##*/}"; do
    cp "$work/tree/_output/bin/$name" "$cache/$name.partial"
    mv "$cache/$name.partial" "$cache/$name"
  done
  rm -rf "$work"
}
