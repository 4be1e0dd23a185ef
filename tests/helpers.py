"""Running the command line in this process, as ``purejaxppo ...`` would, with its output captured."""

import contextlib
import io
from typing import NamedTuple

from purejaxppo.cli import main


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def run_main(*args: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # --help
            code = e.code
    return Result(code, out.getvalue(), err.getvalue())
