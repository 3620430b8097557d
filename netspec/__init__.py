"""netspec: write a neural network down once, have it checked before it runs, get PyTorch out."""

from netspec.gc_pause import paused

with paused(promote=True):    # what an import makes lives on: collecting it frees nothing
    from netspec.api import Analysis, analyze, build, check, materialize
    from netspec.checkpoint import LoadReport, load, save
    from netspec.errors import CheckpointError, Diagnostic, NetspecError, SpecError, Span
    from netspec.registry import ShapeRuleError

__version__ = "0.1.0"

__all__ = ["Analysis", "CheckpointError", "Diagnostic", "LoadReport", "NetspecError",
           "ShapeRuleError", "SpecError", "Span", "__version__", "analyze", "build", "check",
           "load", "materialize", "save"]
