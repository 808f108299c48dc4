"""The protocol engine (device side) and DutClient (host side), joined by a socket pair
in-process: the worked transcript of ../shared/notes/mlperf-tiny-protocol.md, the
faults (garbage, oversize lines, a silent or foreign device), chunking and retry."""

from __future__ import annotations

import socket
import threading

import pytest

from edgeslim.errors import DeviceError
from edgeslim.harness.dut import DutEngine
from edgeslim.harness.protocol import DutClient


def engine(input_bytes=4):
    """A 4-byte-input, 3-output device whose 'model' is fixed and whose clock ticks 632 us
    per read, like the transcript's."""
    ticks = iter(range(1204410, 10**9, 632))
    return DutEngine(
        name="edgeslim", profile="test 1", model="m", input_bytes=input_bytes,
        infer=lambda data: (bytes([1, 0xF9, 5]), [0.125, -3.5, 2.25]),
        clock_us=lambda: next(ticks),
        info={"sha256": "ab" * 32, "arena": 1024, "clock": 1000000, "counter": "test"},
    )


def talk(e, text):
    return e.feed(text.encode("ascii"))


def test_worked_transcript_replayed():
    e = engine()
    assert talk(e, "name%") == ["m-name-dut-[edgeslim]", "m-ready"]
    assert talk(e, "db load 4%") == ["m-[Expecting 4 bytes]", "m-ready"]
    assert talk(e, "db 80ff01%") == ["m-ready"]
    assert talk(e, "db 02%") == ["m-load-done", "m-ready"]
    assert talk(e, "db print%") == ["m-buffer-80-ff-01-02", "m-ready"]
    assert talk(e, "infer 10 1%") == [
        "m-warmup-start-1", "m-warmup-done", "m-infer-start-10",
        "m-lap-us-1204410", "m-lap-us-1205042", "m-infer-done",
        "m-results-[0.125,-3.500,2.250]", "m-ready"]
    assert talk(e, "bogus%") == ["e-[Unknown command: bogus]", "m-ready"]
    assert talk(e, "results%") == ["m-results-[0.125,-3.500,2.250]", "m-ready"]
    assert talk(e, "results hex%") == ["m-results-hex-[01f905]", "m-ready"]
    assert talk(e, "info%") == [
        "m-info-[sha256=" + "ab" * 32 + ",arena=1024,clock=1000000,counter=test,protocol=1,input=4]", "m-ready"]
    assert talk(e, "profile%") == ["m-profile-[test 1]", "m-model-[m]", "m-ready"]


def test_errors_and_recovery():
    e = engine()
    assert talk(e, "db 0%") == ["e-[Insufficent number of hex digits]", "m-ready"]
    assert talk(e, "db load 0%") == ["e-[db load N must be > 0]", "m-ready"]
    assert talk(e, "db load 5%") == ["e-[db load 5: the model's input is 4 bytes]", "m-ready"]
    assert talk(e, "infer%") == ["e-[No input loaded: send db load 4 and the data first]", "m-ready"]
    assert talk(e, "results%") == ["e-[No results: run infer first]", "m-ready"]
    talk(e, "db load 4%")
    assert talk(e, "db 0g%") == ["e-[Invalid hex digit '0g']", "m-ready"]
    assert talk(e, "db 0102030405%") == ["e-[Too many bytes: expecting 4 more]", "m-ready"]
    # garbage bytes: one error per run, the half-typed command is dropped, the next works
    assert e.feed(b"nam\x00\xff\xfe") == ["e-[Invalid byte 0x00 in command; discarded]", "m-ready"]
    assert talk(e, "name%") == ["m-name-dut-[edgeslim]", "m-ready"]
    # an oversize line: one error, everything up to the next '%' dropped, the next works
    assert talk(e, "db " + "00" * 60) == ["e-[Command too long: more than 80 characters with the %]", "m-ready"]
    assert talk(e, "0000%") == []
    assert talk(e, "\r\nname%\n") == ["m-name-dut-[edgeslim]", "m-ready"]
    # a 79-character command plus '%' is within the limit
    assert talk(e, "x" * 79 + "%") == ["e-[Unknown command: " + "x" * 79 + "]", "m-ready"]


@pytest.fixture
def device():
    """An engine served on one end of a socket pair; the client gets the other (socket://-like)."""
    host, dev = socket.socketpair()
    e = engine(input_bytes=70)
    received = []

    def serve():
        dev.sendall(b"".join(l.encode() + b"\r\n" for l in e.boot()))
        while True:
            try:
                data = dev.recv(4096)
            except OSError:
                return
            if not data:
                return
            received.append(data)
            lines = e.feed(data)
            if lines:
                try:
                    dev.sendall(b"".join(l.encode() + b"\r\n" for l in lines))
                except OSError:  # the test closed its end: the device goes quiet
                    return

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield SocketLink(host), e, received, dev
    host.close()
    dev.close()


