"""The language server, driven over stdio the way an editor drives it.

A small JSON-RPC client (Content-Length framing, a reader thread, a timeout on every wait)
starts ``netspec.lsp.serve`` in a subprocess, opens documents and checks what comes back:
the diagnostics ``netspec check`` reports (and none once the text is fixed), hover shapes and
layers, block signatures, definitions in the same and in imported files, and a clean exit.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pygls")

import netspec  # noqa: E402
from netspec.lsp import (analyse_document, completions, formatted, from_client,  # noqa: E402
                         hover_text, outline, signature_help, to_client)

ROOT = Path(__file__).resolve().parent.parent
ERRORS = ROOT / "tests" / "errors"
TIMEOUT = 30.0

LIB = """\
# blocks shared by several specs
block Body(width: int = 64) {
    input x: [N, D]
    Linear(width)
    ReLU()
}
"""

FIXED = """\
import "sub/lib.net"

block Net {
    input x: [N, 784]
    hidden: Linear(256)
    body: Body(32)
    h = relu(x)
    Linear(10)
    y = relu(h)
}
"""

BROKEN = FIXED.replace("Linear(10)", "Linaer(10)").replace("relu(h)", "relu(zz)")

UNICODE = 'block U {\n    input x: [N, 4]\n    Linear(3)\n    init { "😀*.bias": zeroes() }\n}\n'


class Client:
    """Just enough of an LSP client: requests, notifications, and a queue of what arrives."""

    def __init__(self, cwd: Path, code: str = "from netspec.lsp import serve; serve()"):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        self.seen: list[dict] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        self.inbox: queue.Queue = queue.Queue()
        self.next_id = 0
        self.stderr: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _read(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        try:
            while True:
                length = None
                while True:
                    line = stream.readline()
                    if not line:
                        return
                    line = line.strip()
                    if not line:
                        break
                    key, _, value = line.decode("ascii").partition(":")
                    if key.lower() == "content-length":
                        length = int(value)
                if length is None:
                    continue
                body = stream.read(length)
                if len(body) < length:
                    return
                self.inbox.put(json.loads(body))
        finally:
            self.inbox.put(None)

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def send(self, message: dict) -> None:
        body = json.dumps(dict(message, jsonrpc="2.0")).encode("utf-8")
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def notify(self, method: str, params: Any) -> None:
        self.send({"method": method, "params": params})

    def request(self, method: str, params: Any) -> Any:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        reply = self.wait(lambda m: m.get("id") == self.next_id and "method" not in m,
                          f"the reply to {method}")
        assert "error" not in reply, reply["error"]
        return reply.get("result")

    def wait(self, match, what: str) -> dict:
        """The next message ``match`` accepts; answers server requests meanwhile."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            left = deadline - time.monotonic()
            try:
                message = self.inbox.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(f"timed out waiting for {what}; server stderr:\n"
                                     + b"".join(self.stderr).decode(errors="replace")) from None
            if message is None:
                raise AssertionError(f"the server closed its output before {what}; stderr:\n"
                                     + b"".join(self.stderr).decode(errors="replace"))
            self.seen.append(message)
            if "method" in message and "id" in message:      # a request from the server
                self.send({"id": message["id"], "result": None})
            if match(message):
                return message

    def diagnostics(self, uri: str, version: int | None = None) -> list[dict]:
        message = self.wait(lambda m: m.get("method") == "textDocument/publishDiagnostics"
                            and m["params"]["uri"] == uri
                            and (version is None or m["params"].get("version") == version),
                            f"diagnostics for {uri}")
        return message["params"]["diagnostics"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def expected_message(d: netspec.Diagnostic) -> str:
    """How ``netspec check`` words a diagnostic, without the source excerpt."""
    return "\n".join([f"{d.kind}: {d.message}", *d.notes] + ([f"hint: {d.hint}"] if d.hint else []))


def lsp_range(span: netspec.Span) -> dict:
    """An ASCII span as an LSP range."""
    return {"start": {"line": span.line - 1, "character": span.column - 1},
            "end": {"line": span.end_line - 1, "character": span.end_column - 1}}


def position_of(text: str, needle: str, offset: int = 0) -> dict:
    """The LSP position of the first ``needle`` in ``text`` (plus ``offset`` characters)."""
    before = text[:text.index(needle) + offset]
    line = before.count("\n")
    return {"line": line, "character": len(before) - (before.rfind("\n") + 1)}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "lib.net").write_text(LIB)
    (tmp_path / "main.net").write_text(FIXED)        # the disk holds the fixed text
    (tmp_path / "sub" / "broken.net").write_text("block B {\n    Linear(3\n}\n")
    return tmp_path


