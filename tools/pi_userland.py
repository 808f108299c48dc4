"""A Raspberry Pi OS-like userland on this x86 machine: Debian bookworm arm64 under qemu-user.

Raspberry Pi OS (bookworm, 64-bit) is Debian bookworm arm64 with Python 3.11. This tool builds
that userland with `debootstrap --arch=arm64`, runs its programs through qemu-user
(`qemu-aarch64-static`, registered with binfmt_misc), and installs and runs a Pi bundle in it
the way its README says: the bundle copied to `~/edgeslim/<ident>/`, `./install.sh` as the
user `pi` (pip reaching PyPI), then `venv/bin/python agent.py ...`.

The emulation settings (measured, issue 16):
- `/proc/cpuinfo` under qemu-user is the host's (x86) and LiteRT's Interpreter crashes
  (SIGSEGV) reading it: an arm one (a Pi 4's Cortex-A72, part 0xd08; a Pi 5's Cortex-A76,
  part 0xd0b) is bind-mounted over it;
- QEMU's default CPU (`max`) has SME, which no Pi has, and XNNPACK then computes wrong
  outputs: `QEMU_CPU=cortex-a72` (rpi4) or `cortex-a76` (rpi5) is set for every program;
- binfmt_misc registers qemu-aarch64 with the flags OCPF (C: `sudo` inside works).

Each run happens in a private mount namespace (`unshare -m`): /proc, /dev, /sys, the cpuinfo,
the host's DNS settings and CA certificates (pip behind a TLS-intercepting proxy needs its CA),
a fresh /tmp and the user's home (a host folder) are mounted there and vanish with the
namespace, even when the run is killed. The cached tree is never written by a run.

Cache: `${EDGESLIM_PI_USERLAND_DIR:-~/.cache/edgeslim/pi-userland/bookworm-arm64}`; a finished
build has `complete.json` (written last, with the recipe's stamp); a changed stamp rebuilds.
Needs root (debootstrap, chroot, mounts) and the Debian packages debootstrap and
qemu-user-static (tools/setup.sh installs them; it does not build the userland).

    python tools/pi_userland.py build                  # ~6 min the first time, then cached
    python tools/pi_userland.py status
    python tools/pi_userland.py install BUNDLE --home DIR [--board rpi5] [--runtime tflite-runtime]
    python tools/pi_userland.py run --home DIR [--board rpi5] [--cwd PATH] -- COMMAND ...

`install` copies BUNDLE to DIR/edgeslim/<ident>/ (DIR is /home/pi inside) and runs
`./install.sh`; then `run --home DIR --cwd edgeslim/<ident> -- venv/bin/python agent.py info`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

SUITE = "bookworm"
ARCH = "arm64"
MIRROR = os.environ.get("EDGESLIM_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What a Pi image has that a minimal Debian lacks, for the bundle's README: python3 with
# venv and pip, certificates for PyPI, sudo for `install.sh --service`.
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "sudo")
USER, UID = "pi", 1000
# Changing the recipe (suite, packages, user, layout) changes the stamp: the cache rebuilds.
STAMP = f"1 {SUITE} {ARCH} minbase {' '.join(PACKAGES)} user={USER}:{UID}"

QEMU = "/usr/bin/qemu-aarch64-static"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_NAME = "qemu-aarch64"
# The ELF header of an aarch64 executable (e_ident and e_machine 183), as Debian's
# qemu-user-static registers it (/usr/share/binfmts/qemu-aarch64).
BINFMT_MAGIC = r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
BINFMT_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"

# The boards: QEMU's CPU model and the /proc/cpuinfo a Pi of that kind shows (arm64 kernel).
BOARDS = {
    "rpi4": {"qemu_cpu": "cortex-a72", "part": "0xd08", "variant": "0x0", "revision": "3",
             "features": "fp asimd evtstrm crc32 cpuid",
             "hardware": "BCM2835", "board_revision": "c03111", "model": "Raspberry Pi 4 Model B Rev 1.1"},
    "rpi5": {"qemu_cpu": "cortex-a76", "part": "0xd0b", "variant": "0x4", "revision": "1",
             "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                         "asimdrdm lrcpc dcpop asimddp",
             "hardware": "BCM2712", "board_revision": "d04170", "model": "Raspberry Pi 5 Model B Rev 1.0"},
}
BOARDS["rpi"] = BOARDS["rpi4"]  # the `rpi` target profile is a Pi 4


class UserlandError(RuntimeError):
    """The userland cannot be built or entered here (what failed, and what to do)."""


def cache_dir() -> Path:
    env = os.environ.get("EDGESLIM_PI_USERLAND_DIR")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgeslim" / "pi-userland" / f"{SUITE}-{ARCH}"


def cpuinfo_text(board: str) -> str:
    b = BOARDS[board]
    cores = "".join(
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {b['features']}\n"
        f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {b['variant']}\n"
        f"CPU part\t: {b['part']}\nCPU revision\t: {b['revision']}\n\n" for i in range(4))
    return (cores + f"Hardware\t: {b['hardware']}\nRevision\t: {b['board_revision']}\n"
            f"Serial\t\t: 100000000edge51e\nModel\t\t: {b['model']}\n")


def _log(msg: str) -> None:
    print(f"[pi_userland] {msg}", file=sys.stderr, flush=True)


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise UserlandError(f"{what} needs root (debootstrap, chroot and mounts): run it with sudo")


def _need_tools() -> None:
    missing = [t for t in ("debootstrap", "unshare", "chroot") if not shutil.which(t)]
    if not Path(QEMU).exists():
        missing.append(QEMU)
    if missing:
        raise UserlandError(f"missing {', '.join(missing)}: install the Debian packages debootstrap and "
                            "qemu-user-static (tools/setup.sh does)")


def binfmt_state() -> dict | None:
    """The kernel's qemu-aarch64 entry ({"enabled", "interpreter", "flags"}), None if absent."""
    entry = BINFMT_DIR / BINFMT_NAME
    if not entry.exists():
        return None
    state = {"enabled": False, "interpreter": "", "flags": ""}
    for line in entry.read_text().splitlines():
        if line in ("enabled", "disabled"):
            state["enabled"] = line == "enabled"
        elif line.startswith("interpreter "):
            state["interpreter"] = line.split(" ", 1)[1]
        elif line.startswith("flags: "):
            state["flags"] = line.split(": ", 1)[1]
    return state


