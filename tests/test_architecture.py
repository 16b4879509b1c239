"""The layers are a contract: pyproject.toml's import-linter contracts hold for the tree, a violation of
each kind fails `lint-imports`, and no module reaches into another module's private names."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "tutor", "train", "webui", "quimbot")
LINT = [str(Path(sys.executable).with_name("lint-imports"))]  # the venv's import-linter
# Modules that may stay long: vocabulary tables, not logic (issue 14: "the large vocabulary tables may stay large").
LONG_TABLES = {"train/data/synth_vocab.py", "train/data/essay_bank.py"}  # data tables
MAX_LINES = 450


def _lint(cwd: Path, config: Path | None = None) -> subprocess.CompletedProcess:
    cmd = LINT + (["--config", str(config)] if config else []) + ["--no-cache"]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_tree_keeps_every_layer_contract():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    kept = re.findall(r"^(.+) KEPT$", done.stdout, re.M)
    assert len(kept) == len(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"])


def _fixture_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    """A tiny tree with the real packages' names and the real contracts (copied from pyproject.toml)."""
    for package in PACKAGES + ("train/data", "train/fit", "train/evaluate", "train/export"):
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    text = (ROOT / "pyproject.toml").read_text()
    section = text[text.index("[tool.importlinter]"):]
    config = tmp_path / "contracts.toml"
    config.write_text(section)
    return config


@pytest.mark.parametrize("files, broken, culprit", [
    ({"core/rows.py": "import tutor.store\n", "tutor/store.py": ""},
     "quimbot (the command line) > webui | train > tutor > core", "core.rows -> tutor.store"),
    ({"tutor/session.py": "from webui import chat\n", "webui/chat.py": ""},
     "Nothing imports the web UI", "tutor.session -> webui.chat"),
    ({"train/fit/trainer.py": "import webui.app\n", "webui/app.py": ""},
     "quimbot (the command line) > webui | train > tutor > core", "train.fit.trainer -> webui.app"),
    ({"train/data/mix.py": "from train.evaluate import compare\n", "train/evaluate/compare.py": ""},
     "Training's stages", "train.data.mix -> train.evaluate.compare"),
    ({"tutor/store.py": "from tutor import feedback\n", "tutor/feedback.py": "from tutor import store\n"},
     "No import cycles", "tutor"),
])
def test_a_violation_fails_lint_imports(tmp_path, files, broken, culprit):
    config = _fixture_tree(tmp_path, files)
    done = _lint(tmp_path, config)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith(broken))
    assert line.endswith("BROKEN")
    assert culprit in done.stdout.replace("- ", "").replace("  ", " ") or culprit in done.stdout


def test_a_clean_fixture_tree_passes(tmp_path):
    config = _fixture_tree(tmp_path, {"tutor/store.py": "import core\n", "webui/app.py": "import tutor.store\n"})
    done = _lint(tmp_path, config)
    assert done.returncode == 0, done.stdout[-3000:]


def _modules():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_no_module_imports_another_modules_private_names():
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                found += [f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{a.name}"
                          for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def test_modules_are_a_size_one_reads_in_a_sitting():
    long = {str(p.relative_to(ROOT)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_LINES and str(p.relative_to(ROOT)) not in LONG_TABLES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
