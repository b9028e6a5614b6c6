#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager v1.20.2 from Debian's `kubernetes` source
# package (the recipe in TESTBED.md) into CACHE/bin. Used by the test harness only when no
# prebuilt copy is available; about 11 minutes on 2 cores and 2.1 GB of disk.
set -euo pipefail
cache=${1:?usage: build-kube-testbed.sh CACHE_DIR}
mkdir -p "$cache/bin"
exec 9>"$cache/.build.lock"
flock 9   # concurrent test processes wait for one build
if [[ -x $cache/bin/kube-apiserver && -x $cache/bin/kube-controller-manager ]]; then exit 0; fi

if ! command -v go >/dev/null || [[ ! -d /usr/share/gocode/src/github.com/modern-go/reflect2 ]]; then
  apt-get install -y --no-install-recommends golang-go rsync golang-github-modern-go-reflect2-dev
fi
work="$cache/src"
mkdir -p "$work/aptsrc/lists/partial"
cd "$work"
echo 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main' > aptsrc/sources.list
apto=(-o "Dir::Etc::SourceList=$PWD/aptsrc/sources.list" -o Dir::Etc::SourceParts=/nonexistent
      -o "Dir::State::Lists=$PWD/aptsrc/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
apt-get "${apto[@]}" update
apt-get "${apto[@]}" source --download-only kubernetes
tar xzf kubernetes_1.20.5+really1.20.2.orig.tar.gz
cd kubernetes-1.20.2
# The vendored reflect2 v1.0.1 crashes the server under Go >= 1.18 the first time a custom
# resource is watched; Debian's v1.0.2 does not.
rm -rf vendor/github.com/modern-go/reflect2 && mkdir vendor/github.com/modern-go/reflect2
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go /usr/share/gocode/src/github.com/modern-go/reflect2/*.s vendor/github.com/modern-go/reflect2/
rm -f vendor/github.com/modern-go/reflect2/*_test.go
mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
# The pod-running cluster (tests/src/pods.rs) also needs the scheduler, kubelet and proxy.
for what in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  # kubelet is built with cgo upstream (it links glibc only); the rest are static.
  cgo=0; [ "$what" = kubelet ] && cgo=1
  GOPATH=$PWD/.go CGO_ENABLED=$cgo GOFLAGS=-mod=vendor make WHAT=cmd/$what
  install -m 0755 _output/bin/$what "$cache/bin/$what"
done