def ensure_binfmt() -> dict:
    """aarch64 ELF files run by qemu-aarch64-static, with the flags OCPF: F (the interpreter is
    opened now, so it need not exist inside the chroot), C (credentials from the binary:
    setuid `sudo` works), P (argv[0] kept), O (the binary is passed open)."""
    _need_root("registering qemu-aarch64 with binfmt_misc")
    if not (BINFMT_DIR / "register").exists():
        r = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise UserlandError(f"cannot mount binfmt_misc on {BINFMT_DIR}: {r.stderr.strip()} "
                                "(a container needs CAP_SYS_ADMIN, or register qemu-aarch64 on its host)")
    state = binfmt_state()
    if state and state["enabled"] and set("OCPF") <= set(state["flags"]):
        return state
    if state:  # registered without the credentials flag (Debian's default is PF): re-register
        (BINFMT_DIR / BINFMT_NAME).write_text("-1")
    # P needs an interpreter that knows argv[0] is passed (Debian's *-binfmt-P link to QEMU).
    interp = "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
    if not Path(interp).exists():
        interp = QEMU
    (BINFMT_DIR / "register").write_text(
        f":{BINFMT_NAME}:M:0:{BINFMT_MAGIC}:{BINFMT_MASK}:{interp}:OCPF")
    state = binfmt_state()
    if not state or not state["enabled"]:
        raise UserlandError("registering qemu-aarch64 with binfmt_misc failed")
    return state


def is_built(path: Path | None = None) -> bool:
    path = path or cache_dir()
    try:
        return json.loads((path / "complete.json").read_text()).get("stamp") == STAMP
    except (OSError, ValueError):
        return False


