#!/usr/bin/python3
"""A hostile STARTTLS client: negotiates STARTTLS, then misbehaves.

starttls_raw.py SOCKET garbage|stall LIMIT_SECONDS
  garbage: sends junk right after the STARTTLS ACK
  stall:   sends 5 bytes of a TLS record header, then nothing
Exits 0 when the server ACKs STARTTLS and then closes the connection within
LIMIT_SECONDS; prints what happened either way.
"""
import socket
import struct
import sys
import time

IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
OPT_STARTTLS = 5
REP_ACK = 1


def read_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError(f"EOF after {len(data)} of {n} bytes")
        data += chunk
    return data


def main():
    path, mode, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(limit + 5)
    s.connect(path)
    greeting = read_exact(s, 18)
    assert greeting[:8] == b"NBDMAGIC", greeting
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_STARTTLS, 0))
    magic, option, rtype, length = struct.unpack(">QIII", read_exact(s, 20))
    read_exact(s, length)
    if magic != REPLY_MAGIC or option != OPT_STARTTLS or rtype != REP_ACK:
        print(f"STARTTLS not acknowledged: option {option} type {rtype:#x}")
        return 1
    start = time.monotonic()
    if mode == "garbage":
        s.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)))
    else:
        s.sendall(b"\x16\x03\x01\x02\x00")
    try:
        while s.recv(4096):
            pass  # an alert is fine; we wait for the close
    except ConnectionResetError:
        pass
    except socket.timeout:
        print(f"{mode}: still open after {limit + 5} s")
        return 1
    took = time.monotonic() - start
    print(f"{mode}: closed by the server after {took:.1f} s")
    return 0 if took <= limit else 1


if __name__ == "__main__":
    sys.exit(main())