@pytest.fixture
def client(workspace: Path):
    c = Client(workspace)
    try:
        yield c
    finally:
        c.close()


def initialize(client: Client, workspace: Path) -> dict:
    result = client.request("initialize", {
        "processId": os.getpid(), "rootUri": workspace.as_uri(), "capabilities": {
            "textDocument": {"hover": {"contentFormat": ["markdown", "plaintext"]},
                             "publishDiagnostics": {"relatedInformation": True}}}})
    client.notify("initialized", {})
    return result


def open_document(client: Client, uri: str, text: str, version: int = 1) -> None:
    client.notify("textDocument/didOpen", {"textDocument": {
        "uri": uri, "languageId": "netspec", "version": version, "text": text}})


def test_server_over_stdio(client: Client, workspace: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workspace)
    caps = initialize(client, workspace)["capabilities"]
    assert caps["hoverProvider"] and caps["definitionProvider"]

    # the unsaved buffer is checked, not the (sound) file on disk, with every error of `check`
    uri = (workspace / "main.net").as_uri()
    open_document(client, uri, BROKEN)
    published = client.diagnostics(uri, version=1)
    (workspace / "copy.net").write_text(BROKEN)     # what `netspec check` says of that text
    expected = netspec.check("copy.net")
    assert len(expected) == 2
    assert [d["range"] for d in published] == [lsp_range(d.span) for d in expected]
    assert [d["message"] for d in published] == [expected_message(d) for d in expected]
    assert published[0]["message"] == ("name error: unknown layer or block 'Linaer'\n"
                                       "hint: did you mean 'Linear'?")
    assert all(d["severity"] == 1 and d["source"] == "netspec" for d in published)

    # fixing the text clears them; what is left is information: FIXED never uses its y
    client.notify("textDocument/didChange", {
        "textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": FIXED}]})
    assert [(d["severity"], d["message"].split("\n")[0], d["range"]["start"])
            for d in client.diagnostics(uri, version=2)] == \
        [(3, "note: the value 'y' is never used", {"line": 8, "character": 8})]

    # hover over a step: its layer with the resolved arguments, and its shapes
    hover = client.request("textDocument/hover", {
        "textDocument": {"uri": uri}, "position": position_of(FIXED, "hidden: Linear", 9)})
    text = hover["contents"]["value"]
    assert "Linear(in_features=784, out_features=256)" in text
    assert "[N, 784] -> [N, 256]" in text

    # hover over a named value, and over a block used as a step
    hover = client.request("textDocument/hover", {
        "textDocument": {"uri": uri}, "position": position_of(FIXED, "relu(h)", 5)})
    assert "[N, 32]" in hover["contents"]["value"]
    hover = client.request("textDocument/hover", {
        "textDocument": {"uri": uri}, "position": position_of(FIXED, "Body(32)", 1)})
    text = hover["contents"]["value"]
    assert "block Body(width: int = 64)" in text and "sub/lib.net" in text
    assert "Body(width=32)" in text and "[N, 256] -> [N, 32]" in text

    # completion inside a call: the layer's arguments first, in positional order, then names
    found = client.request("textDocument/completion", {
        "textDocument": {"uri": uri}, "position": position_of(FIXED, "Linear(256)", 7)})
    items = sorted(found["items"], key=lambda item: item["sortText"])
    assert [(i["label"], i["kind"]) for i in items[:4]] == [
        ("out_features=", 10), ("bias=", 10), ("in_features=", 10), ("x", 6)]
    assert items[1]["detail"] == "true or false, default true"
    labels = {i["label"] for i in items}
    assert {"Body", "Linear", "relu"} <= labels and "repeat" not in labels   # in a call
    assert caps["completionProvider"]["triggerCharacters"] == ["(", ","]

    # the outline: the block, and the names it defines
    (block,) = client.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}})
    assert (block["name"], block["kind"], block["selectionRange"]["start"]) == \
        ("Net", 5, {"line": 2, "character": 6})
    assert [(c["name"], c["detail"]) for c in block["children"]] == [
        ("x", "input"), ("N", "dim symbol"), ("h", "value"), ("y", "value")]

    # signature help in the same call: Linear's parameters, the cursor at the first
    found = client.request("textDocument/signatureHelp", {
        "textDocument": {"uri": uri}, "position": position_of(FIXED, "Linear(256)", 7)})
    (sig,) = found["signatures"]
    assert sig["label"] == "Linear(out_features, bias=true, in_features=inferred)"
    assert [p["label"] for p in sig["parameters"]] == ["out_features", "bias=true",
                                                       "in_features=inferred"]
    assert found["activeParameter"] == 0
    assert client.request("textDocument/signatureHelp", {       # outside any call: nothing
        "textDocument": {"uri": uri}, "position": position_of(FIXED, "h = relu", 0)}) is None

    # definition of a block in an imported file, and of a named value
    location = client.request("textDocument/definition", {
        "textDocument": {"uri": uri}, "position": position_of(FIXED, "Body(32)", 2)})
    assert location["uri"] == (workspace / "sub" / "lib.net").as_uri()
    assert location["range"] == {"start": {"line": 1, "character": 6},
                                 "end": {"line": 1, "character": 10}}
    location = client.request("textDocument/definition", {
        "textDocument": {"uri": uri}, "position": position_of(FIXED, "relu(h)", 5)})
    assert location == {"uri": uri, "range": {"start": {"line": 6, "character": 4},
                                              "end": {"line": 6, "character": 5}}}
    assert client.request("textDocument/definition", {       # a torch layer: nowhere to go
        "textDocument": {"uri": uri}, "position": position_of(FIXED, "Linear(10)", 1)}) is None

    # an error inside an imported file lands on the import line and points at the real place
    other = (workspace / "uses_broken.net").as_uri()
    source = 'import "sub/broken.net"\nblock A {\n    input x: [N, 4]\n    Linear(3)\n}\n'
    open_document(client, other, source)
    published = client.diagnostics(other, version=1)
    (d,) = published
    assert d["range"]["start"] == {"line": 0, "character": 0}
    assert d["message"].startswith("sub/broken.net:3:1: syntax error: unexpected '}'")
    related = d["relatedInformation"][0]["location"]
    assert related["uri"] == (workspace / "sub" / "broken.net").as_uri()
    assert related["range"]["start"] == {"line": 2, "character": 0}

    # columns are counted in UTF-16 code units, as the protocol says by default
    third = (workspace / "unicode.net").as_uri()
    open_document(client, third, UNICODE)
    (d,) = client.diagnostics(third, version=1)
    line = UNICODE.split("\n")[3]
    assert d["range"]["start"] == {"line": 3, "character": line.index("zeroes") + 1}

    # sizes the check takes on trust come as information, not errors
    fourth = (workspace / "trust.net").as_uri()
    open_document(client, fourth, "block P {\n    input x: [N, D]\n    param w = randn(16, 4)\n"
                                  "    return x @ w\n}\n")
    (d,) = client.diagnostics(fourth, version=1)
    assert d["severity"] == 3 and d["range"]["start"] == {"line": 3, "character": 11}
    assert d["message"].startswith("note: sizes assumed equal: D and 16\nhint: with D = 1")

    # requests about a document nobody opened, that does not exist, do not break the server
    missing = (workspace / "nowhere.net").as_uri()
    assert client.request("textDocument/hover", {
        "textDocument": {"uri": missing}, "position": {"line": 0, "character": 0}}) is None
    hover = client.request("textDocument/hover", {
        "textDocument": {"uri": uri}, "position": position_of(FIXED, "hidden: Linear", 9)})
    assert "[N, 256]" in hover["contents"]["value"]

    client.notify("textDocument/didClose", {"textDocument": {"uri": other}})
    assert client.diagnostics(other) == []

    # saving an imported file checks the open files that import it again
    lib = (workspace / "sub" / "lib.net").as_uri()
    broken_lib = LIB.replace("Linear(width)", "Linear(width")
    open_document(client, lib, LIB)     # on its own, [N, D] leaves Linear's input size open
    assert client.diagnostics(lib, version=1)[0]["message"].startswith("shape error")
    client.notify("textDocument/didChange", {
        "textDocument": {"uri": lib, "version": 2}, "contentChanges": [{"text": broken_lib}]})
    assert client.diagnostics(lib, version=2)[0]["message"].startswith("syntax error")
    (workspace / "sub" / "lib.net").write_text(broken_lib)
    client.notify("textDocument/didSave", {"textDocument": {"uri": lib}})
    (d,) = client.diagnostics(uri, version=2)
    assert d["range"]["start"] == {"line": 0, "character": 0}
    assert d["message"].startswith("sub/lib.net:5:5: syntax error")

    # formatting: one edit replacing the whole text with fmt's layout; none for a laid-out one
    messy = FIXED.replace("    hidden: Linear(256)", "  hidden:Linear( 256 )")
    client.notify("textDocument/didChange", {
        "textDocument": {"uri": uri, "version": 5}, "contentChanges": [{"text": messy}]})
    client.diagnostics(uri, version=5)
    (edit,) = client.request("textDocument/formatting", {
        "textDocument": {"uri": uri}, "options": {"tabSize": 4, "insertSpaces": True}})
    lines = messy.split("\n")
    assert edit == {"range": {"start": {"line": 0, "character": 0},
                              "end": {"line": len(lines) - 1, "character": len(lines[-1])}},
                    "newText": FIXED}
    client.notify("textDocument/didChange", {
        "textDocument": {"uri": uri, "version": 6}, "contentChanges": [{"text": FIXED}]})
    client.diagnostics(uri, version=6)
    assert client.request("textDocument/formatting", {
        "textDocument": {"uri": uri}, "options": {"tabSize": 4, "insertSpaces": True}}) == []

    assert client.request("shutdown", None) is None
    client.notify("exit", None)
    assert client.proc.wait(timeout=TIMEOUT) == 0