def _run(cmd: list[str], **kw) -> None:
    _log("$ " + " ".join(shlex.quote(c) for c in cmd))
    r = subprocess.run(cmd, **kw)
    if r.returncode != 0:
        raise UserlandError(f"{cmd[0]} failed (exit {r.returncode}): {' '.join(cmd)}")


def build(*, force: bool = False) -> Path:
    """Builds the userland into the cache (unless it is there with the same stamp); returns it.

    The tree is made in a sibling folder and renamed into place after `complete.json`, so a
    half-built tree (interrupted, failed) is never used; the next build starts it afresh."""
    final = cache_dir()
    if is_built(final) and not force:
        return final
    _need_root("building the userland")
    _need_tools()
    ensure_binfmt()
    final.parent.mkdir(parents=True, exist_ok=True)
    # One build at a time (a test run and a user's build): the second waits, then finds it built.
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(final) and not force:
            return final
        return _build(final)


def _build(final: Path) -> Path:
    work = final.parent / f".{final.name}.building-{os.getpid()}"
    for stale in final.parent.glob(f".{final.name}.*"):
        if stale.is_dir():  # an interrupted build's folder (the lock file stays)
            shutil.rmtree(stale, ignore_errors=True)
    root = work / "root"
    root.mkdir(parents=True)
    t0 = time.monotonic()
    try:
        # Both debootstrap stages (the second runs arm64 binaries through binfmt); its own
        # /proc and /sys mounts stay in the private namespace.
        _run(["unshare", "-m", "--propagation", "private", "debootstrap", "--arch", ARCH,
              "--variant", "minbase", "--include", ",".join(PACKAGES), SUITE, str(root), MIRROR])
        t_boot = time.monotonic() - t0
        setup = (f"useradd -m -u {UID} -s /bin/bash {USER} && "
                 f"echo '{USER} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/010_{USER}-nopasswd && "
                 f"chmod 0440 /etc/sudoers.d/010_{USER}-nopasswd && apt-get clean && "
                 "python3 -c 'import ensurepip, venv' && python3 --version")
        _run(["unshare", "-m", "--propagation", "private", "chroot", str(root), "/bin/sh", "-c", setup],
             env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "QEMU_CPU": BOARDS["rpi4"]["qemu_cpu"],
                  "LANG": "C.UTF-8"})
        for board in ("rpi4", "rpi5"):
            (work / f"cpuinfo-{board}").write_text(cpuinfo_text(board))
        (work / "pip-cache").mkdir()
        os.chown(work / "pip-cache", UID, UID)
        size = int(subprocess.run(["du", "-sb", str(root)], capture_output=True, text=True).stdout.split()[0])
        (work / "complete.json").write_text(json.dumps(
            {"stamp": STAMP, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "seconds": round(time.monotonic() - t0, 1), "debootstrap_seconds": round(t_boot, 1),
             "bytes": size, "mirror": MIRROR}, indent=1) + "\n")
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            final.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _log(f"built {final} in {time.monotonic() - t0:.0f} s")
    return final


