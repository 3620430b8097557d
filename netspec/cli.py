"""The ``netspec`` command: check, summary (and, with checkpoints, compile and inspect)."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

from netspec.errors import Diagnostic, NetspecError, SpecError, render
from netspec.gc_pause import paused

with paused(promote=True):
    import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


def _print_version(wanted: bool) -> None:
    if wanted:
        from netspec import __version__

        typer.echo(f"netspec {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version,
                                          is_eager=True, help="Print netspec's version and exit.")
             ) -> None:
    """netspec: write a network down once, check it, get PyTorch out."""


SpecArg = typer.Argument(..., help="a .net spec file", show_default=False)
BlockOpt = typer.Option(None, "--block", "-b", help="the block to build (default: the file's last)")
InputOpt = typer.Option(None, "--input", "-i", help='the input shape, e.g. "[2, 1, 28, 28]"')
SetOpt = typer.Option(None, "--set", "-s", help="a block argument, k=v (repeatable)")


def _block_args(pairs: Optional[List[str]]) -> dict[str, Any]:
    from netspec.api import parse_value

    args: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise SpecError([Diagnostic("argument error", f"--set {pair!r} is not k=v",
                                        hint="e.g. --set classes=100")])
        args[key.strip()] = parse_value(value.strip())
    return args


def _print_tables(*tables: Any) -> None:
    """Print rich tables: fitted to a terminal, at their full width into a pipe or a file
    (rich would wrap every row at 80 columns there, splitting shapes over lines)."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console.width = 10_000      # a table is as wide as its columns, not the console
    for t in tables:
        console.print(t)


def _print_notes(analysis: Any) -> None:
    """A check's notes on stderr, where they do not mix with a table or JSON on stdout."""
    notes = analysis.notes          # computed on each access: the search for counterexamples
    if notes:
        typer.echo(render(notes, analysis.sources), err=True)


def _report(exc: NetspecError) -> None:
    """Print one of netspec's own errors on stderr, with the count of a spec's errors."""
    message = exc.render() if isinstance(exc, SpecError) else f"error: {exc}"
    typer.echo(message, err=True)
    count = len(exc.diagnostics) if isinstance(exc, SpecError) else 1
    if count > 1:
        typer.echo(f"{count} errors", err=True)


def _run(action: Callable[[], int | None], error_status: int = 1) -> None:
    """Run a command; report netspec's own errors without a traceback."""
    try:
        code = action()
    except NetspecError as exc:
        _report(exc)
        raise typer.Exit(error_status)
    raise typer.Exit(code or 0)


@app.command()
def check(specs: List[Path] = typer.Argument(..., help=".net spec files, or folders of them",
                                             show_default=False),
          block: Optional[str] = BlockOpt, input: Optional[str] = InputOpt,
          set: Optional[List[str]] = SetOpt) -> None:
    """Parse and shape-check SPECS; print located errors and exit 1 if any."""
    def action() -> int:
        from netspec.api import analyze, check_init_rules
        from netspec.dims import fmt_shape
        from netspec.program import spec_files

        args = _block_args(set)
        files = spec_files(specs)
        if not files:
            raise SpecError([Diagnostic("file error", "no .net files in " +
                                        ", ".join(map(str, specs)))])
        failed = 0
        for spec in files:           # each spec is checked and reported, whatever the others do
            try:
                analysis = analyze(spec, block, input, args=args)
                check_init_rules(analysis)
            except NetspecError as exc:
                _report(exc)
                failed += 1
                continue
            ir = analysis.ir
            typer.echo(f"ok: {analysis.program.root}: {ir.cls_name} "
                       f"{fmt_shape(ir.in_shape)} -> {fmt_shape(ir.out_shape)}")
            _print_notes(analysis)
        if failed and len(files) > 1:
            typer.echo(f"{failed} of {len(files)} specs have errors", err=True)
        return 1 if failed else 0
    _run(action)


