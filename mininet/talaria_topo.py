#!/usr/bin/env python3
"""Talaria on mininet: one switch, N hosts acting as nodes.

The Switch subclass runs talaria's software switch (`switch-agent`), or bmv2's
`simple_switch_grpc` where it is installed (`--target bmv2`), on the mininet
switch's interfaces. Each mininet host is a talaria node: it gets an uplink
address, a pod-like address and the lab's HTTP/UDP echo server
(`talaria-lab serve`); host h1 then runs `talaria-lab load` against the others.

Run as root with Debian's mininet:

    python3 mininet/talaria_topo.py --hosts 3 --switch lxbr
    python3 mininet/talaria_topo.py --target bmv2

`--switch lxbr` (a Linux bridge, no OVS kernel datapath, which this kernel
lacks) runs the plain-L3 baseline; `--switch talaria` uses the Switch
subclass below. Never run `mn -c` on shared machines: this script cleans up
only what it created (net.stop()).

When mininet is not installed the script says so and exits 0 (skipped).
"""

import argparse
import os
import shutil
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_bin(name):
    for d in ("target/release", "target/debug"):
        p = os.path.join(REPO, d, name)
        if os.path.isfile(p):
            return p
    return shutil.which(name)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=3, help="hosts (talaria nodes)")
    ap.add_argument("--switch", choices=["lxbr", "talaria"], default="lxbr")
    ap.add_argument("--target", choices=["switch-agent", "bmv2"], default="switch-agent",
                    help="what the talaria Switch subclass runs")
    ap.add_argument("--seconds", type=int, default=3)
    args = ap.parse_args()

    try:
        from mininet.net import Mininet
        from mininet.node import Switch
        from mininet.nodelib import LinuxBridge
        from mininet.log import setLogLevel, info
    except ImportError:
        print("[mininet] SKIPPED: mininet is not installed (apt-get install mininet)")
        return 0
    if os.geteuid() != 0:
        print("[mininet] run as root")
        return 1
    lab = find_bin("talaria-lab")
    if lab is None:
        print("[mininet] build talaria-lab first: cargo build --release -p talaria-lab")
        return 1

    class TalariaSwitch(Switch):
        """Runs switch-agent (or simple_switch_grpc) on this switch's interfaces."""

        def __init__(self, name, target="switch-agent", grpc_port=9559, **kw):
            Switch.__init__(self, name, **kw)
            self.target = target
            self.grpc_port = grpc_port
            self.proc = None

        def start(self, controllers):
            ports = []
            for i, intf in enumerate(self.intfList()):
                if intf.name == "lo":
                    continue
                ports += ["-i", "%d@%s" % (i, intf.name)]
                self.cmd("ethtool -K %s tso off gso off gro off tx off" % intf.name)
            if self.target == "bmv2":
                binary = shutil.which("simple_switch_grpc")
                if binary is None:
                    raise SystemExit("[mininet] SKIPPED: simple_switch_grpc is not installed")
                cmd = [binary, "--no-p4"] + ports + ["--", "--grpc-server-addr", "127.0.0.1:%d" % self.grpc_port]
            else:
                binary = find_bin("switch-agent")
                if binary is None:
                    raise SystemExit("[mininet] switch-agent not built: cargo build --release -p talaria-switch")
                cmd = [binary, "--grpc-addr", "127.0.0.1:%d" % self.grpc_port] + ports
            self.proc = self.popen(cmd)

        def stop(self, deleteIntfs=True):
            if self.proc is not None:
                self.proc.terminate()
                self.proc.wait(timeout=5)
            Switch.stop(self, deleteIntfs)

    setLogLevel("info")
    if args.switch == "talaria":
        switch_cls = lambda name, **kw: TalariaSwitch(name, target=args.target, **kw)  # noqa: E731
    else:
        switch_cls = LinuxBridge
    net = Mininet(switch=switch_cls, controller=None, autoSetMacs=True)
    try:
        s1 = net.addSwitch("s1")
        hosts = []
        for i in range(args.hosts):
            h = net.addHost("h%d" % (i + 1), ip="10.0.0.%d/24" % (i + 1))
            net.addLink(h, s1)
            hosts.append(h)
        net.start()
        servers = []
        for h in hosts[1:]:
            servers.append(h.popen([lab, "serve", "--name", h.name, "--max-seconds", "120"]))
        import time
        time.sleep(1)
        targets = ",".join("%s:8080" % h.IP() for h in hosts[1:])
        info("*** load from h1 to %s\n" % targets)
        out = hosts[0].cmd("%s load --proto http-short --target %s --duration-ms %d" % (lab, targets, args.seconds * 1000))
        print(out)
        for p in servers:
            p.terminate()
            p.wait(timeout=5)
    finally:
        net.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
