"""A tiny NBD client over a raw socket, for sending what real clients never
send. Numbers follow doc/proto.md of the NBD project. Every receive has a
timeout so a test never hangs."""
import socket
import struct
import threading
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO, OPT_STRUCTURED_REPLY = 1, 2, 3, 6, 7, 8
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
REP_ERR_UNSUP = (1 << 31) | 1
REP_ERR_TOO_BIG = (1 << 31) | 9

CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
FLAG_FUA = 1

EPERM, EIO, EINVAL, ENOSPC, EOVERFLOW = 1, 5, 22, 28, 75


class Closed(Exception):
    """The server closed the connection."""


class Raw:
    def __init__(self, path, timeout=10):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.cookie = 0

    def close(self):
        self.s.close()

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.s.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise Closed(f"EOF after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def send(self, data):
        self.s.sendall(data)

    def try_send(self, data):
        """Send, unless the server has closed the connection already."""
        try:
            self.s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def wait_closed(self, seconds):
        """True if the server closes the connection within `seconds` (data it
        sends meanwhile is discarded)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                if not self.s.recv(65536):
                    return True
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
        return False

    # -- handshake -------------------------------------------------------

    def greeting(self):
        magic, opt, flags = struct.unpack(">QQH", self.recv_exact(18))
        assert magic == NBDMAGIC and opt == IHAVEOPT, "bad server greeting"
        assert flags & 1, "server is not fixed newstyle"
        return flags

    def client_flags(self, flags=0b11):  # FIXED_NEWSTYLE | NO_ZEROES
        self.send(struct.pack(">I", flags))

    def start(self):
        self.greeting()
        self.client_flags()

    def option(self, opt, data=b""):
        self.send(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

    def option_reply(self):
        magic, opt, rtype, length = struct.unpack(">QIII", self.recv_exact(20))
        assert magic == OPT_REPLY_MAGIC, f"bad option reply magic {magic:#x}"
        return opt, rtype, self.recv_exact(length)

    def go(self, name):
        """NBD_OPT_GO; returns (size, transmission flags)."""
        n = name.encode()
        self.option(OPT_GO, struct.pack(">I", len(n)) + n + struct.pack(">H", 0))
        size = flags = None
        while True:
            opt, rtype, data = self.option_reply()
            assert opt == OPT_GO, f"reply to option {opt}"
            if rtype == REP_INFO and struct.unpack(">H", data[:2])[0] == 0:
                size, flags = struct.unpack(">QH", data[2:12])
            elif rtype == REP_ACK:
                assert size is not None, "GO acked without NBD_INFO_EXPORT"
                return size, flags
            elif rtype & (1 << 31):
                raise AssertionError(f"GO failed: reply type {rtype:#x}")

    def connect_export(self, name):
        self.start()
        return self.go(name)

    # -- transmission (simple replies) ------------------------------------

    def request(self, cmd, offset, length, flags=0, payload=b""):
        self.cookie += 1
        self.send(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, self.cookie, offset, length) + payload)
        return self.cookie

    def simple_reply(self, read_len=0):
        magic, error, cookie = struct.unpack(">IIQ", self.recv_exact(16))
        assert magic == SIMPLE_REPLY_MAGIC, f"bad reply magic {magic:#x}"
        data = self.recv_exact(read_len) if error == 0 and read_len else b""
        return error, cookie, data

    def read(self, offset, length):
        c = self.request(CMD_READ, offset, length)
        err, cookie, data = self.simple_reply(length)
        assert cookie == c, "cookie mismatch"
        return err, data

    def write(self, offset, data, flags=0):
        c = self.request(CMD_WRITE, offset, len(data), flags, data)
        err, cookie, _ = self.simple_reply()
        assert cookie == c, "cookie mismatch"
        return err


class GoodClient(threading.Thread):
    """A well-behaved libnbd client that keeps writing and reading its own
    region [base, base+span) while bad clients do their worst. Every write it
    got acknowledged is recorded; every read is checked against them."""

    def __init__(self, sock, export, base, span, block=65536):
        super().__init__(daemon=True)
        import nbd  # the libnbd Python binding
        self.h = nbd.NBD()
        self.h.set_export_name(export)
        self.h.connect_unix(sock)
        self.base, self.span, self.block = base, span, block
        self.acked = {}           # offset -> bytes acknowledged there
        self.stop_flag = threading.Event()
        self.error = None
        self.ops = 0

    def run(self):
        import os, random
        rng = random.Random(7)
        try:
            while not self.stop_flag.is_set():
                off = self.base + rng.randrange(self.span // self.block) * self.block
                if rng.random() < 0.5:
                    data = os.urandom(self.block)
                    self.h.pwrite(data, off)
                    self.acked[off] = data
                else:
                    got = self.h.pread(self.block, off)
                    want = self.acked.get(off)
                    if want is not None and got != want:
                        raise AssertionError(f"good client read wrong data at {off}")
                self.ops += 1
                time.sleep(0.002)
        except Exception as e:  # reported by finish()
            self.error = e

    def finish(self):
        self.stop_flag.set()
        self.join(30)
        assert not self.is_alive(), "good client stuck"
        if self.error:
            raise AssertionError(f"good client failed: {self.error!r}")
        assert self.ops > 0, "good client did nothing"
        self.h.flush()
        self.h.shutdown()
        return self.acked