@app.command()
def summary(spec: Path = SpecArg, block: Optional[str] = BlockOpt,
            input: Optional[str] = InputOpt, set: Optional[List[str]] = SetOpt,
            depth: int = typer.Option(-1, "--depth", "-d", help="deepest level shown (-1: all)"),
            init: bool = typer.Option(False, "--init", help="show the init rule of every parameter"),
            format: str = typer.Option("text", "--format", "-f", help="text, markdown or json"),
            ) -> None:
    """Print SPEC's modules: output shapes, parameters (trainable, shared, constant), MACs."""
    def action() -> None:
        from netspec.api import analyze
        from netspec.summary import init_table, render_summary, summary_table

        analysis = analyze(spec, block, input, args=_block_args(set))
        if format != "text":
            typer.echo(render_summary(analysis, depth=depth, fmt=format), nl=False)
        else:
            tables = [summary_table(analysis, depth=depth)]
            if init:
                tables.append(init_table(analysis))
            _print_tables(*tables)
        _print_notes(analysis)
    _run(action)


@app.command()
def graph(spec: Path = SpecArg,
          output: Path = typer.Option(..., "--output", "-o",
                                      help="the picture: .svg, .png, .pdf or .dot"),
          block: Optional[str] = BlockOpt, input: Optional[str] = InputOpt,
          set: Optional[List[str]] = SetOpt,
          expand: bool = typer.Option(False, "--expand", help="draw repeated blocks one by one"),
          ) -> None:
    """Draw SPEC: nested blocks, layers with their arguments, shapes and value names on edges."""
    def action() -> None:
        from netspec.api import analyze
        from netspec.graph import render

        analysis = analyze(spec, block, input, args=_block_args(set))
        typer.echo(f"wrote {render(analysis, output, expand=expand)}")
    _run(action)


EMITTERS = ("checkpoint", "onnx", "python")


@app.command(name="compile")
def compile_(spec: Path = SpecArg, output: Path = typer.Option(..., "--output", "-o",
             help="the file to write: .safetensors, or .onnx / .py with --emit"),
             block: Optional[str] = BlockOpt, input: Optional[str] = InputOpt,
             set: Optional[List[str]] = SetOpt,
             seed: Optional[int] = typer.Option(None, "--seed", help="seed for bit-identical weights"),
             emit: str = typer.Option("checkpoint", "--emit",
                                      help="checkpoint (weights + spec), onnx, or python (source)"),
             opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (--emit onnx)"),
             ) -> None:
    """Build SPEC and write it: a checkpoint with its spec, an ONNX model, or PyTorch source."""
    def action() -> None:
        from netspec.api import analyze, build_analysis

        if emit not in EMITTERS:
            raise SpecError([Diagnostic("argument error", f"--emit {emit!r} is not an output kind",
                                        hint="use " + ", ".join(EMITTERS))])
        analysis = analyze(spec, block, input, args=_block_args(set), free_dims=True)
        if emit == "python":
            from netspec.checkpoint import atomic_write
            from netspec.emit_python import python_source

            atomic_write(output, python_source(analysis).encode())
            typer.echo(f"wrote {output}: {analysis.ir.cls_name} as PyTorch source")
            return
        model = build_analysis(analysis, seed=seed)
        if emit == "onnx":
            from netspec.onnx_export import export_onnx

            export_onnx(model, output, opset=opset)
            typer.echo(f"wrote {output}: {analysis.ir.cls_name} as ONNX")
            return
        from netspec.checkpoint import save

        save(model, output)
        count = sum(p.numel() for p in model.parameters())
        typer.echo(f"wrote {output}: {analysis.ir.cls_name}, {count:,} parameters")
    _run(action)


@app.command()
def inspect(checkpoint: Path = typer.Argument(..., help="a .safetensors file written by netspec"),
            trust: bool = typer.Option(False, "--trust",
                                       help="allow the embedded spec to import Python layers"),
            ) -> None:
    """Print a checkpoint's metadata and the summary of the model it holds."""
    def action() -> None:
        from rich.console import Console

        from netspec.api import analyze
        from netspec.args import spec_literal
        from netspec.checkpoint import embedded_program, read_checkpoint
        from netspec.summary import summary_table

        ckpt = read_checkpoint(checkpoint)
        record = ckpt.spec
        console = Console(markup=False)         # paths and shapes print as they are, brackets too
        console.print(str(checkpoint), style="bold")
        console.print(f"  netspec version: {ckpt.metadata.get('netspec.version')}")
        args = ", ".join(f"{k}={spec_literal(v)}" for k, v in (record.get("args") or {}).items())
        given = record.get("input")
        console.print(f"  spec: {record['root']} ({len(record['files'])} file(s)), "
                      f"block {record.get('block')}, args {args or 'as declared'}, "
                      f"input {spec_literal(given) if given else 'as declared'}")
        console.print(f"  spec sha256: {ckpt.metadata.get('netspec.spec_sha256')}")
        console.print(f"  tensors: {len(ckpt.tensors)} stored, {len(ckpt.aliases)} tied aliases")
        program = embedded_program(record, trust)
        analysis = analyze(program, record.get("block"), record.get("input"),
                           args=record.get("args") or {})
        _print_tables(summary_table(analysis))
    _run(action)


