"""Helpers for the backing-chain interop tests (test_chain_*.sh).

A scratch directory, the issue's chain (master.img <- cow.qcow2 <-
newcow.qcow2) made with qemu-img/qemu-io, a `fleece serve` with its QMP
monitor, and readers of what an NBD export serves (nbdcopy, nbdinfo --map).
Every external tool runs under a timeout.
"""
import atexit
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp_client import QmpClient  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FLEECE = os.environ.get("FLEECE") or os.path.join(
    os.environ.get("FLEECE_BUILD_DIR", os.path.join(HERE, "../../../build-interop")), "server/fleece")
MiB = 1 << 20


def log(*args):
    print("[%s]" % os.path.basename(sys.argv[0]).removesuffix(".py"), *args, file=sys.stderr, flush=True)


def run(*cmd, timeout=30, check=True):
    """Runs a command; its stdout as text."""
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("%s failed (%d): %s%s" % (" ".join(map(str, cmd)), p.returncode, p.stdout, p.stderr))
    return p.stdout


def scratch():
    """A scratch directory, removed at exit unless KEEP=1."""
    d = tempfile.mkdtemp(prefix="fleece-chain.")
    if os.environ.get("KEEP") != "1":
        atexit.register(shutil.rmtree, d, True)
    return d


def sha(data):
    return hashlib.sha256(data).hexdigest()


def qemu_io(path, fmt, *commands):
    args = ["qemu-io", "-f", fmt]
    for c in commands:
        args += ["-c", c]
    run(*args, path)


def make_issue_chain(d, size_mib=32):
    """master.img (raw) <- cow.qcow2 <- newcow.qcow2, each layer with its
    own patterns, zero clusters and holes. Returns the three paths."""
    master, cow, newcow = (os.path.join(d, n) for n in ("master.img", "cow.qcow2", "newcow.qcow2"))
    run("qemu-img", "create", "-q", "-f", "raw", master, "%dM" % size_mib)
    qemu_io(master, "raw", "write -P 0xa0 0 12M", "write -P 0xa1 16M 4M", "write -P 0xa2 28M 64k")
    # Relative backing names, as a user would make them.
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "master.img", "-F", "raw", "cow.qcow2"],
                   cwd=d, check=True, timeout=30)
    qemu_io(cow, "qcow2", "write -P 0xb0 2M 8M", "write -z 11M 1M", "write -P 0xb1 17M 1M",
            "write -P 0xb2 24M 3M", "write -P 0xb3 31M 512k")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "cow.qcow2", "-F", "qcow2", "newcow.qcow2"],
                   cwd=d, check=True, timeout=30)
    qemu_io(newcow, "qcow2", "write -P 0xc0 6M 1M", "write -P 0xc1 25M 64k", "write -z 30M 128k")
    return master, cow, newcow


def flat(d, image, fmt="qcow2"):
    """The guest-visible bytes of an image (through its backing chain)."""
    out = os.path.join(d, "flat-%d.raw" % time.monotonic_ns())
    run("qemu-img", "convert", "-f", fmt, "-O", "raw", image, out)
    with open(out, "rb") as f:
        data = f.read()
    os.unlink(out)
    return data


def chain_files(image):
    """File names of `qemu-img info --backing-chain`, top first."""
    info = json.loads(run("qemu-img", "info", "--backing-chain", "--output=json", "-U", image))
    return [os.path.basename(i["filename"]) for i in info]


def check_image(image):
    """qemu-img check passes (exit 0: no errors, no leaks)."""
    run("qemu-img", "check", "-q", image)


def same_content(a, b, fmt_a="qcow2", fmt_b="raw"):
    p = subprocess.run(["qemu-img", "compare", "-q", "-f", fmt_a, "-F", fmt_b, a, b],
                       capture_output=True, text=True, timeout=60)
    return p.returncode == 0


def depth_map(uri, context="qemu:allocation-depth"):
    """nbdinfo --map of a context, neighbours of equal value merged:
    [(offset, length, value), ...]."""
    extents = json.loads(run("nbdinfo", "--json", "--map=" + context, uri))
    out = []
    for e in extents:
        if out and out[-1][2] == e["type"] and out[-1][0] + out[-1][1] == e["offset"]:
            out[-1] = (out[-1][0], out[-1][1] + e["length"], out[-1][2])
        else:
            out.append((e["offset"], e["length"], e["type"]))
    return out


