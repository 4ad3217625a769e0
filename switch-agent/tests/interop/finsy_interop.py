"""Drives switch-agent with finsy (PyPI), the way a finsy controller would:
connect and arbitrate, push the talaria pipeline, then insert, read back,
modify and delete entries, and decode write errors from the per-update
details. Prints one `OK <step>` line per step; any failure raises and exits
non-zero.

usage: python finsy_interop.py ADDR P4INFO_TXTPB DEVICE_CONFIG
"""
import asyncio
import ipaddress
import sys
from pathlib import Path

import finsy as fy

addr, p4info, device_config = sys.argv[1:4]

BACKEND = "TalariaIngress.backend"
ROUTE = "TalariaIngress.ipv4_route"


def backend(bid, ip):
    return fy.P4TableEntry(
        BACKEND,
        match=fy.Match(backend_id=bid),
        action=fy.Action(
            "TalariaIngress.set_backend",
            backend_ip=ip,
            backend_port=8080,
            node_ip="192.168.0.1",
        ),
    )


ROUTE_ENTRY = fy.P4TableEntry(
    ROUTE,
    match=fy.Match(dst_addr="10.0.0.0/8"),
    action=fy.Action(
        "TalariaIngress.forward",
        port=1,
        src_mac="02:00:00:00:00:01",
        dst_mac="02:00:00:00:00:02",
    ),
)


async def read(sw, table):
    return [e async for e in sw.read(fy.P4TableEntry(table))]


def ip(s):
    return int(ipaddress.IPv4Address(s))


async def backends(sw):
    """backend_id -> backend_ip as an integer (finsy decodes untyped
    bit<32> values to integers and formats match keys in hex)."""
    got = {}
    for e in await read(sw, BACKEND):
        bid = e.match_dict(sw.p4info)["backend_id"]
        assert e.action.name in ("set_backend", "TalariaIngress.set_backend"), e
        assert e.action.args["backend_port"] == 8080, e
        assert e.action.args["node_ip"] == ip("192.168.0.1"), e
        got[int(bid, 0)] = e.action.args["backend_ip"]
    return got


def check_write_error(ex, want):
    """`ex` is a failed Write whose per-update details are exactly `want`
    ({update index: canonical code}), as P4Runtime requires."""
    assert ex.code == fy.GRPCStatusCode.UNKNOWN, ex.code
    got = {i: err.canonical_code for i, err in ex.details.items()}
    assert got == want, (got, str(ex))


async def main():
    opts = fy.SwitchOptions(p4info=Path(p4info), p4blob=Path(device_config))
    async with fy.Switch("talaria", addr, opts) as sw:
        assert sw.is_primary, "not primary"
        print("OK connected as primary and pushed the pipeline", flush=True)

        # One WriteRequest with three updates.
        await sw.insert([backend(7, "10.1.0.7"), backend(8, "10.1.0.8"), ROUTE_ENTRY])
        print("OK inserted 3 entries in one write", flush=True)

        got = await backends(sw)
        assert sorted(got) == [7, 8], got
        assert got[7] == ip("10.1.0.7") and got[8] == ip("10.1.0.8"), got
        routes = await read(sw, ROUTE)
        assert len(routes) == 1, routes
        value, plen = routes[0].match_dict(sw.p4info)["dst_addr"].split("/")
        assert (int(value, 0), int(plen)) == (ip("10.0.0.0"), 8), routes
        assert routes[0].action.args == {
            "port": 1,
            "src_mac": 0x020000000001,
            "dst_mac": 0x020000000002,
        }, routes[0]
        print("OK read back", len(got), "backends and", len(routes), "route", flush=True)

        await sw.modify([backend(7, "10.1.0.77")])
        got = await backends(sw)
        assert got[7] == ip("10.1.0.77") and got[8] == ip("10.1.0.8"), got
        print("OK modified", flush=True)

        # CONTINUE_ON_ERROR: update 0 (new) lands, update 1 (duplicate)
        # fails alone with ALREADY_EXISTS in its own detail.
        try:
            await sw.insert([backend(9, "10.1.0.9"), backend(8, "10.1.0.8")])
            raise SystemExit("duplicate insert succeeded")
        except fy.P4ClientError as ex:
            check_write_error(ex, {1: fy.GRPCStatusCode.ALREADY_EXISTS})
            print("OK duplicate insert -> ALREADY_EXISTS:", ex.details[1].message, flush=True)
        assert sorted(await backends(sw)) == [7, 8, 9]
        print("OK the other update of that batch was applied", flush=True)

        try:
            await sw.modify([backend(99, "10.1.0.99")])
            raise SystemExit("modify of a missing entry succeeded")
        except fy.P4ClientError as ex:
            check_write_error(ex, {0: fy.GRPCStatusCode.NOT_FOUND})
            print("OK modify of a missing entry -> NOT_FOUND", flush=True)

        await sw.delete([backend(7, "0.0.0.0")])
        assert sorted(await backends(sw)) == [8, 9]
        print("OK deleted one entry", flush=True)

        # A wildcard read of every table, then one DELETE per entry.
        await sw.delete_many([fy.P4TableEntry()])
        left = await read(sw, BACKEND) + await read(sw, ROUTE)
        assert left == [], left
        print("OK deleted everything", flush=True)
    print("OK done", flush=True)


asyncio.run(main())
