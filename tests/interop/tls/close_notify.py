#!/usr/bin/python3
"""A well-behaved TLS client that checks how the session ends.

close_notify.py SOCKET EXPORT CLIENT_PKI_DIR DISK_FILE
Negotiates STARTTLS (X.509, the client certificate presented), NBD_OPT_GO,
reads the first 4 KiB and checks them against DISK_FILE, sends
NBD_CMD_DISC, then reads to the end: exits 0 only if the server ended the
TLS session with close_notify (a plain EOF without it is a truncation
attack a client cannot tell from the end of the session; RFC 8446, 6.1).
"""
import socket
import ssl
import struct
import sys

from starttls_raw import IHAVEOPT, OPT_STARTTLS, REP_ACK, REPLY_MAGIC, read_exact

OPT_GO, REP_INFO = 7, 3
REQUEST_MAGIC, SIMPLE_REPLY_MAGIC = 0x25609513, 0x67446698
CMD_READ, CMD_DISC = 0, 2


def option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def option_reply(s):
    magic, opt, rtype, length = struct.unpack(">QIII", read_exact(s, 20))
    assert magic == REPLY_MAGIC, hex(magic)
    return opt, rtype, read_exact(s, length)


def main():
    path, export, pki, disk = sys.argv[1:5]
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(10)
    raw.connect(path)
    assert read_exact(raw, 18)[:8] == b"NBDMAGIC"
    raw.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    option(raw, OPT_STARTTLS)
    _, rtype, _ = option_reply(raw)
    assert rtype == REP_ACK, f"STARTTLS answered {rtype:#x}"

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(f"{pki}/ca-cert.pem")
    ctx.load_cert_chain(f"{pki}/client-cert.pem", f"{pki}/client-key.pem")
    # Without suppression a bare EOF raises SSLEOFError; close_notify reads as b"".
    tls = ctx.wrap_socket(raw, suppress_ragged_eofs=False)

    name = export.encode()
    option(tls, OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    while True:
        _, rtype, _ = option_reply(tls)
        if rtype == REP_ACK:
            break
        assert rtype == REP_INFO, f"NBD_OPT_GO answered {rtype:#x}"

    tls.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, 1, 0, 4096))
    magic, error, cookie = struct.unpack(">IIQ", read_exact(tls, 16))
    assert (magic, error, cookie) == (SIMPLE_REPLY_MAGIC, 0, 1), (hex(magic), error, cookie)
    with open(disk, "rb") as f:
        if read_exact(tls, 4096) != f.read(4096):
            print("READ over TLS returned other bytes than the disk's")
            return 1

    tls.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_DISC, 2, 0, 0))
    try:
        while tls.recv(4096):
            pass
    except ssl.SSLEOFError as e:
        print(f"the server closed without close_notify: {e}")
        return 1
    except socket.timeout:
        print("the server did not close after NBD_CMD_DISC")
        return 1
    print("session ended with close_notify")
    return 0


if __name__ == "__main__":
    sys.exit(main())
