"""Drives switch-agent with p4runtime-shell (the p4runtime_sh package that
`python -m p4runtime_sh` runs), the way a user would script it: connect as
primary, push the talaria pipeline, insert, read, modify, delete entries and
provoke a write error. Prints one `OK <step>` line per step; any failure
raises and exits non-zero.

usage: python p4runtime_shell_interop.py ADDR P4INFO_TXTPB DEVICE_CONFIG
"""
import sys

import p4runtime_sh.shell as sh
from p4runtime_sh.p4runtime import P4RuntimeWriteException

addr, p4info, device_config = sys.argv[1:4]

sh.setup(device_id=1, grpc_addr=addr, election_id=(0, 1),
         config=sh.FwdPipeConfig(p4info, device_config), verbose=False)
print("OK connected and pushed the pipeline", flush=True)

print("OK api version", sh.client.api_version(), flush=True)


def backend(bid, ip):
    te = sh.TableEntry("TalariaIngress.backend")(action="TalariaIngress.set_backend")
    te.match["backend_id"] = str(bid)
    te.action["backend_ip"] = ip
    te.action["backend_port"] = "8080"
    te.action["node_ip"] = "192.168.0.1"
    return te


backend(7, "10.1.0.7").insert()
backend(8, "10.1.0.8").insert()
route = sh.TableEntry("TalariaIngress.ipv4_route")(action="TalariaIngress.forward")
route.match["dst_addr"] = "10.0.0.0/8"
route.action["port"] = "1"
route.action["src_mac"] = "02:00:00:00:00:01"
route.action["dst_mac"] = "02:00:00:00:00:02"
route.insert()
print("OK inserted 3 entries", flush=True)

got = {}
for te in sh.TableEntry("TalariaIngress.backend").read():
    got[int.from_bytes(te.match["backend_id"].exact.value, "big")] = te
assert sorted(got) == [7, 8], got
assert got[7].action["backend_ip"].value == bytes([10, 1, 0, 7]), got[7]
routes = list(sh.TableEntry("TalariaIngress.ipv4_route").read())
assert len(routes) == 1 and routes[0].match["dst_addr"].lpm.prefix_len == 8, routes
print("OK read back", len(got), "backends and", len(routes), "route", flush=True)

m = backend(7, "10.1.0.77")
m.modify()
after = [t for t in sh.TableEntry("TalariaIngress.backend").read()
         if int.from_bytes(t.match["backend_id"].exact.value, "big") == 7]
assert after[0].action["backend_ip"].value == bytes([10, 1, 0, 77]), after
print("OK modified", flush=True)

try:
    backend(8, "10.1.0.8").insert()
    raise SystemExit("duplicate insert succeeded")
except P4RuntimeWriteException as e:
    codes = [err.canonical_code for _, err in e.errors]
    assert codes == [6], codes  # ALREADY_EXISTS
    print("OK duplicate insert -> ALREADY_EXISTS:", str(e).strip().splitlines()[-1].strip(), flush=True)

backend(7, "0.0.0.0").delete()
backend(8, "0.0.0.0").delete()
route.delete()
left = list(sh.TableEntry("TalariaIngress.backend").read()) + list(sh.TableEntry("TalariaIngress.ipv4_route").read())
assert left == [], left
print("OK deleted everything", flush=True)

sh.teardown()
print("OK done", flush=True)