def test_a_pathological_text_does_not_kill_the_server(client: Client, workspace: Path) -> None:
    initialize(client, workspace)
    uri = (workspace / "deep.net").as_uri()
    deep = "block D {\n    input x: [N, 4]\n    y = " + "(" * 2000 + "x" + ")" * 2000 + "\n}\n"
    open_document(client, uri, deep)
    (d,) = client.diagnostics(uri, version=1)
    assert d["message"].startswith("limit error: brackets nest too deeply")
    open_document(client, (workspace / "main.net").as_uri(), FIXED)
    assert [d["severity"] for d in
            client.diagnostics((workspace / "main.net").as_uri(), version=1)] == [3]
    assert client.request("shutdown", None) is None
    client.notify("exit", None)
    assert client.proc.wait(timeout=TIMEOUT) == 0


CRASHING = """\
import netspec.lsp as lsp
analyse = lsp.analyse_document
def analyse_document(text, *args, **kwargs):
    if "BOOM" in text:
        raise RuntimeError("a bug in the analysis")
    return analyse(text, *args, **kwargs)
lsp.analyse_document = analyse_document
lsp.serve()
"""


def test_an_internal_error_is_logged_and_the_server_goes_on(workspace: Path) -> None:
    client = Client(workspace, CRASHING)
    try:
        initialize(client, workspace)
        boom = (workspace / "boom.net").as_uri()
        open_document(client, boom, "# BOOM\n" + FIXED)
        log = client.wait(lambda m: m.get("method") == "window/logMessage", "a log message")
        assert log["params"]["type"] == 1 and "a bug in the analysis" in log["params"]["message"]
        assert client.request("textDocument/hover", {
            "textDocument": {"uri": boom}, "position": {"line": 5, "character": 14}}) is None
        uri = (workspace / "main.net").as_uri()
        open_document(client, uri, BROKEN)
        assert len(client.diagnostics(uri, version=1)) == 2
        assert not any(m.get("method") == "textDocument/publishDiagnostics"
                       and m["params"]["uri"] == boom for m in client.seen)
        assert client.request("shutdown", None) is None
        client.notify("exit", None)
        assert client.proc.wait(timeout=TIMEOUT) == 0
    finally:
        client.close()