def _enter_argv(ul: Path, board: str, home: Path, cwd: str, cmd: list[str], env: dict | None) -> list[str]:
    """The command line that runs `cmd` as the user pi inside the userland, in a private
    mount namespace whose mounts disappear with it."""
    root = ul / "root"
    b = BOARDS[board]
    user_env = {"HOME": f"/home/{USER}", "USER": USER, "LOGNAME": USER, "LANG": "C.UTF-8",
                "PATH": "/usr/local/bin:/usr/bin:/bin", "QEMU_CPU": b["qemu_cpu"],
                "PIP_CACHE_DIR": "/var/cache/edgeslim-pip"}
    for key in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                "PIP_INDEX_URL"):
        if os.environ.get(key):
            user_env[key] = os.environ[key]
    user_env.update(env or {})
    r = shlex.quote(str(root))
    certs = "/etc/ssl/certs/ca-certificates.crt"
    script = "\n".join([
        "set -e",
        f"mount -t proc proc {r}/proc",
        f"mount --bind {shlex.quote(str(ul / f'cpuinfo-{board}'))} {r}/proc/cpuinfo",
        f"mount --rbind /dev {r}/dev",
        f"mount --rbind /sys {r}/sys",
        f"mount -t tmpfs -o mode=1777 tmpfs {r}/tmp",
        f"mount --bind {shlex.quote(str(home))} {r}/home/{USER}",
        f"mkdir -p {r}/var/cache/edgeslim-pip",
        f"mount --bind {shlex.quote(str(ul / 'pip-cache'))} {r}/var/cache/edgeslim-pip",
        f"mount --bind /etc/resolv.conf {r}/etc/resolv.conf",
        f"if [ -f {certs} ]; then mount --bind -o ro {certs} {r}{certs}; fi",
        f"cd {r}",  # chroot --userspec then cds to the working folder inside
        'exec chroot --userspec=' + f"{USER}:{USER} {r} /usr/bin/env -i "
        + " ".join(shlex.quote(f"{k}={v}") for k, v in user_env.items())
        + f" /bin/sh -c 'cd \"$0\" && exec \"$@\"' {shlex.quote(cwd)} "
        + " ".join(shlex.quote(c) for c in cmd),
    ])
    return ["unshare", "-m", "--propagation", "private", "/bin/sh", "-c", script]


class Userland:
    """A built userland: runs commands in it as the user pi, with a host folder as home."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path or cache_dir())
        if not is_built(self.path):
            raise UserlandError(f"no userland at {self.path}: build it with `python tools/pi_userland.py build`")
        _need_root("running the userland")
        _need_tools()
        ensure_binfmt()

    @staticmethod
    def prepare_home(home: Path) -> Path:
        home = Path(home).resolve()
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, UID, UID)
        return home

    def argv(self, cmd: list[str], *, home: Path, board: str = "rpi4", cwd: str = ".",
             env: dict | None = None) -> list[str]:
        if board not in BOARDS:
            raise UserlandError(f"unknown board {board!r}: one of {', '.join(sorted(BOARDS))}")
        inner = cwd if cwd.startswith("/") else f"/home/{USER}/{cwd}"
        return _enter_argv(self.path, board, self.prepare_home(home), inner, list(cmd), env)

    def run(self, cmd: list[str], *, home: Path, board: str = "rpi4", cwd: str = ".",
            env: dict | None = None, timeout: float = 600, capture: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Runs cmd to its end; the whole process group is killed on timeout."""
        proc = self.popen(cmd, home=home, board=board, cwd=cwd, env=env, capture=capture,
                          stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        try:
            out, err = proc.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            raise UserlandError(f"timed out after {timeout:.0f} s in the userland: {' '.join(cmd)}")
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def popen(self, cmd: list[str], *, home: Path, board: str = "rpi4", cwd: str = ".",
              env: dict | None = None, capture: bool = True, **kw) -> subprocess.Popen:
        """Starts cmd in its own process group (stop() ends it and its mounts)."""
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE} if capture else {}
        pipes.update(kw)
        return subprocess.Popen(self.argv(cmd, home=home, board=board, cwd=cwd, env=env),
                                text=True, start_new_session=True, **pipes)

    @contextlib.contextmanager
    def serving(self, folder: str, *, home: Path, board: str = "rpi4", timeout: float = 180):
        """`venv/bin/python agent.py serve --tcp 0` in the installed bundle at ``folder``
        (relative to the home); yields the TCP port on 127.0.0.1 it listens on (the
        userland shares the host's network). The agent is stopped on exit."""
        proc = self.popen(["venv/bin/python", "agent.py", "serve", "--tcp", "0"], home=home,
                          board=board, cwd=folder, stderr=subprocess.STDOUT)
        try:
            deadline, seen = time.monotonic() + timeout, []
            fd = proc.stdout.fileno()
            port = None
            while port is None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], min(left, 1.0))[0]:
                    if left <= 0 or proc.poll() is not None:
                        raise UserlandError(f"the agent did not start serving ({board}): {''.join(seen)[-2000:]}")
                    continue
                line = proc.stdout.readline()
                if not line:
                    raise UserlandError(f"the agent exited ({board}): {''.join(seen)[-2000:]}")
                seen.append(line)
                m = re.search(r"serving tcp 127\.0\.0\.1:(\d+)", line)
                if m:
                    port = int(m.group(1))
            yield port
        finally:
            stop(proc)

    def install(self, bundle: Path, *, home: Path, board: str = "rpi4", runtime: str | None = None,
                timeout: float = 900) -> tuple[str, subprocess.CompletedProcess]:
        """As the bundle's README says: the bundle copied to ~/edgeslim/<ident>/, then
        `./install.sh` there. Returns (the folder relative to the home, install.sh's result)."""
        bundle = Path(bundle)
        rel = bundle_folder(bundle)
        dest = self.prepare_home(home) / rel
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(bundle, dest, symlinks=True)
        for p in [dest, *dest.rglob("*")]:
            os.lchown(p, UID, UID)
        for parent in (dest.parent,):
            os.chown(parent, UID, UID)
        env = {"EDGESLIM_RUNTIME": runtime} if runtime else None
        return rel, self.run(["./install.sh"], home=home, board=board, cwd=rel, env=env, timeout=timeout)


