#!/bin/bash
# Undoes up.sh, in the same network namespace: stops what it started (by PID), removes pod
# sandboxes, mounts, cgroups, iptables chains (KUBE-*, BEDSIDE-*), the route and the bridge.
# Usage: nsenter --net=/run/netns/NS down.sh DIR
set -u
dir=$(cd "${1:?state dir}" && pwd) || exit 1
cd "$dir"
stop() {   # a PID file: TERM, then KILL after 10 s
  [ -f "$1.pid" ] || return 0
  local p; p=$(cat "$1.pid")
  if kill -0 "$p" 2>/dev/null; then
    kill "$p"; for i in $(seq 1 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p"
  fi
  rm -f "$1.pid"
}
alive() { [ -f "$1.pid" ] && kill -0 "$(cat "$1.pid")" 2>/dev/null; }

# Gracefully first: the kubelet tears pods down (CNI DEL, unmounts) while the API is up.
if alive kas && alive kubelet; then
  export KUBECONFIG=$dir/kubeconfig
  kubectl delete deploy,rs,ds,sts,job --all -A --wait=false >/dev/null 2>&1
  kubectl delete pods --all -A --grace-period=1 --wait=false >/dev/null 2>&1
  for i in $(seq 1 60); do
    [ -z "$(kubectl get pods -A -o name 2>/dev/null)" ] && [ -z "$(ctr -n k8s.io tasks ls -q 2>/dev/null)" ] && break
    sleep 1
  done
fi
for p in proxy kubelet sched kcm kas; do stop $p; done
# Then by force: whatever containers remain, and their shims.
for t in $(ctr -n k8s.io tasks ls -q 2>/dev/null); do ctr -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
sleep 1
for t in $(ctr -n k8s.io tasks ls -q 2>/dev/null); do ctr -n k8s.io tasks delete -f "$t" >/dev/null 2>&1; done
for c in $(ctr -n k8s.io containers ls -q 2>/dev/null); do ctr -n k8s.io containers delete "$c" >/dev/null 2>&1; done
stop containerd
for b in /run/containerd/io.containerd.runtime.v2.task/k8s.io/*/; do
  [ -d "$b" ] || continue; id=$(basename "$b")
  for p in /proc/[0-9]*; do
    tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q "containerd-shim-runc-v2 -namespace k8s.io -id $id " && kill -9 "${p#/proc/}" 2>/dev/null
  done
done
stop etcd
grep -E " ($dir|/run/containerd|/run/netns/cni-)" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
for n in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do ip netns del "$n"; done
for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
  [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
done
for t in filter nat mangle; do
  iptables -t $t -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j (KUBE-|BEDSIDE-)' | grep -vE '^-A (KUBE-|BEDSIDE-)' | sed 's/^-A/-D/' | \
    while read -r r; do eval iptables -t $t $r; done
  for c in $(iptables -t $t -S 2>/dev/null | awk '/^-N (KUBE-|BEDSIDE-)/{print $2}'); do iptables -t $t -F "$c"; done
  for c in $(iptables -t $t -S 2>/dev/null | awk '/^-N (KUBE-|BEDSIDE-)/{print $2}'); do iptables -t $t -X "$c"; done
done
ip route del 10.96.0.0/24 dev kbr0 2>/dev/null
ip link del kbr0 2>/dev/null
[ -f sysctl-before.conf ] && sysctl -q -p sysctl-before.conf 2>/dev/null; rm -f sysctl-before.conf
rm -rf /var/log/pods/* /var/log/containers/* "$dir/etcd" "$dir/containerd" "$dir/kubelet" "$dir/cni/ipam" /run/containerd 2>/dev/null
echo "down: $dir"