class SocketLink:
    """The pyserial subset DutClient uses, over a connected socket."""

    def __init__(self, sock):
        self.sock, self.name = sock, "socketpair"
        sock.settimeout(0.05)

    def read(self, n):
        try:
            data = self.sock.recv(max(n, 1))
        except socket.timeout:
            return b""
        return data if data else None

    def write(self, b):
        self.sock.sendall(b)

    def close(self):
        self.sock.close()


@pytest.mark.timeout(30)
def test_client_commands(device):
    link, e, received, _ = device
    c = DutClient(link, timeout=2)
    assert c.device_name == "edgeslim" and c.name() == "edgeslim"
    data = bytes(range(70))
    c.load(data)
    # chunks of at most 31 bytes, each a separate command
    sent = b"".join(received).decode()
    assert "db load 70%" in sent and "db " + data[:31].hex() + "%" in sent and "db " + data[62:].hex() + "%" in sent
    assert c.db_print() == data
    r = c.infer(3, 0)
    assert r.values == [0.125, -3.5, 2.25] and r.latency_us == pytest.approx(632 / 3)
    assert c.results_hex() == bytes([1, 0xF9, 5]) and c.results() == [0.125, -3.5, 2.25]
    assert c.info()["sha256"] == "ab" * 32 and c.info()["protocol"] == "1"
    assert c.profile() == {"profile": "test 1", "model": "m"}
    with pytest.raises(DeviceError, match="refused bogus%: e-\\[Unknown command: bogus\\]"):
        c.command("bogus")
    assert c.timestamp() > 0


@pytest.mark.timeout(30)
def test_client_recovers_from_leftover_bytes(device):
    """Bytes the device holds from before (a half command) are flushed by the sync."""
    link, e, _, _ = device
    e.feed(b"zz")
    assert DutClient(link, timeout=2).name() == "edgeslim"


@pytest.mark.timeout(30)
def test_client_retries_a_garbled_chunk_once(device):
    link, e, received, _ = device
    c = DutClient(link, timeout=2)
    real = e._db
    garbled = {"n": 0}

    def flaky(args):  # the first data chunk arrives corrupted once
        if args and args[0] not in ("load", "print") and garbled["n"] == 0:
            garbled["n"] += 1
            args = [args[0][:-2] + "zz"]
        return real(args)

    e._db = flaky
    c.load(bytes(70))
    assert garbled["n"] == 1 and bytes(e.buffer) == bytes(70)


def test_client_times_out_on_a_silent_device():
    a, b = socket.socketpair()
    try:
        with pytest.raises(DeviceError, match=r"no complete reply to name% within 0.3 s"):
            DutClient(SocketLink(a), timeout=0.3)
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(30)
def test_client_rejects_a_foreign_protocol():
    a, b = socket.socketpair()

    def chatter():  # another firmware: prints its own lines, never m-ready
        try:
            while b.recv(100):
                b.sendall(b"Hello from blinky\r\n")
        except OSError:
            pass

    threading.Thread(target=chatter, daemon=True).start()
    try:
        with pytest.raises(DeviceError, match=r"name% within 0.5 s"):
            DutClient(SocketLink(a), timeout=0.5)
    finally:
        a.close()
        b.close()


def test_client_reports_a_dropped_link(device):
    link, _, _, dev = device
    c = DutClient(link, timeout=2)
    dev.close()
    with pytest.raises(DeviceError, match="dropped during name%"):
        for _ in range(5):
            c.name()


def test_log_lines_are_kept_aside_not_taken_for_replies():
    """A device may print its runtime's log as m-log-[...] (the TFLite Micro harness routes
    MicroPrintf there): the client keeps them in .log and reads the replies as usual."""
    host, dev = socket.socketpair()

    def serve():  # every name% (DutClient also sends one when it opens) gets log lines around the reply
        while True:
            try:
                data = dev.recv(4096)
            except OSError:
                return
            if not data:
                return
            for _ in range(data.count(b"%")):
                dev.sendall(b"m-log-[tflm: arena 4436 bytes]\r\nm-name-dut-[edgeslim]\r\n"
                            b"m-log-[second]\r\nm-ready\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        c = DutClient(SocketLink(host), timeout=5)
        c.log.clear()
        assert c.raw_command("name") == ["m-name-dut-[edgeslim]"] and c.name() == "edgeslim"
        assert c.log == ["tflm: arena 4436 bytes", "second"] * 2
    finally:
        host.close()
        dev.close()
