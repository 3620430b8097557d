"""The ``netspec`` command: check, summary (and, with checkpoints, compile and inspect)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from netspec.errors import NetspecError, SpecError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="netspec: write a network down once, check it, get PyTorch out.")

SpecArg = typer.Argument(..., help="a .net spec file", show_default=False)
BlockOpt = typer.Option(None, "--block", "-b", help="the block to build (default: the file's last)")
InputOpt = typer.Option(None, "--input", "-i", help='the input shape, e.g. "[2, 1, 28, 28]"')
SetOpt = typer.Option(None, "--set", "-s", help="a block argument, k=v (repeatable)")


def _block_args(pairs: Optional[List[str]]) -> dict[str, Any]:
    from netspec.api import parse_value
    from netspec.errors import Diagnostic

    args: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise SpecError([Diagnostic("argument error", f"--set {pair!r} is not k=v",
                                        hint="e.g. --set classes=100")])
        args[key.strip()] = parse_value(value.strip())
    return args


def _run(action: Callable[[], int | None]) -> None:
    """Run a command; report netspec's own errors without a traceback."""
    try:
        code = action()
    except NetspecError as exc:
        message = exc.render() if isinstance(exc, SpecError) else f"error: {exc}"
        typer.echo(message, err=True)
        count = len(exc.diagnostics) if isinstance(exc, SpecError) else 1
        if count > 1:
            typer.echo(f"{count} errors", err=True)
        raise typer.Exit(1)
    raise typer.Exit(code or 0)


@app.command()
def check(spec: Path = SpecArg, block: Optional[str] = BlockOpt, input: Optional[str] = InputOpt,
          set: Optional[List[str]] = SetOpt) -> None:
    """Parse and shape-check SPEC; print located errors and exit 1 if any."""
    def action() -> None:
        from netspec.api import analyze
        from netspec.dims import fmt_shape

        analysis = analyze(spec, block, input, **_block_args(set))
        ir = analysis.ir
        typer.echo(f"ok: {analysis.program.root}: {ir.cls_name} "
                   f"{fmt_shape(ir.in_shape)} -> {fmt_shape(ir.out_shape)}")
    _run(action)


@app.command()
def summary(spec: Path = SpecArg, block: Optional[str] = BlockOpt,
            input: Optional[str] = InputOpt, set: Optional[List[str]] = SetOpt,
            depth: int = typer.Option(-1, "--depth", "-d", help="deepest level shown (-1: all)"),
            ) -> None:
    """Print a table of SPEC's modules: path, layer, output shape, parameters."""
    def action() -> None:
        from rich.console import Console

        from netspec.api import analyze
        from netspec.summary import summary_table

        analysis = analyze(spec, block, input, **_block_args(set))
        Console().print(summary_table(analysis, depth=depth))
    _run(action)


def main() -> None:
    app(prog_name="netspec")


if __name__ == "__main__":
    sys.exit(main())
