"""Run the ``livecam`` command in a process of its own, forked from one that has imported livecam.

Each run is a new process with its own environment, arguments, standard output and error and
exit code, as ``python -m livecam.cli`` gives them, without the 0.4 s a new interpreter takes
to import livecam: a multiprocessing fork server imports it once and forks a process for each
run. The fork server is single-threaded, so nothing of the test process (its threads, its
captured output) is in the child. helpers.run_cli starts a whole interpreter instead.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["forked_cli", "livecam.cli"])


def _main(args: list[str], env: dict[str, str], out: str, err: str) -> None:
    """In the forked process: become ``python -m livecam.cli ARGS`` run with ``env``."""
    from livecam import cli

    os.environ.clear()
    os.environ.update(env)
    for path, fd in ((out, 1), (err, 2)):
        target = os.open(path, os.O_WRONLY)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = [cli.__file__, *args]
    # multiprocessing ends the process as the interpreter would: an int is the exit code,
    # anything else is written to stderr with exit code 1, an exception's traceback too.
    sys.exit(cli.main())


def run(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``livecam ARGS`` with exactly ``env`` as its environment; killed after ``timeout``."""
    with tempfile.TemporaryDirectory(prefix="livecam-cli-") as directory:
        out, err = Path(directory) / "stdout", Path(directory) / "stderr"
        out.touch()
        err.touch()
        process = _CONTEXT.Process(target=_main, args=(list(args), env, str(out), str(err)), name="livecam")
        process.start()
        try:
            process.join(timeout)
            if process.exitcode is None:
                process.kill()
                process.join(5)
                raise subprocess.TimeoutExpired(["livecam", *args], timeout)
            code = process.exitcode
        finally:
            process.close()
        return subprocess.CompletedProcess(["livecam", *args], code, out.read_text(), err.read_text())
