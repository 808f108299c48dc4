"""The device side of the MLPerf Tiny device-under-test protocol, in pure Python.

One engine, two users: the tests (a device without a device) and the Raspberry Pi
agent, which embeds this file's source verbatim through its Jinja template (the
agent is a standalone script: it must not import edgeslim). So this module uses
the standard library only, and everything below the marker is copied.

The engine is transport-free: bytes go in through :meth:`DutEngine.feed`, reply
lines (without ``\\r\\n``) come out. Commands and replies are specified in
docs/protocol.md; the upstream command set is summarised in
../shared/notes/mlperf-tiny-protocol.md.
"""

# --- edgeslim dut engine (copied into the Raspberry Pi agent) ---

PROTOCOL_VERSION = 1
#: A command, its terminating '%' included, is at most this many characters.
MAX_COMMAND = 80


class DutEngine:
    """Parses commands, keeps the input buffer and the last results, answers.

    ``infer(data: bytes) -> (raw_output: bytes, values: list[float])`` runs the
    model once on the input tensor's bytes; ``clock_us() -> int`` is the
    device's microsecond clock. ``info`` holds the fields of ``info%``
    (``sha256``, ``arena``, ``clock``, ``counter``).
    """

    def __init__(self, *, name, profile, model, input_bytes, infer, clock_us, info):
        self.name = name
        self.profile = profile
        self.model = model
        self.input_bytes = int(input_bytes)
        self.infer = infer
        self.clock_us = clock_us
        self.info = dict(info)
        self.buffer = bytearray()
        self.expected = 0
        self.raw = None
        self.values = None
        self._line = bytearray()
        self._discarding = False  # after an over-long line: drop bytes up to the next '%'
        self._in_garbage = False  # inside a run of non-ASCII bytes (one error per run)

    def boot(self):
        """What the reference firmware prints at power-up."""
        return ["m-timestamp-mode-performance", "m-lap-us-%d" % self.clock_us(), "m-init-done", "m-ready"]

    def feed(self, data):
        """Consume received bytes; return the reply lines of every command they completed."""
        out = []
        for b in bytes(data):
            if b in (0x0A, 0x0D):  # line endings a terminal adds: not part of the protocol
                continue
            if b < 0x20 or b > 0x7E:
                if not self._in_garbage:
                    out += ["e-[Invalid byte 0x%02x in command; discarded]" % b, "m-ready"]
                self._in_garbage = True
                self._line = bytearray()
                self._discarding = False
                continue
            self._in_garbage = False
            if self._discarding:
                if b == 0x25:
                    self._discarding = False
                continue
            if b == 0x25:  # '%'
                out += self.command(self._line.decode("ascii"))
                self._line = bytearray()
                continue
            self._line.append(b)
            if len(self._line) >= MAX_COMMAND:
                out += ["e-[Command too long: more than %d characters with the %%]" % MAX_COMMAND, "m-ready"]
                self._line = bytearray()
                self._discarding = True
        return out

    def command(self, line):
        """Answer one command (without its '%'); the last line is always ``m-ready``."""
        words = line.split()
        try:
            replies = self._dispatch(words) if words else []
        except ValueError as exc:
            replies = ["e-[%s]" % exc]
        return replies + ["m-ready"]

    def _dispatch(self, words):
        cmd, args = words[0], words[1:]
        if cmd == "name" and not args:
            return ["m-name-dut-[%s]" % self.name]
        if cmd == "profile" and not args:
            return ["m-profile-[%s]" % self.profile, "m-model-[%s]" % self.model]
        if cmd == "timestamp" and not args:
            return ["m-lap-us-%d" % self.clock_us()]
        if cmd == "info" and not args:
            fields = dict(self.info, protocol=PROTOCOL_VERSION, input=self.input_bytes)
            return ["m-info-[%s]" % ",".join("%s=%s" % kv for kv in fields.items())]
        if cmd == "db":
            return self._db(args)
        if cmd == "infer" and len(args) <= 2:
            n = _count(args[0], "infer N") if args else 1
            w = _count(args[1], "infer W", zero=True) if len(args) > 1 else 10
            return self._infer(n, w)
        if cmd == "results" and not args:
            return [self._results()]
        if cmd == "results" and args == ["hex"]:
            self._results()
            return ["m-results-hex-[%s]" % self.raw.hex()]
        raise ValueError("Unknown command: %s" % " ".join(words))

    def _db(self, args):
        if args[:1] == ["load"] and len(args) == 2:
            n = _count(args[1], "db load N")
            if n != self.input_bytes:
                raise ValueError("db load %d: the model's input is %d bytes" % (n, self.input_bytes))
            self.buffer, self.expected = bytearray(), n
            return ["m-[Expecting %d bytes]" % n]
        if args == ["print"]:
            data = bytes(self.buffer)
            return ["m-buffer-" + "-".join("%02x" % b for b in data[i:i + 8]) for i in range(0, len(data), 8)]
        if len(args) != 1:
            raise ValueError("Unknown command: db %s" % " ".join(args))
        digits = args[0]
        if len(digits) % 2:
            raise ValueError("Insufficent number of hex digits")
        chunk = bytearray()
        for i in range(0, len(digits), 2):
            pair = digits[i:i + 2]
            if any(c not in "0123456789abcdefABCDEF" for c in pair):
                raise ValueError("Invalid hex digit '%s'" % pair)
            chunk.append(int(pair, 16))
        if len(self.buffer) + len(chunk) > self.expected:
            raise ValueError("Too many bytes: expecting %d more" % (self.expected - len(self.buffer)))
        self.buffer += chunk
        return ["m-load-done"] if len(self.buffer) == self.expected else []

    def _infer(self, n, w):
        if self.expected == 0 or len(self.buffer) != self.expected:
            raise ValueError("No input loaded: send db load %d and the data first" % self.input_bytes)
        data = bytes(self.buffer)
        lines = ["m-warmup-start-%d" % w]
        for _ in range(w):
            self.infer(data)
        lines += ["m-warmup-done", "m-infer-start-%d" % n]
        t0 = self.clock_us()
        for _ in range(n):
            raw, values = self.infer(data)
        t1 = self.clock_us()
        self.raw, self.values = bytes(raw), list(values)
        return lines + ["m-lap-us-%d" % t0, "m-lap-us-%d" % t1, "m-infer-done", self._results()]

    def _results(self):
        if self.values is None:
            raise ValueError("No results: run infer first")
        return "m-results-[%s]" % ",".join("%.3f" % v for v in self.values)


def _count(word, what, zero=False):
    try:
        n = int(word, 10)
    except ValueError:
        raise ValueError("%s: '%s' is not a number" % (what, word)) from None
    if n < (0 if zero else 1):
        raise ValueError("%s must be %s" % (what, ">= 0" if zero else "> 0"))
    return n
