#!/usr/bin/python3
"""QMP conformance of `fleece serve --qmp`: scripted monitors against a live server.

Run: FLEECE=path/to/fleece /usr/bin/python3 test_qmp.py [test-name ...]
Each test starts its own server in a scratch directory; the process exits
non-zero on the first failure, with the server's log.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp_client import QmpClient  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FLEECE = os.environ.get("FLEECE") or os.path.join(
    os.environ.get("FLEECE_BUILD_DIR", os.path.join(HERE, "../../../build-interop")), "server/fleece")
DISK_SIZE = 8 << 20


class Server:
    def __init__(self, tmp, disks=("d0",)):
        self.tmp = tmp
        self.qmp = os.path.join(tmp, "fleece.qmp")
        self.nbd = os.path.join(tmp, "nbd.sock")
        self.log = open(os.path.join(tmp, "server.log"), "w")
        args = [FLEECE, "serve", "--listen", "unix:" + self.nbd, "--qmp", "unix:" + self.qmp]
        self.images = {}
        for i, name in enumerate(disks):
            path = make_image(tmp, name, seed=i)
            self.images[name] = path
            args += ["--disk", "%s=%s" % (name, path)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        assert "ready" in line, "server did not start: %r" % line
        assert os.path.exists(self.qmp), "no QMP socket at " + self.qmp

    def monitor(self, negotiate=True):
        m = QmpClient(self.qmp)
        if negotiate:
            m.negotiate()
        return m

    def uri(self, export):
        return "nbd+unix:///%s?socket=%s" % (export, self.nbd)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def make_image(tmp, name, seed):
    path = os.path.join(tmp, name + ".img")
    block = hashlib.sha256(b"fleece-%d" % seed).digest() * 2048  # 64 KiB of pattern
    with open(path, "wb") as f:
        for i in range(DISK_SIZE // len(block)):
            f.write(block[: len(block) - 1] + bytes([i % 251]))
    return path


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ---------------------------------------------------------------- tests

def test_greeting_and_negotiation(srv):
    m = srv.monitor(negotiate=False)
    g = m.greet()
    assert set(g["QMP"]) == {"version", "capabilities"}, g
    assert g["QMP"]["capabilities"] == []
    v = g["QMP"]["version"]
    assert set(v["qemu"]) == {"major", "minor", "micro"} and v["package"].startswith("fleece "), v
    m.send({"execute": "query-version", "id": 1})
    assert m.reply() == {"error": {"class": "CommandNotFound", "desc":
                         "Expecting capabilities negotiation with 'qmp_capabilities'"}, "id": 1}
    m.send({"execute": "qmp_capabilities", "id": "neg"})
    assert m.reply() == {"return": {}, "id": "neg"}
    m.send({"execute": "qmp_capabilities"})
    assert m.reply() == {"error": {"class": "CommandNotFound", "desc":
                         "Capabilities negotiation is already complete, command ignored"}}
    assert m.ok("query-version") == v


def test_id_echo(srv):
    m = srv.monitor()
    for ident in ["abc", 42, -1.5, None, True, [1, "two"], {"nested": {"x": [None]}}]:
        m.send({"execute": "query-version", "id": ident})
        r = m.reply()
        assert "return" in r and r["id"] == ident, r
        m.send({"execute": "no-such-command", "id": ident})
        r = m.reply()
        assert r["error"]["class"] == "CommandNotFound" and r["id"] == ident, r


def test_bad_inputs(srv):
    m = srv.monitor()
    other = srv.monitor()

    def expect(raw, cls, desc_prefix):
        m.send_raw(raw)
        r = m.reply()
        assert r is not None, "monitor closed after %r" % raw
        assert r["error"]["class"] == cls and r["error"]["desc"].startswith(desc_prefix), (raw, r)

    expect("this is not json\n", "GenericError", "JSON parse error, ")
    expect("[1, 2, 3]\n", "GenericError", "QMP input must be a JSON object")
    expect('"a string"\n', "GenericError", "QMP input must be a JSON object")
    expect('{"arguments": {}}\n', "GenericError", "QMP input lacks member 'execute'")
    expect('{"execute": 3}\n', "GenericError", "QMP input member 'execute' must be a string")
    expect('{"execute": "query-block", "arguments": [1]}\n', "GenericError",
           "QMP input member 'arguments' must be an object")
    expect('{"execute": "query-block", "extra": 1}\n', "GenericError", "QMP input member 'extra' is unexpected")
    expect('{"execute": "frobnicate"}\n', "CommandNotFound", "The command frobnicate has not been found")
    expect('{"execute": "blockdev-del"}\n', "GenericError", "Parameter 'node-name' is missing")
    expect('{"execute": "blockdev-del", "arguments": {"node-name": 5}}\n', "GenericError",
           "Invalid parameter type for 'node-name', expected: string")
    expect('{"execute": "nbd-server-add", "arguments": {"device": "d0", "writable": "yes"}}\n', "GenericError",
           "Invalid parameter type for 'writable', expected: boolean")
    expect('{"execute": "query-block", "arguments": {"y": 1}}\n', "GenericError", "Parameter 'y' is unexpected")
    expect('{"execute": "nbd-server-remove", "arguments": {"name": "d0", "mode": "gentle"}}\n', "GenericError",
           "Parameter 'mode' does not accept value 'gentle'")
    # An object over several lines, and two requests in one write.
    m.send_raw('{"execute":\n "query-version",\n "id": 7}{"execute": "query-version", "id": 8}\n')
    assert m.reply()["id"] == 7 and m.reply()["id"] == 8
    # Everyone else is unaffected.
    assert other.ok("query-version")["package"].startswith("fleece ")
    assert srv.alive()


def test_huge_line(srv):
    m = srv.monitor()
    other = srv.monitor()
    size = 100 << 20
    chunk = b"a" * (1 << 20)
    err = []

    def sender():
        try:
            m.send_raw(b'{"execute": "query-version", "arguments": {"x": "')
            for _ in range(size // len(chunk)):
                m.send_raw(chunk)
            m.send_raw(b'"}}\n')
        except OSError as e:  # the server may close the monitor instead of discarding
            err.append(e)

    t = threading.Thread(target=sender)
    t.start()
    r = m.reply()
    t.join(120)
    assert not t.is_alive()
    if r is not None:
        assert r["error"]["class"] == "GenericError" and "JSON parse error" in r["error"]["desc"], r
        if not err:  # the rest of the line was discarded: the monitor goes on
            m.send({"execute": "query-version", "id": "after"})
            assert m.reply()["id"] == "after"
    assert other.ok("query-version")
    rss = int(open("/proc/%d/status" % srv.proc.pid).read().split("VmRSS:")[1].split()[0])
    assert rss < 64 * 1024, "server RSS %d KiB after a 100 MiB line" % rss


def test_disconnect_mid_command(srv):
    other = srv.monitor()
    for _ in range(20):
        m = srv.monitor()
        m.send({"execute": "query-stats"})
        m.send({"execute": "blockdev-add", "arguments": {
            "node-name": "tmp", "driver": "file", "filename": srv.images["d0"], "read-only": True}})
        m.close()
        time.sleep(0.01)
        r = other.cmd("blockdev-del", node_name="tmp")  # undo if it ran
        assert "return" in r or "Failed to find node" in r["error"]["desc"], r
    half = QmpClient(srv.qmp)
    half.greet()
    half.send_raw('{"execute": "qmp_capabilities"')  # never finished
    half.close()
    assert other.ok("query-version")
    assert srv.alive()


def test_every_command(srv):
    m = srv.monitor()
    names = {c["name"] for c in m.ok("query-commands")}
    for n in ["qmp_capabilities", "blockdev-add", "blockdev-del", "query-block", "nbd-server-add",
              "nbd-server-remove", "query-nbd-exports", "query-stats", "quit", "query-version", "query-commands"]:
        assert n in names, n

    img = make_image(srv.tmp, "extra", seed=9)
    assert m.ok("blockdev-add", node_name="x1", driver="file", filename=img, cache={"direct": False}) == {}
    assert m.error("blockdev-add", node_name="x1", driver="file", filename=img) == \
        ("GenericError", "Duplicate nodes with node-name='x1'")
    cls, desc = m.error("blockdev-add", node_name="x2", driver="raw", filename=srv.tmp + "/missing.img")
    assert cls == "GenericError" and "missing.img" in desc, desc
    r = m.cmd("blockdev-add", node_name="q", driver="qcow2", filename=img)
    assert "return" in r or "qcow2" in r["error"]["desc"], r
    if "return" in r:
        m.ok("blockdev-del", node_name="q")
    blocks = {b["device"]: b for b in m.ok("query-block")}
    assert blocks["x1"]["inserted"]["file"] == img and blocks["x1"]["inserted"]["ro"] is False
    assert "d0" in blocks

    assert m.ok("nbd-server-add", device="x1", name="ex1", description="extra disk") == {}
    assert m.error("nbd-server-add", device="x1", name="ex1") == \
        ("GenericError", "NBD server already has export named 'ex1'")
    assert m.error("nbd-server-add", device="nope") == ("DeviceNotFound", "Device 'nope' not found")
    cls, desc = m.error("blockdev-del", node_name="x1")
    assert "busy" in desc and "ex1" in desc, desc
    exports = {e["name"]: e for e in m.ok("query-nbd-exports")}
    assert exports["ex1"]["device"] == "x1" and exports["ex1"]["writable"] is False
    assert exports["ex1"]["size"] == DISK_SIZE and exports["ex1"]["clients"] == []

    # A client reading ex1: visible in query-nbd-exports and query-stats; blocks a safe remove.
    import nbd
    h = nbd.NBD()
    h.connect_uri(srv.uri("ex1"))
    data = h.pread(65536, 0)
    assert data == open(img, "rb").read(65536)
    exports = {e["name"]: e for e in m.ok("query-nbd-exports")}
    assert len(exports["ex1"]["clients"]) == 1, exports
    stats = {s["name"]: s for s in m.ok("query-stats")["exports"]}
    assert stats["ex1"]["read-bytes"] >= 65536 and stats["ex1"]["read-requests"] >= 1, stats
    for key in ["write-bytes", "write-requests", "in-flight", "read-latency-p50-us", "read-latency-p99-us"]:
        assert key in stats["ex1"], key
    cls, desc = m.error("nbd-server-remove", name="ex1")
    assert "still in use" in desc, desc
    assert m.ok("nbd-server-remove", name="ex1", mode="hard") == {}
    try:
        h.pread(512, 0)
        raise AssertionError("read after a hard removal succeeded")
    except nbd.Error:
        pass
    del h
    assert m.error("nbd-server-remove", name="ex1") == ("GenericError", "Export 'ex1' is not found")
    assert m.ok("blockdev-del", node_name="x1") == {}

    other = srv.monitor()
    m.send({"execute": "quit", "id": "bye"})
    assert m.reply() == {"return": {}, "id": "bye"}
    srv.proc.wait(15)
    assert srv.proc.returncode == 0, srv.proc.returncode
    assert other.reply() is None  # closed with the server
    assert not os.path.exists(srv.qmp), "QMP socket left behind"


def test_events_on_two_monitors(srv):
    import nbd
    a, b = srv.monitor(), srv.monitor()
    silent = srv.monitor(negotiate=False)
    silent.greet()
    h = nbd.NBD()
    h.connect_uri(srv.uri("d0"))
    for m in (a, b):
        ev = m.event("NBD_CLIENT_CONNECTED")
        assert ev["data"]["export"] == "d0" and ev["data"]["client"], ev
        assert set(ev["timestamp"]) == {"seconds", "microseconds"}
        assert abs(ev["timestamp"]["seconds"] - time.time()) < 60
    h.shutdown()
    del h
    for m in (a, b):
        ev = m.event("NBD_CLIENT_DISCONNECTED")
        assert ev["data"]["export"] == "d0", ev
    # A monitor still negotiating gets no events.
    silent.send({"execute": "qmp_capabilities", "id": 1})
    assert silent.recv() == {"return": {}, "id": 1}


def test_exports_change_under_nbdcopy(srv):
    m = srv.monitor()
    out = os.path.join(srv.tmp, "copy.img")
    copy = subprocess.Popen(["nbdcopy", "--request-size=65536", "--requests=4", "--connections=1",
                             srv.uri("d0"), out])
    rounds = 0
    while copy.poll() is None or rounds < 5:
        name = "churn%d" % rounds
        m.ok("nbd-server-add", device="d1", name=name)
        assert name in {e["name"] for e in m.ok("query-nbd-exports")}
        m.ok("nbd-server-remove", name=name, mode="hard" if rounds % 2 else "safe")
        rounds += 1
    assert copy.wait(60) == 0
    assert sha(out) == sha(srv.images["d0"]), "nbdcopy read different bytes"


def test_ctl(srv):
    def ctl(*args):
        return subprocess.run([FLEECE, "ctl", "--qmp", srv.qmp] + list(args), capture_output=True, text=True,
                              timeout=30)

    r = ctl("query-version")
    assert r.returncode == 0 and json.loads(r.stdout)["package"].startswith("fleece "), r
    r = ctl("nbd-server-add", "device=d0", "name=viactl", "writable=false", "description=from ctl")
    assert r.returncode == 0 and json.loads(r.stdout) == {}, r
    r = ctl("query-nbd-exports")
    exports = {e["name"]: e for e in json.loads(r.stdout)}
    assert exports["viactl"]["description"] == "from ctl" and exports["viactl"]["writable"] is False
    r = ctl("nbd-server-add", "device=d0", "name=viactl")
    assert r.returncode == 1 and r.stderr.strip() == "GenericError: NBD server already has export named 'viactl'", r
    r = ctl("nosuch")
    assert r.returncode == 1 and r.stderr.strip() == "CommandNotFound: The command nosuch has not been found", r
    r = ctl("blockdev-add", "node-name=c1", "driver=file", "filename=" + srv.images["d0"], "cache.direct=false",
            "read-only=true")
    assert r.returncode == 0, r
    r = subprocess.run([FLEECE, "ctl", "--qmp", srv.tmp + "/absent.qmp", "query-version"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "absent.qmp" in r.stderr, r


TESTS = [
    (test_greeting_and_negotiation, ("d0",)),
    (test_id_echo, ("d0",)),
    (test_bad_inputs, ("d0",)),
    (test_huge_line, ("d0",)),
    (test_disconnect_mid_command, ("d0",)),
    (test_events_on_two_monitors, ("d0",)),
    (test_exports_change_under_nbdcopy, ("d0", "d1")),
    (test_ctl, ("d0",)),
    (test_every_command, ("d0",)),  # ends with quit
]


def main():
    wanted = set(sys.argv[1:])
    failed = 0
    for test, disks in TESTS:
        if wanted and test.__name__ not in wanted:
            continue
        tmp = tempfile.mkdtemp(prefix="fleece-qmp.")
        srv = None
        try:
            srv = Server(tmp, disks)
            test(srv)
            assert srv.alive() or test is test_every_command, "server died"
            print("ok   %s" % test.__name__, flush=True)
        except Exception as e:  # report, show the log, go on with the next test
            failed += 1
            print("FAIL %s: %r" % (test.__name__, e), flush=True)
            import traceback
            traceback.print_exc()
            if srv:
                srv.log.flush()
                sys.stdout.write(open(os.path.join(tmp, "server.log")).read()[-3000:])
        finally:
            if srv:
                srv.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
