"""The ``edgesent`` command line: a thin shell over the Python API.

Commands live in small modules and are imported only when invoked (click's lazy-group pattern),
so ``edgesent predict`` never pays for torch. Errors are turned into one line in one place.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import types
from typing import Any

import click

from edgesent import __version__
from edgesent.errors import EdgesentError


# command name -> "module:attribute"
_COMMANDS = {
    "finetune": "edgesent.cli.train:finetune",
    "evaluate": "edgesent.cli.train:evaluate",
    "export": "edgesent.cli.export:export",
    "parity": "edgesent.cli.export:parity",
    "predict": "edgesent.cli.predict:predict",
    "bench": "edgesent.cli.bench:bench",
    "prune": "edgesent.cli.prune:prune",
    "serve": "edgesent.cli.serve:serve",
    "search-report": "edgesent.cli.train:search_report",
}


def is_main_process() -> bool:
    """False on ranks other than 0 of a torchrun/accelerate launch, which print neither results nor errors."""
    return os.environ.get("RANK", "0") == "0"


class _UserFacingError(click.ClickException):
    def __init__(self, err: EdgesentError) -> None:
        super().__init__(str(err))
        self.exit_code = err.exit_code


class EdgesentGroup(click.Group):
    """Loads commands on demand and turns every EdgesentError into ``Error: ...`` + its exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgesentError as err:
            if not is_main_process():  # under torchrun every rank fails alike; rank 0 says it once
                raise SystemExit(err.exit_code) from err
            raise _UserFacingError(err) from err
        except BrokenPipeError:  # `edgesent predict ... | head`: click ends quietly
            raise
        except OSError as err:  # the machine's answer (disk full, a read-only or vanished path): one line, not a trace
            logging.getLogger(__name__).debug("operating system error", exc_info=True)
            if not is_main_process():
                raise SystemExit(1) from err
            where = f" ({err.filename})" if err.filename else ""
            raise _UserFacingError(EdgesentError(f"{err.strerror or err}{where}")) from err


@click.group(cls=EdgesentGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgesent")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """edgesent: fine-tune a small encoder, export verified int8 ONNX, predict and benchmark on the edge."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _exit_on_sigterm(signum: int, frame: types.FrameType | None) -> None:
    """SIGTERM (timeout, container stop, CI cancel) unwinds like Ctrl-C, so temporary outputs are removed."""
    raise SystemExit(128 + signum)


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    cli(prog_name="edgesent")
