"""The repo's layers run one way: scripts import library modules, never another script, and library modules
import no script; training does not load the video stack."""
import ast
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPTS = {"test", "train", "evaluate", "bench", "bench_folder", "bench_video", "export"}
SCRIPT_FILES = [ROOT / f"{name}.py" for name in sorted(SCRIPTS)] + [ROOT / "Samples" / "make_figure.py",
                                                                     ROOT / "data" / "make_samples.py"]
LIBRARY_FILES = [path for path in sorted(ROOT.glob("*.py")) if path.stem not in SCRIPTS]


def imported_modules(path) -> set[str]:
    """The top-level names of every module that `path` imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", [p for p in SCRIPT_FILES + LIBRARY_FILES if p.is_file()],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_file_imports_a_script(path):
    assert imported_modules(path) & SCRIPTS == set()


def test_the_walk_sees_a_script_import(tmp_path):
    (tmp_path / "bad.py").write_text("def f():\n    from test import main\n")
    assert imported_modules(tmp_path / "bad.py") & SCRIPTS == {"test"}


def test_importing_the_dataloader_and_train_leaves_pyav_unloaded():
    code = "import sys, dataloader, train; print('av' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