def depth_from_qemu_img_map(image):
    """What `qemu-img map --output=json` implies for qemu:allocation-depth:
    depth + 1 where some layer has the data (present), else 0."""
    out = []
    for e in json.loads(run("qemu-img", "map", "--output=json", "-U", image)):
        v = e["depth"] + 1 if e["present"] else 0
        if out and out[-1][2] == v:
            out[-1] = (out[-1][0], out[-1][1] + e["length"], v)
        else:
            out.append((e["start"], e["length"], v))
    return out


def qemu_nbd_depth_map(d, image, fmt="qcow2"):
    """depth_map() of qemu-nbd -A serving image read-only (the reference)."""
    sock = os.path.join(d, "qemu-nbd-%d.sock" % time.monotonic_ns())
    proc = subprocess.Popen(["timeout", "30", "qemu-nbd", "-r", "-A", "-f", fmt, "-k", sock, image],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: os.path.exists(sock) or proc.poll() is not None, 10, what="qemu-nbd")
        assert proc.poll() is None, "qemu-nbd failed: %s" % proc.stderr.read()
        return depth_map("nbd+unix:///?socket=" + sock)
    finally:
        proc.terminate()
        proc.wait(10)


class Fleece:
    """`fleece serve` on Unix sockets in d; disks: [(name, path, fmt, readonly)]."""
    instances = []

    def __init__(self, d, disks):
        Fleece.instances.append(self)
        self.d = d
        self.qmp = os.path.join(d, "fleece.qmp")
        self.sock = os.path.join(d, "nbd.sock")
        self.log_path = os.path.join(d, "server.log")
        self.log = open(self.log_path, "w")
        args = ["timeout", "120", FLEECE, "serve", "--listen", "unix:" + self.sock, "--qmp", "unix:" + self.qmp]
        for name, path, fmt, ro in disks:
            args += ["--disk", "%s=%s,format=%s%s" % (name, path, fmt, ",readonly" if ro else "")]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=d)
        line = self.proc.stdout.readline()
        if "ready" not in line:
            self.dump()
            raise AssertionError("server did not start: %r" % line)
        atexit.register(self.kill)

    def monitor(self):
        m = QmpClient(self.qmp, timeout=30)
        m.negotiate()
        return m

    def uri(self, export):
        return "nbd+unix:///%s?socket=%s" % (export, self.sock)

    def read(self, export):
        """Every byte the export serves (nbdcopy)."""
        out = os.path.join(self.d, "read-%d.raw" % time.monotonic_ns())
        run("nbdcopy", self.uri(export), out, timeout=60)
        with open(out, "rb") as f:
            data = f.read()
        os.unlink(out)
        return data

    def alive(self):
        return self.proc.poll() is None

    def stop(self, grace=30):
        """SIGTERM to fleece (the child of timeout); it must exit 0."""
        children = run("pgrep", "-P", self.proc.pid, check=False).split()
        for pid in children:
            os.kill(int(pid), signal.SIGTERM)
        try:
            rc = self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("server did not exit within %d s of SIGTERM" % grace)
        assert rc == 0, "server exited with %d" % rc

    def kill(self):
        if self.proc.poll() is None:
            for pid in run("pgrep", "-P", self.proc.pid, check=False).split():
                os.kill(int(pid), signal.SIGKILL)
            self.proc.wait()

    def dump(self):
        self.log.flush()
        with open(self.log_path) as f:
            sys.stderr.write("---- server log (last 40 lines) ----\n" + "".join(f.readlines()[-40:]))


def wait_for(predicate, timeout=30, step=0.05, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = predicate()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out waiting for " + what)


def main(test, *args):
    """Runs test(*args); on failure prints the server log of any Fleece made."""
    try:
        test(*args)
    except BaseException:
        for obj in list(Fleece.instances):
            obj.dump()
        raise
    log("ok")

