#!/bin/bash
# A single-node Kubernetes v1.20.2 that runs pods, for bedside's cluster suites: etcd,
# kube-apiserver, controller-manager, scheduler, containerd (CRI), kubelet, kube-proxy (iptables)
# and a CNI bridge. Everything listens on loopback or on the bridge kbr0 this script creates, in
# the network namespace it is run in (never the host's: see the check below).
#
# Usage: nsenter --net=/run/netns/NS up.sh DIR   (down.sh DIR, in the same namespace, undoes it)
# Env:   BIN  a folder with kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy
#        (tests/src/pods.rs fills it from the prebuilt testbed or a source build)
# Needs: containerd runc containernetworking-plugins etcd-server iptables conntrack gcc libc6-dev
# Prints the kubeconfig's path on success. Use nsenter, not `ip netns exec`: that remounts /sys
# and the kubelet then finds no cgroup mounts.
set -eu
export AWS_EC2_METADATA_DISABLED=true   # else kubelet 1.20 dials the cloud metadata address
dir=$(mkdir -p "${1:?state dir}" && cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
: "${BIN:?BIN must name the folder with the Kubernetes binaries}"

# Only lo, our bridge and pod veths may exist here: anything else means the host's namespace.
foreign=$(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -vE '^(lo|kbr0|veth.*)$' || true)
if [ -n "$foreign" ]; then
  echo "up.sh: this network namespace has other interfaces ($(echo $foreign)); run me in a new one" >&2; exit 1
fi

POD_CIDR=10.244.0.0/24; CLUSTER_CIDR=10.244.0.0/16; NODE_IP=10.244.0.1; SVC_CIDR=10.96.0.0/24
# Where the tests play a cloud's load balancers (tests/src/pods.rs, play_the_cloud): pods reach
# them as they would through a real cluster's default route (a relay pod sends to media pods' IPs).
LB_CIDR=10.99.0.0/24
BR=kbr0; NODE=bedside-node
mkdir -p "$dir"/{bin,certs,logs,cni/net.d,cni/ipam,kubelet,containerd/root,certs.d/_default,images}
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  [ -x "$dir/bin/$b" ] || install -m 0755 "$BIN/$b" "$dir/bin/$b"
done
for p in containerd runc etcd iptables conntrack ctr gcc; do
  command -v $p >/dev/null || { echo "up.sh: missing $p (scripts/test-deps.sh installs it)" >&2; exit 1; }
done
[ -x /usr/lib/cni/bridge ] || { echo "up.sh: missing containernetworking-plugins" >&2; exit 1; }
cd "$dir"

# --- network: our bridge; service VIPs routed onto it; nothing of ours leaves any other interface
ip link show $BR >/dev/null 2>&1 || { ip link add $BR type bridge; ip addr add $NODE_IP/24 dev $BR; }
ip link set $BR up
ip route replace $SVC_CIDR dev $BR src $NODE_IP
iptables -t mangle -N BEDSIDE-GUARD 2>/dev/null || iptables -t mangle -F BEDSIDE-GUARD
iptables -t mangle -A BEDSIDE-GUARD -d 169.254.0.0/16 -j DROP
iptables -t mangle -A BEDSIDE-GUARD -o lo -j RETURN
iptables -t mangle -A BEDSIDE-GUARD -o $BR -j RETURN
iptables -t mangle -A BEDSIDE-GUARD -s $CLUSTER_CIDR -j DROP
iptables -t mangle -A BEDSIDE-GUARD -d $CLUSTER_CIDR -j DROP
iptables -t mangle -A BEDSIDE-GUARD -d $SVC_CIDR -j DROP
iptables -t mangle -C POSTROUTING -j BEDSIDE-GUARD 2>/dev/null || iptables -t mangle -I POSTROUTING -j BEDSIDE-GUARD
iptables -t mangle -N BEDSIDE-FWD-GUARD 2>/dev/null || iptables -t mangle -F BEDSIDE-FWD-GUARD
iptables -t mangle -A BEDSIDE-FWD-GUARD -o $BR -j RETURN
iptables -t mangle -A BEDSIDE-FWD-GUARD -j DROP   # forward nothing except onto the bridge
iptables -t mangle -C FORWARD -j BEDSIDE-FWD-GUARD 2>/dev/null || iptables -t mangle -I FORWARD -j BEDSIDE-FWD-GUARD
# The kubelet and kube-proxy change these kernel settings: remember them for down.sh.
[ -f sysctl-before.conf ] || sysctl net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.ipv4.conf.all.route_localnet \
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes \
  > sysctl-before.conf 2>/dev/null || true
modprobe br_netfilter 2>/dev/null || true
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
echo "nameserver 127.0.0.1" > resolv.conf   # pods' DNS stays on their own loopback

# --- control plane
[ -f sa.key ] || { openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null; }
tok=$(openssl rand -hex 16); echo "$tok,admin,admin,system:masters" > tokens.csv
rm -rf etcd
etcd --data-dir ./etcd --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster default=http://127.0.0.1:2380 > logs/etcd.log 2>&1 & echo $! > etcd.pid
# On every address of this namespace, advertised on the bridge: pods reach it as the
# `kubernetes` Service, so an operator can run in a pod.
./bin/kube-apiserver --etcd-servers=http://127.0.0.1:2379 --bind-address=0.0.0.0 --advertise-address=$NODE_IP \
  --secure-port=6443 --cert-dir=./certs --token-auth-file=./tokens.csv --authorization-mode=RBAC \
  --service-account-issuer=https://kubernetes.default.svc --service-account-key-file=./sa.pub \
  --service-account-signing-key-file=./sa.key --service-cluster-ip-range=$SVC_CIDR \
  --service-node-port-range=30000-32767 --enable-priority-and-fairness=false \
  --kubelet-preferred-address-types=InternalIP --allow-privileged=true \
  --feature-gates=MixedProtocolLBService=true > logs/kas.log 2>&1 & echo $! > kas.pid
cat > kubeconfig <<KC
apiVersion: v1
kind: Config
clusters: [{name: t, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: a, user: {token: $tok}}]
contexts: [{name: t, context: {cluster: t, user: a}}]
current-context: t
KC
for i in $(seq 1 120); do
  [ "$(curl -sk -H "Authorization: Bearer $tok" https://127.0.0.1:6443/readyz 2>/dev/null)" = ok ] && break; sleep 0.5
done
# nodelifecycle must run: it lifts the node's not-ready taint.
./bin/kube-controller-manager --kubeconfig=./kubeconfig --bind-address=127.0.0.1 --secure-port=10257 --port=0 \
  --leader-elect=false --service-account-private-key-file=./sa.key --root-ca-file=./certs/apiserver.crt \
  --controllers='*,-nodeipam,-cloud-node-lifecycle,-service,-route' > logs/kcm.log 2>&1 & echo $! > kcm.pid
./bin/kube-scheduler --kubeconfig=./kubeconfig --bind-address=127.0.0.1 --secure-port=10259 --port=0 \
  --leader-elect=false > logs/sched.log 2>&1 & echo $! > sched.pid

# --- containerd: images are imported offline; every registry is a closed loopback port
cat > certs.d/_default/hosts.toml <<'H'
server = "http://127.0.0.1:9"
[host."http://127.0.0.1:9"]
  capabilities = ["pull", "resolve"]
H
cat > containerd.toml <<T
version = 2
root = "$dir/containerd/root"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:3.2"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # root here lacks CAP_SYS_RESOURCE: runc cannot set a negative oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$dir/certs.d"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
T
cat > cni/net.d/10-bedside.conflist <<C
{"cniVersion": "0.4.0", "name": "bedside", "plugins": [{
  "type": "bridge", "bridge": "$BR", "isGateway": true, "ipMasq": false, "hairpinMode": true,
  "ipam": {"type": "host-local", "dataDir": "$dir/cni/ipam",
           "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]], "routes": [{"dst": "$SVC_CIDR"}, {"dst": "$LB_CIDR"}]}}]}
C
mkdir -p /run/containerd
containerd --config "$dir/containerd.toml" > logs/containerd.log 2>&1 & echo $! > containerd.pid
for i in $(seq 1 40); do ctr version >/dev/null 2>&1 && break; sleep 0.25; done
# The sandbox ("pause") image: a static C program, built here.
if [ ! -f images/pause.tar ]; then
  printf '%s\n' '#include <signal.h>' '#include <stdlib.h>' '#include <unistd.h>' \
    'static void down(int s) { (void)s; exit(0); }' \
    'int main(void) { signal(SIGINT, down); signal(SIGTERM, down); for (;;) pause(); }' > images/pause.c
  gcc -Os -static -o images/pause images/pause.c && strip images/pause
  python3 "$here/../mkimage.py" images/pause.tar localhost/pause:3.2 --file images/pause:/pause \
    --entrypoint '["/pause"]' --user 65535:65535 >/dev/null
fi
ctr -n k8s.io images import images/pause.tar >/dev/null

# --- kubelet and kube-proxy
cat > kubelet.yaml <<K
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
failSwapOn: false
resolvConf: $dir/resolv.conf
clusterDomain: cluster.local
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
serializeImagePulls: false
oomScoreAdj: 0
K
./bin/kubelet --config=kubelet.yaml --kubeconfig=./kubeconfig --root-dir="$dir/kubelet" --cert-dir="$dir/kubelet/pki" \
  --container-runtime=remote --container-runtime-endpoint=unix:///run/containerd/containerd.sock \
  --runtime-request-timeout=5m --node-ip=$NODE_IP --hostname-override=$NODE \
  --pod-infra-container-image=localhost/pause:3.2 --v=1 > logs/kubelet.log 2>&1 & echo $! > kubelet.pid
./bin/kube-proxy --kubeconfig=./kubeconfig --proxy-mode=iptables --hostname-override=$NODE --bind-address=$NODE_IP \
  --cluster-cidr=$CLUSTER_CIDR --nodeport-addresses=127.0.0.0/8,$NODE_IP/32 \
  --healthz-bind-address=127.0.0.1:10256 --metrics-bind-address=127.0.0.1:10249 \
  --oom-score-adj=0 --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
  > logs/proxy.log 2>&1 & echo $! > proxy.pid

export KUBECONFIG=$dir/kubeconfig
for i in $(seq 1 120); do
  kubectl get node $NODE -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True && break; sleep 1
done
kubectl get node $NODE -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -q True \
  || { echo "up.sh: the node did not become Ready; see $dir/logs/kubelet.log" >&2; exit 1; }
echo "$dir/kubeconfig"
