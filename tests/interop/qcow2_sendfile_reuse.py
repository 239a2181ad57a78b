"""A READ whose reply still sits unread in the socket must not change when
another guest offset is written later: the live qcow2 export sends clusters
with sendfile, the socket keeps their page-cache pages until the peer reads
them, and a host cluster freed by a discard must not be reused under them.

usage: qcow2_sendfile_reuse.py SOCKET ROUNDS
Each round: connection A reads guest cluster i (sent from the page cache)
and leaves the reply unread; connection B discards cluster i, flushes (the
host cluster is free on disk), writes a cluster at a fresh offset, flushes;
then A's reply must hold cluster i's old bytes (or zeroes, a discard racing
the read), never the new cluster's."""
import sys
import time

import nbdraw

CS = 65536
CMD_TRIM = 4


def ok(conn, cmd, offset=0, length=0):
    cookie = conn.request(cmd, offset, length)
    err, got, _ = conn.simple_reply()
    assert got == cookie and err == 0, f"command {cmd} at {offset} failed: error {err}"


def main(sock, rounds):
    a, b = nbdraw.Raw(sock), nbdraw.Raw(sock)
    a.connect_export("d")
    b.connect_export("d")
    bad = 0
    for i in range(rounds):
        old = bytes([0x10 + i]) * CS
        new = bytes([0x80 + i]) * CS
        assert b.write(i * CS, old) == 0
        ok(b, nbdraw.CMD_FLUSH)
        err, data = a.read(i * CS, CS)  # the page cache has it now
        assert err == 0 and data == old, f"round {i}: first read"
        cookie = a.request(nbdraw.CMD_READ, i * CS, CS)  # its reply stays in the socket
        time.sleep(0.1)
        ok(b, CMD_TRIM, i * CS, CS)
        ok(b, nbdraw.CMD_FLUSH)
        assert b.write((rounds + 8 + i) * CS, new) == 0  # a freed cluster would be reused here
        ok(b, nbdraw.CMD_FLUSH)
        err, got, data = a.simple_reply(CS)
        assert got == cookie and err == 0, f"round {i}: held read failed"
        if data not in (old, bytes(CS)):
            bad += 1
            print(f"round {i}: the held read shows {'the new cluster' if data == new else 'other bytes'}")
        assert b.read((rounds + 8 + i) * CS, CS)[1] == new, f"round {i}: the new cluster"
        assert b.read(i * CS, CS)[1] == bytes(CS), f"round {i}: the discarded cluster"
    a.close()
    b.close()
    if bad:
        sys.exit(f"{bad} of {rounds} held reads changed")
    print(f"{rounds} held reads kept their bytes")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
