"""Packaging stays coherent: requirements.txt mirrors pyproject, every part imports and has an entry point."""

from __future__ import annotations

import importlib
import tomllib

import pytest

from tests.conftest import ROOT, run_cli


def _requirement_lines(path) -> list[str]:
    lines = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
    return sorted(ln for ln in lines if ln)


def test_requirements_txt_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _requirement_lines(ROOT / "requirements.txt") == sorted(project["dependencies"])


@pytest.mark.parametrize("package", ["assistant", "index", "finetune", "ui"])
def test_every_part_imports(package):
    assert importlib.import_module(package).__doc__


@pytest.mark.parametrize("package", ["assistant", "index", "ui"])
def test_entry_points_document_themselves(package):
    result = run_cli(package, "--help", timeout=120)
    assert result.returncode == 0 and "usage" in result.stdout.lower()
