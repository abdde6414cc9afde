"""``bench new-plugin``: the template renders into a package whose own tests pass once it is
installed with ``pip install -e`` (in a throwaway virtual environment, from this checkout)."""

from __future__ import annotations

import fnmatch
import os
import re
import site
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import BenchError
from harness.scaffold import Names, render, template

ROOT = Path(__file__).resolve().parent.parent
FILES = [
    "README.md",
    "bench_prune/__init__.py",
    "bench_prune/task.py",
    "bench_prune/technique.py",
    "pyproject.toml",
    "suite.yaml",
    "tests/test_plugin.py",
]


def test_names_follow_the_package_name() -> None:
    assert Names.of("bench-prune") == Names("bench-prune", "bench_prune", "prune", "prune")
    assert Names.of("Bench_Sliding-KV") == Names(
        "bench-sliding-kv", "bench_sliding_kv", "sliding-kv", "sliding_kv"
    )
    assert Names.of("mymethod").short == "mymethod"
    for bad in ("2fast", "my method", "bench-", "x/y", ""):
        with pytest.raises(BenchError, match="is not a package name"):
            Names.of(bad)


def test_render_writes_a_complete_package(tmp_path: Path) -> None:
    target = tmp_path / "bench-prune"
    files = render(Names.of("bench-prune"), target)
    assert [str(f) for f in files] == FILES
    pyproject = (target / "pyproject.toml").read_text()
    assert '[project.entry-points.bench]\nprune = "bench_prune"\n' in pyproject
    init = (target / "bench_prune" / "__init__.py").read_text()
    assert 'BENCH_PLUGIN_API = ">=1.0,<2"' in init
    for path in files:
        text = (target / path).read_text()
        assert "{{" not in text and "__module__" not in text, path
        if path.suffix == ".py":
            compile(text, str(path), "exec")
    with pytest.raises(BenchError, match="exists already"):
        render(Names.of("bench-prune"), target)


def test_the_rendered_code_passes_benchs_lint(tmp_path: Path) -> None:
    render(Names.of("bench-prune"), tmp_path / "p")
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip(f"ruff is not installed next to {sys.executable}: pip install 'bench[dev]'")
    # bench's rules, applied as to a project of its own (its module is the first party)
    rules = ["--isolated", "--line-length", "100", "--target-version", "py310"]
    lint = ["--select", "E,F,W,I,UP,B,SIM,RUF", "--ignore", "RUF001,RUF002,RUF003"]
    for args in (["check", *rules, *lint], ["format", "--check", *rules]):
        done = subprocess.run(
            [str(ruff), *args, "."], cwd=tmp_path / "p", capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_template_ships_as_package_data() -> None:
    line = next(
        line
        for line in (ROOT / "pyproject.toml").read_text().splitlines()
        if line.startswith("harness = [")
    )
    patterns = re.findall(r'"([^"]+)"', line)
    folder = Path(str(template()))
    shipped = [str(p.relative_to(folder.parent.parent)) for p in folder.rglob("*.tmpl")]
    assert len(shipped) == len(FILES)
    for path in shipped:
        assert any(fnmatch.fnmatch(path, pattern) for pattern in patterns), path


def test_new_plugin_refuses_a_name_an_installed_plugin_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["new-plugin", "bench-baseline", "--directory", str(tmp_path / "x")])
    assert done.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "ERROR: the new plugin's technique would be named 'baseline', which an installed "
        "plugin registers already; choose another NAME ('bench plugins' lists the names taken)."
    )
    assert not (tmp_path / "x").exists()


def _throwaway_venv(folder: Path) -> Path:
    """A virtual environment without pip that sees this interpreter's packages (bench, pip,
    setuptools, pytest, torch) through a ``.pth`` file; what is installed into it stays in
    it. Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    sites = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    lines = "; ".join(f"site.addsitedir({s!r})" for s in sites)
    (Path(purelib) / "_parent_site.pth").write_text(f"import site; {lines}\n")
    return python


@pytest.mark.slow
def test_the_new_plugin_installs_with_pip_and_its_own_tests_pass(tmp_path: Path) -> None:
    """What `bench new-plugin` promises, end to end: the package it writes, installed with
    `pip install -e` (no network: --no-index, build dependencies from this environment),
    passes its tests unchanged, and bench lists it with its version."""
    plugin = tmp_path / "bench-prune"
    with pytest.raises(SystemExit) as done:
        main(["new-plugin", "bench-prune", "--directory", str(plugin)])
    assert done.value.code == 0
    python = _throwaway_venv(tmp_path / "venv")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [str(python), "-m", "pip", "install", "-q", "--no-build-isolation", "--no-index"]
    install = subprocess.run(
        [*pip, "-e", str(plugin)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    tests = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=plugin,
        capture_output=True,
        text=True,
        env=env,
    )
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
    assert "6 passed" in tests.stdout
    listed = subprocess.run(
        [str(python), "-m", "harness", "plugins", "prune"],
        cwd=plugin,  # the package's own folder: found through its entry point, not the cwd
        capture_output=True,
        text=True,
        env=env,
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("technique prune: plugin prune (bench-prune 0.1.0)")
    # and it is installed in the throwaway environment only
    from harness.plugins import get_plugin_manager
    from harness.registry import Registry

    assert "prune" not in Registry(get_plugin_manager()).techniques
