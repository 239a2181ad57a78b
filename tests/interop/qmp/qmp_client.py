"""A minimal QMP client for the interop tests (no dependency beyond the stdlib)."""
import json
import socket


class QmpClient:
    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.events = []

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def send(self, obj):
        self.send_raw(json.dumps(obj) + "\n")

    def recv(self):
        """The next message, or None when the server closed the monitor."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def reply(self):
        """The next reply, keeping events aside."""
        while True:
            msg = self.recv()
            if msg is None or "event" not in msg:
                return msg
            self.events.append(msg)

    def event(self, name):
        """The next event called name (earlier ones seen are consumed)."""
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name:
                    return self.events.pop(i)
            msg = self.recv()
            assert msg is not None, "monitor closed while waiting for " + name
            assert "event" in msg, "unexpected message %r" % (msg,)
            self.events.append(msg)

    def greet(self):
        greeting = self.recv()
        assert "QMP" in greeting, greeting
        return greeting

    def negotiate(self):
        greeting = self.greet()
        self.send({"execute": "qmp_capabilities"})
        assert self.reply() == {"return": {}}
        return greeting

    def cmd(self, _command, **arguments):
        msg = {"execute": _command}
        if arguments:
            msg["arguments"] = {k.replace("_", "-"): v for k, v in arguments.items()}
        self.send(msg)
        return self.reply()

    def ok(self, _command, **arguments):
        r = self.cmd(_command, **arguments)
        assert "return" in r, "%s failed: %r" % (_command, r)
        return r["return"]

    def error(self, _command, **arguments):
        r = self.cmd(_command, **arguments)
        assert "error" in r, "%s did not fail: %r" % (_command, r)
        return r["error"]["class"], r["error"]["desc"]
