#!/usr/bin/python3
"""Talaria on mininet: one switch, N hosts acting as nodes.

The switch is a mininet Switch subclass that runs a P4Runtime software
switch on the mininet switch's interfaces (P4 port i = the switch's i-th
link) and lets `talaria-controller` program it: one /32 route per host,
with the host's MAC.

  --switch switch-agent  talaria's eBPF switch (`talaria` is the old name).
  --switch bmv2          bmv2's `simple_switch_grpc`, started with no
                         program, as the p4lang tutorials' P4RuntimeSwitch
                         does; the controller pushes p4c's build of
                         p4/talaria.p4 (compiled here with the p4c it finds,
                         or taken from --bmv2-dir) before it writes the
                         routes. Offloads are off on both ends of every link:
                         bmv2 reads and writes raw frames through libpcap.
  --switch lxbr          mininet's LinuxBridge, the same traffic with no
                         talaria at all (the OVS kernel datapath is not
                         available on this kernel).

The switch answers no ARP, so each host gets static neighbours for the
others (the MAC of the switch port it is cabled to). Host h1 then runs
`talaria-lab load` against `talaria-lab serve` on the other hosts, and the
script prints the load result as one JSON line and exits non-zero if any
request failed.

p4c and simple_switch_grpc are found the way talaria_preflight finds them:
$TALARIA_P4_TOOLCHAIN, $P4_TOOLCHAIN (toolchain folders with bin/ and lib/),
shared/p4-toolchain beside the repository, then PATH.

Run as root with Debian's mininet (its Python module is in the system
interpreter):

    /usr/bin/python3 mininet/talaria_topo.py --hosts 3
    /usr/bin/python3 mininet/talaria_topo.py --switch bmv2
    /usr/bin/python3 mininet/talaria_topo.py --switch lxbr

Node and interface names carry a per-run tag, so a run never touches another
mininet's. Never run `mn -c` on a shared machine: this script removes exactly
what it created (net.stop(), its own processes by PID, its bpffs pins).

When mininet (or, for bmv2, the P4 toolchain) is missing the script says so
and exits 0 (skipped), except under CI=true, where it exits 1.
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
# The P4Runtime device id; the controller's config names the same one.
DEVICE_ID = 1


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


class P4Toolchain:
    """p4c and simple_switch_grpc, with the environment a relocatable
    toolchain folder needs (its bin/ on PATH, lib/ on LD_LIBRARY_PATH)."""

    def __init__(self, p4c, simple_switch_grpc, folder=None):
        self.p4c = p4c
        self.simple_switch_grpc = simple_switch_grpc
        self.env = dict(os.environ)
        if folder:
            for var, sub in (("PATH", "bin"), ("LD_LIBRARY_PATH", "lib")):
                old = self.env.get(var)
                self.env[var] = os.path.join(folder, sub) + (":" + old if old else "")

    @staticmethod
    def in_folder(folder):
        folder = os.path.realpath(folder)
        p4c, ssg = (os.path.join(folder, "bin", b) for b in ("p4c", "simple_switch_grpc"))
        for b in (p4c, ssg):
            if not os.access(b, os.X_OK):
                raise LookupError("%s is missing" % b)
        return P4Toolchain(p4c, ssg, folder)

    @staticmethod
    def find():
        """Looks in the same places, in the same order, as talaria_preflight,
        and checks that both binaries start (their shared libraries)."""
        t = P4Toolchain._locate()
        for b in (t.p4c, t.simple_switch_grpc):
            r = subprocess.run([b, "--version"], env=t.env, capture_output=True, text=True)
            if r.returncode != 0:
                raise LookupError("%s --version failed: %s (scripts/setup.sh installs the "
                                  "toolchain's runtime packages)" % (b, r.stderr.strip()))
        return t

    @staticmethod
    def _locate():
        for var in ("TALARIA_P4_TOOLCHAIN", "P4_TOOLCHAIN"):
            if os.environ.get(var):
                try:
                    return P4Toolchain.in_folder(os.environ[var])
                except LookupError as e:
                    raise LookupError("$%s: %s" % (var, e))
        beside = os.path.join(os.path.dirname(REPO), "shared", "p4-toolchain")
        try:
            return P4Toolchain.in_folder(beside)
        except LookupError:
            pass
        p4c, ssg = shutil.which("p4c"), shutil.which("simple_switch_grpc")
        if p4c and ssg:
            return P4Toolchain(p4c, ssg)
        missing = [n for n, p in (("p4c", p4c), ("simple_switch_grpc", ssg)) if not p]
        raise LookupError("not installed: %s (no toolchain folder in $TALARIA_P4_TOOLCHAIN, "
                          "$P4_TOOLCHAIN or %s)" % (" and ".join(missing), beside))

    def compile(self, out):
        """p4c's bmv2 build of p4/talaria.p4 into out: (json, p4info)."""
        json_path = os.path.join(out, "talaria.json")
        p4info = os.path.join(out, "talaria.p4info.txtpb")
        r = subprocess.run([self.p4c, "--target", "bmv2", "--arch", "v1model",
                            "--p4runtime-files", p4info, "-o", out,
                            os.path.join(REPO, "p4", "talaria.p4")],
                           env=self.env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit("[mininet] p4c failed:\n%s" % r.stderr)
        return json_path, p4info


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


def under_ci():
    return os.environ.get("CI", "") not in ("", "0", "false")


def skip(why):
    """A missing precondition: skipped (exit 0), or failed under CI."""
    if under_ci():
        print("[mininet] FAILED: CI=true and a precondition is missing: %s" % why)
        return 1
    print("[mininet] SKIPPED: %s" % why)
    return 0


def peer_of(intf):
    """The interface at the other end of intf's link."""
    return intf.link.intf1 if intf.link.intf2 == intf else intf.link.intf2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=3, help="hosts (talaria nodes), 2..50")
    ap.add_argument("--switch", choices=["switch-agent", "talaria", "bmv2", "lxbr"], default="switch-agent")
    ap.add_argument("--bmv2-dir", help="your own p4c output (talaria.json, talaria.p4info.txtpb) "
                    "for --switch bmv2, instead of compiling p4/talaria.p4 here")
    ap.add_argument("--seconds", type=int, default=3, help="seconds of load (1..60)")
    args = ap.parse_args()
    if not 2 <= args.hosts <= 50 or not 1 <= args.seconds <= 60:
        ap.error("--hosts must be 2..50 and --seconds 1..60")
    kind = "switch-agent" if args.switch == "talaria" else args.switch

    try:
        from mininet.net import Mininet
        from mininet.node import Switch
        from mininet.nodelib import LinuxBridge
        from mininet.log import setLogLevel, info
    except ImportError:
        return skip("mininet is not installed (apt-get install mininet; run with /usr/bin/python3)")
    if os.geteuid() != 0:
        print("[mininet] run as root")
        return 1
    lab = find_bin("talaria-lab")
    if lab is None:
        print("[mininet] build talaria-lab first: cargo build -p talaria-lab")
        return 1
    toolchain = None
    if kind == "bmv2":
        try:
            toolchain = P4Toolchain.find()
        except LookupError as e:
            if not args.bmv2_dir or shutil.which("simple_switch_grpc") is None:
                return skip("--switch bmv2 needs p4c and simple_switch_grpc: %s" % e)
            toolchain = P4Toolchain(None, shutil.which("simple_switch_grpc"))
    tag = "m%x" % (os.getpid() & 0xFFF)
    work = tempfile.mkdtemp(prefix="talaria-mininet-")

    class P4RuntimeSwitch(Switch):
        """A software switch with a P4Runtime server on this mininet
        switch's interfaces, and talaria-controller for its routes.
        Subclasses say what runs (`command`)."""

        # P4Info and device config the controller pushes (None: the
        # switch has its pipeline already).
        p4info = os.path.join(REPO, "p4", "talaria.p4info.txtpb")
        device_config = None

        def __init__(self, name, **kw):
            Switch.__init__(self, name, **kw)
            self.procs = []
            self.grpc = "127.0.0.1:%d" % free_port()
            self.rest = "127.0.0.1:%d" % free_port()

        def p4_ports(self):
            """(P4 port, interface) of every link, numbered as mininet does."""
            return [(self.ports[intf], intf) for intf in self.intfList() if intf.name != "lo"]

        def command(self):
            raise NotImplementedError

        def start(self, controllers):
            cmd, env = self.command()
            log = open(os.path.join(work, "switch.log"), "w")
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))

        def start_controller(self):
            """Writes one /32 route per host and waits until the switch holds them."""
            routes = []
            for port, intf in self.p4_ports():
                peer = peer_of(intf)
                routes.append({"prefix": "%s/32" % peer.node.IP(), "port": port,
                               "src_mac": intf.MAC(), "dst_mac": peer.MAC()})
            manifests = os.path.join(work, "manifests")
            os.makedirs(manifests, exist_ok=True)
            cfg = {
                "source": {"kind": "files", "dir": manifests, "poll_ms": 200},
                "switches": [{"id": self.name, "address": "http://%s" % self.grpc, "device_id": DEVICE_ID}],
                "fabric": {"switch_addrs": [], "routes": routes},
                "listen": self.rest,
            }
            if self.device_config:
                cfg["device_config"] = self.device_config
            path = os.path.join(work, "controller.json")  # JSON is YAML
            with open(path, "w") as f:
                json.dump(cfg, f)
            binary = find_bin("talaria-controller")
            if binary is None:
                raise SystemExit("[mininet] talaria-controller not built: cargo build -p talaria-controller")
            log = open(os.path.join(work, "controller.log"), "w")
            self.procs.append(subprocess.Popen([binary, "--config", path, "--p4info", self.p4info],
                                               stdout=log, stderr=subprocess.STDOUT))
            ctl = find_bin("talariactl")

            def routes_in():
                out = subprocess.run([ctl, "--server", "http://%s" % self.rest, "tables", "dump",
                                      "--table", "ipv4_route", "-o", "json"],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    return False
                dumps = json.loads(out.stdout).get(self.name, [])
                return sum(len(d.get("entries", [])) for d in dumps) >= len(routes)

            wait_until("the switch's routes (see %s)" % work, routes_in, 60)
            # Hosts resolve each other to the switch port they are cabled to.
            for _, intf in self.p4_ports():
                peer = peer_of(intf)
                for _, other in self.p4_ports():
                    other_peer = peer_of(other)
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
            Switch.stop(self, deleteIntfs)

    class SwitchAgentSwitch(P4RuntimeSwitch):
        """switch-agent, which loads the talaria pipeline itself."""

        def __init__(self, name, **kw):
            P4RuntimeSwitch.__init__(self, name, **kw)
            self.pins = "/sys/fs/bpf/talaria-mininet-%s" % tag

        def command(self):
            binary = find_bin("switch-agent")
            if binary is None:
                raise SystemExit("[mininet] switch-agent not built: cargo build -p talaria-switch")
            cmd = [binary, "--grpc-addr", self.grpc, "--pin-dir", self.pins,
                   "--state-dir", os.path.join(work, "switch-state"), "--no-metrics"]
            for port, intf in self.p4_ports():
                cmd += ["-i", "%d@%s" % (port, intf.name)]
            return cmd, None

        def stop(self, deleteIntfs=True):
            P4RuntimeSwitch.stop(self, deleteIntfs)
            shutil.rmtree(self.pins, ignore_errors=True)

    class Bmv2Switch(P4RuntimeSwitch):
        """bmv2's simple_switch_grpc, started with no program on the
        switch's interfaces; the controller pushes the pipeline."""

        def __init__(self, name, **kw):
            P4RuntimeSwitch.__init__(self, name, **kw)
            if args.bmv2_dir:
                d = os.path.abspath(args.bmv2_dir)
                self.device_config = os.path.join(d, "talaria.json")
                self.p4info = os.path.join(d, "talaria.p4info.txtpb")
                for f in (self.device_config, self.p4info):
                    if not os.path.isfile(f):
                        raise SystemExit("[mininet] %s missing (p4c output for p4/talaria.p4)" % f)
            else:
                self.device_config, self.p4info = toolchain.compile(work)

        def command(self):
            # bmv2 completes no offloaded checksum and does not segment: every
            # frame on these links must leave its sender finished.
            for _, intf in self.p4_ports():
                for end in (intf, peer_of(intf)):
                    end.node.cmd("ethtool -K %s tx off rx off tso off gso off gro off" % end.name)
            cmd = [toolchain.simple_switch_grpc, "--no-p4", "--device-id", str(DEVICE_ID),
                   # Its own nanomsg socket: the default is shared by every
                   # bmv2 on the machine with this device id.
                   "--notifications-addr", "ipc://%s" % os.path.join(work, "bmv2-notifications.ipc")]
            for port, intf in self.p4_ports():
                cmd += ["-i", "%d@%s" % (port, intf.name)]
            cmd += ["--", "--grpc-server-addr", self.grpc]
            return cmd, toolchain.env

    setLogLevel("warning")
    switch_cls = {"switch-agent": SwitchAgentSwitch, "bmv2": Bmv2Switch, "lxbr": LinuxBridge}[kind]
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
        if kind != "lxbr":
            s1.start_controller()
        for h in hosts[1:]:
            servers.append(h.popen([lab, "serve", "--name", h.name, "--max-seconds", "120"]))
        wait_until("the servers", lambda: all(
            ":8080 " in h.cmd("ss -Hltn sport = :8080") for h in hosts[1:]), 20)
        targets = ",".join("%s:8080" % h.IP() for h in hosts[1:])
        info("*** load from %s to %s\n" % (hosts[0].name, targets))
        out = hosts[0].cmd("%s load --proto http-short --target %s --duration-ms %d"
                           % (lab, targets, args.seconds * 1000))
        result = json.loads(out[out.index("{"):])
        print(json.dumps({"switch": kind, **result}))
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
