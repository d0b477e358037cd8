"""The package docstrings that map the code stay true to the tree.

pipelines/__init__.py lists the modules of the `brainview` package in the order an
image goes through them, and classify/ and beam/ list theirs; a module added
without a line there leaves a reader's map wrong. Unit tier (reads files only).
"""

from __future__ import annotations

import ast
import os

import pytest

PIPELINES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines")


def package_docstring(folder: str) -> str:
    with open(os.path.join(folder, "__init__.py"), encoding="utf-8") as init:
        return ast.get_docstring(ast.parse(init.read())) or ""


@pytest.mark.parametrize("package", ["", "classify", "beam"])
def test_the_package_docstring_names_every_module(package):
    folder = os.path.join(PIPELINES, package) if package else PIPELINES
    docstring = package_docstring(folder)
    entries = sorted(
        name + ("/" if os.path.isdir(os.path.join(folder, name)) else "")
        for name in os.listdir(folder)
        if not name.startswith(("_", "."))
        and (name.endswith(".py") or os.path.isdir(os.path.join(folder, name)))
    )
    missing = [entry for entry in entries if entry not in docstring]
    assert not missing, f"{folder}/__init__.py does not mention {missing}"
