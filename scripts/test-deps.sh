#!/usr/bin/env bash
# Installs what bedside's tests need on Debian/Ubuntu, skipping whatever is already there.
set -euo pipefail

if ! command -v cargo >/dev/null; then
  echo "error: cargo not found. Install Rust with rustup (https://rustup.rs); rust-toolchain.toml pins the version." >&2
  exit 1
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi

# etcd-server: the real control plane's store; xz-utils: unpacks the cached kube-apiserver;
# gcc/make: aws-lc-sys builds its C part; chromium + chromium-driver: the real browsers of the
# media tests; iproute2: the loopback-only network namespaces they run in; python3-pip: aiortc;
# prometheus: the real server that scrapes a node, and promtool for the alert rules;
# rsyslog + rsyslog-gnutls: the real syslog-over-TLS audit sink; containerd, runc, the CNI
# plugins, iptables, conntrack, curl, openssl and libc6-dev (a static pause image): the
# single-node cluster that runs pods (tests/src/pods.rs); coturn: the TURN relay (TURN over TLS on 443);
# janus: the peer SFU the load generator is checked against (media_rust_peers.rs).
packages=(etcd-server xz-utils gcc make ca-certificates chromium chromium-driver iproute2 python3-pip prometheus rsyslog rsyslog-gnutls
  containerd runc containernetworking-plugins iptables conntrack curl openssl libc6-dev util-linux coturn janus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "test-deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# kubectl drives the `kubectl get/explain` checks; Debian ships it as kubernetes-client.
if ! command -v kubectl >/dev/null; then
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends kubernetes-client \
    || echo "test-deps: no kubectl package here; the kubectl checks will be skipped with a message"
fi

# aiortc: a second, independent WebRTC stack (Python) for interop tests; helm-python-sdk: the
# Helm 4 engine that lints and renders the chart; kubernetes-validate: schemas of 1.25-1.37;
# fhir.resources: the FHIR R5/R4B models that validate `visit create -o fhir`;
# openapi-spec-validator: checks the visits API's committed OpenAPI document.
for module in aiortc:aiortc helm_python:helm-python-sdk kubernetes_validate:kubernetes-validate fhir.resources:fhir.resources openapi_spec_validator:openapi-spec-validator; do
  if ! python3 -c "import ${module%%:*}" >/dev/null 2>&1; then
    echo "test-deps: installing ${module#*:}"
    python3 -m pip install -q "${module#*:}" 2>/dev/null \
      || python3 -m pip install -q --break-system-packages "${module#*:}"
  fi
done

# axe-core: the accessibility checker the browser tests run inside Chromium (WCAG 2.1 AA);
# into target/npm, beside the build, never committed.
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ ! -f $root/target/npm/node_modules/axe-core/axe.min.js ]]; then
  if ! command -v npm >/dev/null; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends npm
  fi
  echo "test-deps: installing axe-core (npm)"
  mkdir -p "$root/target/npm"
  npm install --silent --no-audit --no-fund --prefix "$root/target/npm" axe-core@4
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test-deps: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done