# ---- the analysis under the server, without the protocol --------------------------------------

def test_positions_round_trip_through_utf16() -> None:
    text = 'a\n  "😀" b\n'
    assert to_client(text, 2, 7) == (1, 7)            # the emoji takes two UTF-16 units
    assert to_client(text, 2, 7, "utf-8") == (1, 9)
    assert to_client(text, 2, 7, "utf-32") == (1, 6)
    assert from_client(text, 1, 7) == (2, 7)
    assert from_client(text, 1, 9, "utf-8") == (2, 7)
    assert to_client(text, 9, 1) == (2, 0)            # past the end: clamped


def test_hover_in_every_instance_of_a_block() -> None:
    spec = ROOT / "specs" / "resnet.net"
    text = spec.read_text()
    doc = analyse_document(text, spec)
    assert doc.diagnostics == []
    lines = text.split("\n")
    row = next(i for i, line in enumerate(lines) if line.strip().startswith("y = x"))
    hover = hover_text(doc, row + 1, lines[row].index("y") + 1)
    assert "`layer1.0`: `[N, 64, 16, 16]`" in hover and "`layer4.1`: `[N, 512, 2, 2]`" in hover
    row = next(i for i, line in enumerate(lines) if "fc: Linear" in line)
    hover = hover_text(doc, row + 1, lines[row].index("Linear") + 1)
    assert "fc: Linear(in_features=512, out_features=1000)" in hover