@app.command(name="fmt")
def fmt_(files: List[Path] = typer.Argument(..., help=".net files, or folders of them",
                                            show_default=False),
         check: bool = typer.Option(False, "--check", help="write nothing; list the files that "
                                    "would change and exit 1 if any would"),
         ) -> None:
    """Rewrite FILES in netspec's canonical layout, in place; `-` formats stdin to stdout."""
    def action() -> int:
        from netspec.fmt import format_file, format_source
        from netspec.program import spec_files

        if Path("-") in files:
            if len(files) > 1:
                raise SpecError([Diagnostic("argument error", "`-` (standard input) cannot be "
                                            "formatted with other files")])
            text = sys.stdin.read()
            formatted = format_source(text, "<stdin>")
            if check:
                return int(formatted != text)
            sys.stdout.write(formatted)
            return 0
        changed: list[Path] = []
        failed = False
        for path in spec_files(files):
            try:
                if format_file(path, write=not check):
                    changed.append(path)
            except SpecError as exc:
                typer.echo(exc.render(), err=True)
                failed = True
            except (OSError, UnicodeDecodeError) as exc:
                typer.echo(f"error: {path}: {exc}", err=True)
                failed = True
        for path in changed:
            typer.echo(f"would reformat {path}" if check else f"reformatted {path}")
        return 1 if failed or (check and changed) else 0
    _run(action)


@app.command()
def diff(old: Path = typer.Argument(..., help="the old .net spec", show_default=False),
         new: Path = typer.Argument(..., help="the new .net spec", show_default=False),
         block: Optional[str] = BlockOpt, input: Optional[str] = InputOpt,
         set: Optional[List[str]] = SetOpt,
         format: str = typer.Option("text", "--format", "-f", help="text, markdown or json"),
         exit_code: bool = typer.Option(False, "--exit-code", help="exit 1 if the specs "
                                        "differ and 2 on an error, as diff(1) does"),
         ) -> None:
    """Compare two specs module by module: added, removed, changed; shapes; parameter counts."""
    def action() -> int:
        from netspec.api import analyze
        from netspec.diff import FORMATS, diff_specs

        if format not in FORMATS:
            raise SpecError([Diagnostic("argument error", f"--format {format!r} is not one of "
                                        + ", ".join(FORMATS))])
        args = _block_args(set)
        found = diff_specs(analyze(old, block, input, args=args),
                           analyze(new, block, input, args=args))
        typer.echo(found.render(format), nl=False)
        return 1 if exit_code and not found.identical else 0
    _run(action, error_status=2 if exit_code else 1)


@app.command()
def lsp() -> None:
    """Run the language server over stdio: diagnostics, hover, definitions, completion, fmt."""
    def action() -> None:
        from netspec.lsp import serve

        serve()
    _run(action)


def run(args: list[str] | None = None) -> int:
    """Run one command line (``sys.argv[1:]`` when ``args`` is None) as ``netspec`` does, and
    return its exit status."""
    # what the imports made lives until the command exits: moved out of the collector's sight,
    # it is not scanned again by each collection that a later import (rich, torch) triggers;
    # given back afterwards, as the process may go on (and unless something else froze it)
    freezes = gc.get_freeze_count() == 0
    if freezes:
        gc.freeze()
    try:
        app(args, prog_name="netspec")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        raise
    finally:
        if freezes:
            gc.unfreeze()
    return 0


def main() -> None:
    """The ``netspec`` console script."""
    status = run()
    if "torch" in sys.modules:          # torch's own exit handlers should run
        sys.exit(status)
    # Exit without tearing the interpreter down (freeing every module and object one by one:
    # 12-14 ms of a 0.41 s `check`), as mypy does. Nothing of netspec's is left to clean up
    # once the streams are flushed.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:            # the reader went away (`| head`) or the disk is full
        status = 120           # what Python itself exits with when stdout fails at exit
    os._exit(status)


if __name__ == "__main__":
    main()
