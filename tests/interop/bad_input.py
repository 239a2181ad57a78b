#!/usr/bin/python3
"""bad_input.py SOCKET EXPORT IMAGE

Hostile and broken clients, one after another, while a well-behaved client
keeps reading and writing. Afterwards (the server stopped by the caller, who
then runs `bad_input.py --check IMAGE STATEFILE`) the disk must hold exactly
the acknowledged writes. IMAGE starts as 16 MiB of zeroes; the good client
owns [0, 8 MiB), the raw clients [8 MiB, 16 MiB)."""
import json
import os
import struct
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdraw import *  # noqa: E402,F403

MiB = 1 << 20
failures = []
acked = {}  # raw clients' acknowledged writes: offset -> bytes


def scenario(fn):
    try:
        fn()
        print(f"ok   {fn.__name__}")
    except Exception as e:
        failures.append(fn.__name__)
        print(f"FAIL {fn.__name__}: {e!r}")
        traceback.print_exc(limit=2)
    return fn


def main(sock, export):
    good = GoodClient(sock, export, 0, 8 * MiB)
    good.start()
    served_size = None

    def fresh():
        return Raw(sock)

    @scenario
    def garbage_magic():
        r = fresh()
        r.greeting()
        r.client_flags()
        r.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not IHAVEOPT
        assert r.wait_closed(5), "connection not closed after garbage option magic"

    @scenario
    def garbage_instead_of_handshake():
        r = fresh()
        r.send(os.urandom(64))
        assert r.wait_closed(5), "connection not closed after random bytes"

    @scenario
    def truncated_handshake():
        r = fresh()
        r.start()
        r.send(struct.pack(">QI", IHAVEOPT, OPT_GO))  # 12 of 16 header bytes
        r.close()
        r = fresh()
        r.start()
        r.send(struct.pack(">QII", IHAVEOPT, OPT_GO, 100) + b"\0\0\0\x10ab")  # payload cut
        r.close()
        r = fresh()
        r.greeting()
        r.close()  # a port probe

    @scenario
    def huge_option_dropped():
        r = fresh()
        r.start()
        r.send(struct.pack(">QII", IHAVEOPT, OPT_INFO, 64 * MiB))
        r.try_send(bytes(65536))
        assert r.wait_closed(5), "64 MiB option length did not drop the connection"

    @scenario
    def big_option_too_big():
        r = fresh()
        r.start()
        r.option(OPT_INFO, bytes(2 * MiB))
        opt, rtype, _ = r.option_reply()
        assert opt == OPT_INFO and rtype == REP_ERR_TOO_BIG, f"reply {rtype:#x}, want NBD_REP_ERR_TOO_BIG"
        size, _ = r.go(export)  # the payload was drained: still in sync
        assert size == 16 * MiB

    @scenario
    def unknown_options():
        nonlocal served_size
        r = fresh()
        r.start()
        for opt, data in ((0xDEAD, b"some payload"), (4, b""), (0x7FFFFFFF, bytes(1000))):
            r.option(opt, data)
            o, rtype, _ = r.option_reply()
            assert o == opt and rtype == REP_ERR_UNSUP, f"option {opt:#x}: reply {rtype:#x}, want ERR_UNSUP"
        served_size, _ = r.go(export)
        err, data = r.read(0, 4096)
        assert err == 0 and len(data) == 4096, f"read after GO: error {err}"

    def ready():
        r = fresh()
        r.connect_export(export)
        return r

    @scenario
    def unknown_command():
        r = ready()
        c = r.request(99, 0, 4096)
        err, cookie, _ = r.simple_reply()
        assert cookie == c and err == EINVAL, f"unknown command: error {err}, want EINVAL"
        err, _ = r.read(8 * MiB, 512)
        assert err == 0, "not in sync after unknown command"

    @scenario
    def unknown_flags():
        r = ready()
        c = r.request(CMD_READ, 8 * MiB, 512, flags=1 << 9)
        err, cookie, _ = r.simple_reply()
        assert cookie == c and err == EINVAL, f"READ with flag 1<<9: error {err}, want EINVAL"
        c = r.request(CMD_FLUSH, 0, 0, flags=1 << 12)
        err, cookie, _ = r.simple_reply()
        assert cookie == c and err == EINVAL, f"FLUSH with flag 1<<12: error {err}, want EINVAL"
        # A write with a bad flag: its payload must be consumed, stream stays in sync.
        c = r.request(CMD_WRITE, 8 * MiB, 4096, flags=1 << 9, payload=b"\xee" * 4096)
        err, cookie, _ = r.simple_reply()
        assert cookie == c and err == EINVAL, f"WRITE with flag 1<<9: error {err}, want EINVAL"
        err, data = r.read(8 * MiB, 4096)
        assert err == 0 and data == bytes(4096), "refused write changed data or desynced"

    @scenario
    def out_of_range():
        r = ready()
        size = 16 * MiB
        err, _ = r.read(size - 512, 1024)
        assert err == EINVAL, f"read across the end: error {err}, want EINVAL"
        err, _ = r.read(size, 512)
        assert err == EINVAL, f"read at the end: error {err}, want EINVAL"
        err, _ = r.read((1 << 63) - 1, 512)
        assert err == EINVAL, f"read at 2^63: error {err}, want EINVAL"
        err = r.write(size - 1024, b"\xab" * 4096)
        assert err == ENOSPC, f"write across the end: error {err}, want ENOSPC"
        err = r.write((1 << 64) - 4096, b"\xab" * 8192)  # offset+length wraps
        assert err in (ENOSPC, EINVAL), f"wrapping write: error {err}"
        data = os.urandom(4096)
        assert r.write(9 * MiB, data) == 0, "good write after errors failed"
        acked[9 * MiB] = data
        err, got = r.read(size - 1024, 1024)
        assert err == 0 and got == bytes(1024), "refused write touched the last KiB"

    @scenario
    def oversized_write_dropped():
        r = ready()
        r.request(CMD_WRITE, 8 * MiB, 64 * MiB)  # header only, announces 64 MiB
        r.try_send(b"\xcd" * MiB)  # the server may have dropped us already
        assert r.wait_closed(5), "write of 64 MiB did not drop the connection"

    @scenario
    def vanish_mid_payload():
        r = ready()
        r.request(CMD_WRITE, 10 * MiB, MiB)
        r.send(b"\x77" * (300 * 1024))
        r.close()
        time.sleep(0.3)
        r = ready()
        err, data = r.read(10 * MiB, MiB)
        assert err == 0 and data == bytes(MiB), "half-sent write was applied"

    @scenario
    def vanish_with_requests_in_flight():
        r = ready()
        for i in range(32):
            r.request(CMD_READ, 8 * MiB + i * 65536, 65536)
        r.close()

    @scenario
    def well_formed_after_all():
        r = ready()
        data = os.urandom(65536)
        assert r.write(11 * MiB, data, FLAG_FUA) == 0
        acked[11 * MiB] = data
        err, got = r.read(11 * MiB, 65536)
        assert err == 0 and got == data
        r.request(CMD_DISC, 0, 0)
        assert r.wait_closed(5), "server did not close after NBD_CMD_DISC"

    time.sleep(0.5)  # let the good client run past the last bad one
    good_acked = good.finish()
    print(f"good client: {good.ops} operations, {len(good_acked)} blocks written")
    state = {str(k): v.hex() for k, v in list(good_acked.items()) + list(acked.items())}
    return state


def check(image, statefile):
    state = {int(k): bytes.fromhex(v) for k, v in json.load(open(statefile)).items()}
    disk = open(image, "rb").read()
    want = bytearray(16 * MiB)
    for off, data in state.items():
        want[off:off + len(data)] = data
    if disk != bytes(want):
        first = next(i for i in range(len(disk)) if disk[i] != want[i])
        print(f"FAIL disk differs from the acknowledged writes, first at offset {first}")
        sys.exit(1)
    print(f"disk holds exactly the {len(state)} acknowledged writes")


if __name__ == "__main__":
    if sys.argv[1] == "--check":
        check(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sock, export, statefile = sys.argv[1], sys.argv[2], sys.argv[3]
    state = main(sock, export)
    json.dump(state, open(statefile, "w"))
    if failures:
        print(f"{len(failures)} scenario(s) failed: {' '.join(failures)}")
        sys.exit(1)