def test_hover_on_a_subscript_shows_it_as_written() -> None:
    text = "block S {\n    input x: [N, 4, 5]\n    y = x[:, none, 1:3]\n}\n"
    doc = analyse_document(text)
    hover = hover_text(doc, 3, text.split("\n")[2].index("[") + 1)
    assert hover == "```netspec\n[:, none, 1:3]\n```\n`[N, 4, 5] -> [N, 1, 2, 5]`"


def test_hover_in_a_block_the_entry_does_not_use() -> None:
    spec = ROOT / "specs" / "nest_mlp.net"
    text = spec.read_text()
    doc = analyse_document(text, spec)
    lines = text.split("\n")
    row = next(i for i, line in enumerate(lines) if "Linear(20)" in line)
    hover = hover_text(doc, row + 1, lines[row].index("Linear") + 1)
    assert "linear: Linear(in_features=32, out_features=20)" in hover


PLAIN_CASES = [c for c in sorted(ERRORS.glob("*.net"))
               if not re.search(r"^# (input|block|set): ", c.read_text(), flags=re.M)]


@pytest.mark.parametrize("case", PLAIN_CASES, ids=lambda p: p.stem)
def test_diagnostics_are_those_of_check(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every golden error case: the server's analysis reports exactly what ``check`` does."""
    monkeypatch.chdir(case.parent)
    doc = analyse_document(case.read_text(), case)
    assert doc.diagnostics == netspec.check(case.name)
    assert doc.diagnostics


def test_hover_on_a_let_call_and_a_factory_in_a_step() -> None:
    text = ("block G {\n    input x: [N, T, 8]\n    let attn = MultiheadAttention(2, batch_first=true)\n"
            "    future = unsqueeze(arange(T), 0) > unsqueeze(arange(T), 1)\n"
            "    attn(x, x, x, attn_mask=future)\n}\n")
    doc = analyse_document(text)
    assert doc.diagnostics == []
    lines = text.split("\n")
    hover = hover_text(doc, 4, lines[3].index("arange") + 1)
    assert hover.endswith("\n`[T]`")                   # no input: the shape alone
    hover = hover_text(doc, 5, lines[4].index("attn") + 1)
    assert "MultiheadAttention(embed_dim=8, num_heads=2" in hover and "[N, T, 8]" in hover


# ---- completion ---------------------------------------------------------------------------------

TYPING = """\
block Body(width: int, depth: int = 2) {
    input x: [N, D]
    Linear(width)
}

block Net(classes: int = 10) {
    input x: [N, C, 28, 28]
    e1 = Conv2d(8, 3, )
    let act = ReLU()
    h = e1 -> act ->
    # Lin
    Body(16, )
    later = h
}
"""


def complete_at(text: str, needle: str, offset: int) -> dict[str, tuple[str, str]]:
    """What ``completions`` offers at ``offset`` characters into the first ``needle``."""
    before = text[:text.index(needle) + offset]
    line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
    return {c.label: (c.kind, c.detail) for c in completions(analyse_document(text), line, column)}


def test_completion_inside_a_call_offers_the_arguments_not_given() -> None:
    # Conv2d(8, 3, |): out_channels and kernel_size are given by position
    found = complete_at(TYPING, "Conv2d(8, 3, )", len("Conv2d(8, 3, "))
    arguments = [label for label, (kind, _) in found.items() if kind == "argument"]
    assert arguments == ["stride=", "padding=", "dilation=", "groups=", "bias=",
                         "padding_mode=", "in_channels="]
    assert found["padding="][1] == ('an int >= 0 or a list of 2 ints >= 0 or "same" or "valid", '
                                    'default 0')
    assert found["classes"] == ("value", "block argument")     # arguments may be expressions
    # a block's own arguments, with their defaults as written
    found = complete_at(TYPING, "Body(16, )", len("Body(16, "))
    assert {k: v for k, v in found.items() if v[0] == "argument"} == {
        "depth=": ("argument", "int, default 2")}
    written = TYPING.replace("Conv2d(8, 3, )", "Conv2d(8, 3, bias=false, )")
    found = complete_at(written, "bias=false, )", len("bias=false, "))
    assert "bias=" not in found and "stride=" in found


def test_completion_in_a_block_offers_what_may_start_a_step() -> None:
    found = complete_at(TYPING, "act ->\n", len("act ->"))
    assert found["Conv2d"][0] == "layer" and found["relu"][0] == "function"
    assert found["Body"] == ("block", "block Body(width: int, depth: int = 2)")
    assert found["repeat"] == ("keyword", "")
    # the names the block has defined before the cursor, and not those after it
    assert {k for k, (kind, _) in found.items() if kind == "value"} == \
        {"classes", "x", "N", "C", "e1", "act", "h"}
    assert not any(kind == "argument" for kind, _ in found.values())


def test_completion_at_the_top_level_and_in_comments_and_strings() -> None:
    assert set(complete_at(TYPING, "block Net", 0)) == {"block", "import", "init"}
    assert complete_at(TYPING, "# Lin", len("# Lin")) == {}
    text = 'block S {\n    input x: [N, 4]\n    repeat 2 as "layer{i'
    assert complete_at(text, "{i", 2) == {}


def test_signature_help_marks_the_argument_at_the_cursor() -> None:
    doc = analyse_document(TYPING)

    def active(needle: str, offset: int) -> tuple[str, int | None] | None:
        before = TYPING[:TYPING.index(needle) + offset]
        found = signature_help(doc, before.count("\n") + 1, len(before) - before.rfind("\n"))
        return None if found is None else (found.parameters[found.active]
                                           if found.active is not None else None)

    assert active("Conv2d(8, 3, )", len("Conv2d(")) == "out_channels"
    assert active("Conv2d(8, 3, )", len("Conv2d(8, ")) == "kernel_size"
    assert active("Conv2d(8, 3, )", len("Conv2d(8, 3, ")) == "stride=1"
    assert active("Body(16, )", len("Body(16, ")) == "depth=2"
    found = signature_help(doc, 8, len("    e1 = Conv2d(") + 1)
    assert found.label.startswith("Conv2d(out_channels, kernel_size, stride=1, padding=0")
    assert found.label.endswith("in_channels=inferred)")
    # a keyword being typed is marked wherever it stands; after a keyword, a bare one is not
    written = TYPING.replace("Conv2d(8, 3, )", "Conv2d(8, groups=2, bias=f)")
    doc = analyse_document(written)
    row = written.split("\n").index("    e1 = Conv2d(8, groups=2, bias=f)") + 1
    column = written.split("\n")[row - 1].index("bias=f") + 6
    found = signature_help(doc, row, column)
    assert found.parameters[found.active] == "bias=true"
    column = written.split("\n")[row - 1].index("bias=f")     # `groups=2, |`
    assert signature_help(doc, row, column).active is None
    assert signature_help(doc, 2, 5) is None                  # not in a call


def test_outline_lists_blocks_and_what_each_defines() -> None:
    text = """\
block Head(classes: int = 10) {
    input x: [N, D]
    let act = ReLU()
    const scale = ones(D)
    h = x * scale -> act
    return Linear(classes)
}
"""
    (head,) = outline(analyse_document(text))
    assert (head.name, head.detail) == ("Head", "block Head(classes: int = 10)")
    assert (head.span.line, head.span.end_line, head.name_span.column) == (1, 7, 7)
    assert [(c.name, c.kind, c.name_span.line) for c in head.children] == [
        ("classes", "arg", 1), ("x", "input", 2), ("N", "dim", 2), ("D", "dim", 2),
        ("act", "let", 3), ("scale", "const", 4), ("h", "assign", 5)]
    assert all(head.span.line <= c.span.line <= c.span.end_line <= head.span.end_line and
               c.span.line <= c.name_span.line for c in head.children)
    assert outline(analyse_document(text.replace("Linear(classes)", "Linear(classes"))) == []


def test_formatting_gives_fmt_layout_and_nothing_for_text_that_does_not_parse() -> None:
    from netspec.fmt import format_source

    messy = "block A {\n  input x:[N,4]\n  Linear( 3 );ReLU()\n}\n"
    assert formatted(analyse_document(messy)) == format_source(messy) == \
        "block A {\n    input x: [N, 4]\n    Linear(3)\n    ReLU()\n}\n"
    assert formatted(analyse_document(format_source(messy))) is None      # already laid out
    assert formatted(analyse_document("block A {\n  Linear(3\n}\n")) is None