def bundle_folder(bundle: Path) -> str:
    """Where the bundle's README puts it on the Pi, relative to the home: edgeslim/<ident>
    (install.sh's default INSTALL_DIR)."""
    try:
        text = (Path(bundle) / "install.sh").read_text()
    except OSError as exc:
        raise UserlandError(f"{bundle} is not a Raspberry Pi bundle (no install.sh): {exc}") from None
    m = re.search(r'INSTALL_DIR=\$\{INSTALL_DIR:-\$HOME/(edgeslim/[A-Za-z0-9_]+)\}', text)
    if not m:
        raise UserlandError(f"{bundle}/install.sh has no default INSTALL_DIR under $HOME/edgeslim")
    return m.group(1)


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Ends a process started by Userland.popen and everything it started."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout)
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream:
            stream.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the userland into the cache (nothing if it is there)")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    sub.add_parser("status", help="where the cache is, and whether it is built")
    i = sub.add_parser("install", help="copy a Pi bundle to HOME/edgeslim/<ident>/ and run ./install.sh")
    i.add_argument("bundle", type=Path)
    i.add_argument("--home", type=Path, required=True, help="host folder mounted as /home/pi")
    i.add_argument("--board", default="rpi4", choices=sorted(BOARDS))
    i.add_argument("--runtime", choices=["ai-edge-litert", "tflite-runtime"],
                   help="install.sh's runtime (EDGESLIM_RUNTIME); default: its own choice")
    r = sub.add_parser("run", help="run a command as pi in the userland")
    r.add_argument("--home", type=Path, required=True, help="host folder mounted as /home/pi")
    r.add_argument("--board", default="rpi4", choices=sorted(BOARDS))
    r.add_argument("--cwd", default=".", help="working folder, relative to the home")
    r.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "build":
            print(build(force=args.force))
        elif args.cmd == "status":
            path = cache_dir()
            info = json.loads((path / "complete.json").read_text()) if is_built(path) else None
            print(json.dumps({"path": str(path), "built": info is not None, "info": info,
                              "binfmt": binfmt_state() if BINFMT_DIR.exists() else None}, indent=1))
            return 0 if info else 1
        elif args.cmd == "install":
            rel, res = Userland().install(args.bundle, home=args.home, board=args.board, runtime=args.runtime)
            sys.stdout.write(res.stdout)
            sys.stderr.write(res.stderr)
            if res.returncode == 0:
                print(f"installed in {args.home / rel}")
            return res.returncode
        elif args.cmd == "run":
            cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
            if not cmd:
                ap.error("run: give the command after --")
            proc = Userland().popen(cmd, home=args.home, board=args.board, cwd=args.cwd, capture=False)
            try:
                return proc.wait()
            except KeyboardInterrupt:
                stop(proc)
                return 130
    except UserlandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
