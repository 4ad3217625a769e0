#!/usr/bin/python3
"""Talaria on mininet: one switch, N hosts acting as nodes.

The Switch subclass `TalariaSwitch` runs talaria's software switch
(`switch-agent`), or bmv2's `simple_switch_grpc` where it is installed
(`--target bmv2 --bmv2-dir DIR` with p4c's output), on the mininet switch's
interfaces (P4 port i = the switch's i-th link), and `talaria-controller`
writes its fabric routes over P4Runtime: one /32 per host, with the host's
MAC. The switch answers no ARP, so each host gets static neighbours for the
others (the MAC of the switch port it is cabled to). Host h1 then runs
`talaria-lab load` against `talaria-lab serve` on the other hosts, and the
script prints the load result and exits non-zero if any request failed.

`--switch lxbr` runs the same traffic over a Linux bridge (mininet's
LinuxBridge: the OVS kernel datapath is not available on this kernel).

Run as root with Debian's mininet (its Python module is in the system
interpreter):

    /usr/bin/python3 mininet/talaria_topo.py --hosts 3
    /usr/bin/python3 mininet/talaria_topo.py --switch lxbr
    /usr/bin/python3 mininet/talaria_topo.py --target bmv2 --bmv2-dir bmv2-testbed/build

Node and interface names carry a per-run tag, so a run never touches another
mininet's. Never run `mn -c` on a shared machine: this script removes exactly
what it created (net.stop(), its own processes by PID, its bpffs pins).

When mininet is not installed the script says so and exits 0 (skipped).
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_bin(name):
    """$TALARIA_BIN_DIR, else the newer of the release and debug builds, else PATH."""
    explicit = os.environ.get("TALARIA_BIN_DIR")
    if explicit:
        return os.path.join(explicit, name)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    built = [os.path.join(target, d, name) for d in ("release", "debug")]
    built = [p for p in built if os.path.isfile(p)]
    if built:
        return max(built, key=os.path.getmtime)
    return shutil.which(name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, cond, seconds):
    """Polls cond() every 0.2 s for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise SystemExit("[mininet] timed out waiting for %s" % what)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=3, help="hosts (talaria nodes), 2..50")
    ap.add_argument("--switch", choices=["talaria", "lxbr"], default="talaria")
    ap.add_argument("--target", choices=["switch-agent", "bmv2"], default="switch-agent",
                    help="what the talaria switch runs")
    ap.add_argument("--bmv2-dir", help="p4c output (talaria.json, talaria.p4info.txtpb) for --target bmv2")
    ap.add_argument("--seconds", type=int, default=3, help="seconds of load (1..60)")
    args = ap.parse_args()
    if not 2 <= args.hosts <= 50 or not 1 <= args.seconds <= 60:
        ap.error("--hosts must be 2..50 and --seconds 1..60")

    try:
        from mininet.net import Mininet
        from mininet.node import Switch
        from mininet.nodelib import LinuxBridge
        from mininet.log import setLogLevel, info
    except ImportError:
        print("[mininet] SKIPPED: mininet is not installed (apt-get install mininet; run with /usr/bin/python3)")
        return 0
    if os.geteuid() != 0:
        print("[mininet] run as root")
        return 1
    lab = find_bin("talaria-lab")
    if lab is None:
        print("[mininet] build talaria-lab first: cargo build -p talaria-lab")
        return 1
    if args.switch == "talaria" and args.target == "bmv2":
        if shutil.which("simple_switch_grpc") is None or not args.bmv2_dir:
            print("[mininet] SKIPPED: --target bmv2 needs simple_switch_grpc and --bmv2-dir (p4c output)")
            return 0
    tag = "m%x" % (os.getpid() & 0xFFF)
    work = tempfile.mkdtemp(prefix="talaria-mininet-")

    class TalariaSwitch(Switch):
        """Runs switch-agent (or simple_switch_grpc) on this switch's
        interfaces, and talaria-controller for its routes."""

        def __init__(self, name, **kw):
            Switch.__init__(self, name, **kw)
            self.procs = []
            self.grpc = "127.0.0.1:%d" % free_port()
            self.rest = "127.0.0.1:%d" % free_port()
            self.pins = "/sys/fs/bpf/talaria-mininet-%s" % tag

        def p4_ports(self):
            """(P4 port, interface) of every link, numbered as mininet does."""
            return [(self.ports[intf], intf) for intf in self.intfList() if intf.name != "lo"]

        def start(self, controllers):
            dev_args = []
            for port, intf in self.p4_ports():
                dev_args += ["-i", "%d@%s" % (port, intf.name)]
            if args.target == "bmv2":
                for _, intf in self.p4_ports():
                    self.cmd("ethtool -K %s tx off tso off gso off gro off" % intf.name)
                cmd = ["simple_switch_grpc", "--no-p4"] + dev_args + ["--", "--grpc-server-addr", self.grpc]
            else:
                binary = find_bin("switch-agent")
                if binary is None:
                    raise SystemExit("[mininet] switch-agent not built: cargo build -p talaria-switch")
                cmd = [binary, "--grpc-addr", self.grpc, "--pin-dir", self.pins,
                       "--state-dir", os.path.join(work, "switch-state"), "--no-metrics"] + dev_args
            log = open(os.path.join(work, "switch.log"), "w")
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))

        def start_controller(self, hosts):
            """Writes one /32 route per host and waits until the switch holds them."""
            routes = []
            for port, intf in self.p4_ports():
                peer = intf.link.intf1 if intf.link.intf2 == intf else intf.link.intf2
                host = peer.node
                routes.append({"prefix": "%s/32" % host.IP(), "port": port,
                               "src_mac": intf.MAC(), "dst_mac": peer.MAC()})
            manifests = os.path.join(work, "manifests")
            os.makedirs(manifests, exist_ok=True)
            cfg = {
                "source": {"kind": "files", "dir": manifests, "poll_ms": 200},
                "switches": [{"id": self.name, "address": "http://%s" % self.grpc, "device_id": 1}],
                "fabric": {"switch_addrs": [], "routes": routes},
                "listen": self.rest,
            }
            p4info = os.path.join(REPO, "p4", "talaria.p4info.txtpb")
            if args.target == "bmv2":
                cfg["device_config"] = os.path.join(args.bmv2_dir, "talaria.json")
                p4info = os.path.join(args.bmv2_dir, "talaria.p4info.txtpb")
            path = os.path.join(work, "controller.json")  # JSON is YAML
            with open(path, "w") as f:
                json.dump(cfg, f)
            binary = find_bin("talaria-controller")
            if binary is None:
                raise SystemExit("[mininet] talaria-controller not built: cargo build -p talaria-controller")
            log = open(os.path.join(work, "controller.log"), "w")
            self.procs.append(subprocess.Popen([binary, "--config", path, "--p4info", p4info],
                                               stdout=log, stderr=subprocess.STDOUT))
            ctl = find_bin("talariactl")

            def routes_in():
                out = subprocess.run([ctl, "--server", "http://%s" % self.rest, "tables", "dump",
                                      "--table", "ipv4_route", "-o", "json"],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    return False
                dumps = json.loads(out.stdout).get(self.name, [])
                return sum(d.get("count", 0) for d in dumps) >= len(routes)

            wait_until("the switch's routes (see %s)" % work, routes_in, 60)
            # Hosts resolve each other to the switch port they are cabled to.
            for port, intf in self.p4_ports():
                peer = intf.link.intf1 if intf.link.intf2 == intf else intf.link.intf2
                for _, other in self.p4_ports():
                    other_peer = other.link.intf1 if other.link.intf2 == other else other.link.intf2
                    if other_peer.node is not peer.node:
                        peer.node.cmd("ip neigh replace %s lladdr %s dev %s nud permanent"
                                      % (other_peer.node.IP(), intf.MAC(), peer.name))

        def stop(self, deleteIntfs=True):
            for p in reversed(self.procs):
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            self.procs = []
            shutil.rmtree(self.pins, ignore_errors=True)
            Switch.stop(self, deleteIntfs)

    setLogLevel("warning")
    switch_cls = TalariaSwitch if args.switch == "talaria" else LinuxBridge
    net = Mininet(switch=switch_cls, controller=None, autoSetMacs=False, build=False)
    servers = []
    result = None
    ok = False
    try:
        s1 = net.addSwitch("%ss1" % tag, dpid="1")
        hosts = []
        for i in range(args.hosts):
            h = net.addHost("%sh%d" % (tag, i + 1), ip="10.0.0.%d/24" % (i + 1))
            net.addLink(h, s1)
            hosts.append(h)
        net.build()
        net.start()
        if args.switch == "talaria":
            s1.start_controller(hosts)
        for h in hosts[1:]:
            servers.append(h.popen([lab, "serve", "--name", h.name, "--max-seconds", "120"]))
        wait_until("the servers", lambda: all(
            ":8080 " in h.cmd("ss -Hltn sport = :8080") for h in hosts[1:]), 20)
        targets = ",".join("%s:8080" % h.IP() for h in hosts[1:])
        info("*** load from %s to %s\n" % (hosts[0].name, targets))
        out = hosts[0].cmd("%s load --proto http-short --target %s --duration-ms %d"
                           % (lab, targets, args.seconds * 1000))
        result = json.loads(out[out.index("{"):])
        print(json.dumps({"switch": args.switch if args.switch == "lxbr" else args.target, **result}))
    finally:
        for p in servers:
            p.terminate()
            p.wait(timeout=5)
        net.stop()
        ok = result is not None and result.get("requests", 0) > 0 and result.get("errors", 1) == 0
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("[mininet] FAILED: %s; logs kept in %s" % (result, work))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
