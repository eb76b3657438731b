"""Start livecam's programs (the ``livecam`` command, gunicorn) as processes forked from a fork
server that has imported them already.

Each is a new process with its own arguments, environment, working directory, standard output
and error, signals and exit code, as ``python -m livecam.cli`` or ``python -m gunicorn`` give
them, without the 0.4 s a new interpreter takes to import livecam, gunicorn and Flask: a
multiprocessing fork server imports them once and forks a process for each start. The fork
server is single-threaded and holds nothing of the test process (its threads, its sockets, its
captured output). Whoever needs a whole interpreter (a constant shortened at import, see
tests/shortened.py) starts one.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from multiprocessing import reduction
from pathlib import Path
from typing import Any, BinaryIO

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["forked", "livecam.cli", "livecam.worker", "gunicorn.app.wsgiapp"])


Output = str | int  # a file the output is appended to, or a descriptor (a pipe's end) it goes to


class _Descriptor:
    """A file descriptor handed to the forked process (multiprocessing sends it along)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, ...]:
        return _received, (reduction.DupFd(self.fd),)


def _received(duplicate: Any) -> int:
    """In the forked process: the descriptor multiprocessing passed."""
    return duplicate.detach()


def _become(argv0: str, args: list[str], env: dict[str, str], cwd: str, out: Output, err: Output) -> None:
    """In the forked process: the arguments, environment, directory and output of a new one."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    targets = []
    for output, fd in ((out, 1), (err, 2)):
        targets.append(os.open(output, os.O_WRONLY | os.O_APPEND) if isinstance(output, str) else output)
        os.dup2(targets[-1], fd)
    for target in set(targets):
        os.close(target)
    sys.argv = [argv0, *args]
    # multiprocessing ends the process as the interpreter would: an int is the exit code,
    # anything else is written to stderr with exit code 1, an exception's traceback too
    # (after a line naming the process).


def _livecam(args: list[str], env: dict[str, str], cwd: str, out: Output, err: Output) -> None:
    """In the forked process: ``python -m livecam.cli ARGS``."""
    from livecam import cli

    _become(cli.__file__, args, env, cwd, out, err)
    sys.exit(cli.main())


def _gunicorn(args: list[str], env: dict[str, str], cwd: str, out: Output, err: Output) -> None:
    """In the forked process: ``python -m gunicorn ARGS``."""
    from gunicorn.app.wsgiapp import run

    _become("gunicorn", args, env, cwd, out, err)
    sys.path.insert(0, cwd)  # as python -m has it
    run(prog="gunicorn")


class Forked:
    """A forked process, with the part of subprocess.Popen's interface the tests use."""

    def __init__(self, command: str, target: Callable[..., None], *args: Any) -> None:
        # Daemonic: should a test leave one running, the test process's exit ends it (SIGTERM)
        # rather than waiting for it.
        self._process = _CONTEXT.Process(target=target, args=args, name=command, daemon=True)
        self._process.start()
        self.pid: int = self._process.pid
        self.args = command
        self.stdout: BinaryIO | None = None

    @property
    def returncode(self) -> int | None:
        """The exit code, or minus the signal that ended it; None while it runs."""
        return self._process.exitcode

    def poll(self) -> int | None:
        """The exit code once it has ended, else None."""
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        """The exit code once it ends; subprocess.TimeoutExpired after ``timeout`` seconds."""
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self._process.exitcode

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` unless it has ended (its PID may be another's by then)."""
        if self._process.exitcode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)


def gunicorn(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> Forked:
    """``python -m gunicorn ARGS`` in ``cwd`` with exactly ``env``, its output appended to ``log``."""
    return Forked(" ".join(["gunicorn", *args]), _gunicorn, args, env, str(cwd), str(log), str(log))


def livecam_process(args: list[str], env: dict[str, str], cwd: Path, output: Path | None = None) -> Forked:
    """``python -m livecam.cli ARGS`` in ``cwd`` with exactly ``env``; its standard output and
    error appended to ``output``, or else to one pipe read from ``stdout`` (as Popen's
    stdout=PIPE, stderr=STDOUT give)."""
    command = " ".join(["livecam", *args])
    if output is not None:
        return Forked(command, _livecam, args, env, str(cwd), str(output), str(output))
    read, write = os.pipe()
    try:
        pipe = _Descriptor(write)
        process = Forked(command, _livecam, args, env, str(cwd), pipe, pipe)
    except BaseException:
        os.close(read)
        raise
    finally:
        os.close(write)
    process.stdout = open(read, "rb")  # noqa: SIM115 - closed by whoever stops the process
    return process


def livecam(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``livecam ARGS`` in ``cwd`` (this one's by default) with exactly ``env`` as its
    environment; killed after ``timeout``."""
    with tempfile.TemporaryDirectory(prefix="livecam-cli-") as directory:
        out, err = Path(directory) / "stdout", Path(directory) / "stderr"
        out.touch()
        err.touch()
        command = " ".join(["livecam", *args])
        process = Forked(command, _livecam, list(args), env, str(cwd or os.getcwd()), str(out), str(err))
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            raise
        return subprocess.CompletedProcess(["livecam", *args], code, out.read_text(), err.read_text())
