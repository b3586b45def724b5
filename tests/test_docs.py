"""The shared docstring fragments: every ``{name}`` line is filled, nothing else is touched."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import latentebm
from latentebm._docs import DOCS, doc_filler, fill_doc

PLACEHOLDER = re.compile(r"^[ \t]*\{\w+\}[ \t]*$", re.MULTILINE)


def test_fragments_are_filled_with_the_placeholders_indentation():
    @fill_doc
    def f(z):
        """Summary with {braces} left alone.

        Parameters
        ----------
        {z_codes}
        """

    doc = inspect.getdoc(f)
    assert "{braces}" in doc
    assert "z : torch.Tensor of shape (batch, *code_dims)\n    Codes." in doc


def test_a_class_and_its_methods_are_filled():
    @doc_filler({"extra": "x : int\n    Extra."})
    class C:
        """Class.

        Parameters
        ----------
        {extra}
        """

        def m(self, z):
            """Method.

            Parameters
            ----------
            {z_codes}
            """

        @property
        def p(self):
            """Property.

            {returns_per_sample}
            """

        @staticmethod
        def s(z):
            """Static method.

            Parameters
            ----------
            {z_codes}
            """

    assert "x : int\n    Extra." in inspect.getdoc(C)
    assert "Codes." in inspect.getdoc(C.m)
    assert "torch.Tensor of shape (batch,)" in inspect.getdoc(C.p)
    assert "Codes." in inspect.getdoc(vars(C)["s"])


def test_an_unknown_fragment_is_an_error():
    def f():
        """Doc.

        {no_such_fragment}
        """

    with pytest.raises(KeyError, match="no_such_fragment"):
        fill_doc(f)


def test_no_placeholder_is_left_in_the_package():
    left = []
    for info in pkgutil.walk_packages(latentebm.__path__, "latentebm."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            members = [obj, *vars(obj).values()] if inspect.isclass(obj) else [obj]
            members += [m.fget for m in members if isinstance(m, property)]
            members += [m.__func__ for m in members if isinstance(m, (staticmethod, classmethod))]
            for member in members:
                doc = getattr(member, "__doc__", None)
                if isinstance(doc, str) and PLACEHOLDER.search(doc):
                    left.append(f"{module.__name__}.{name}")
    assert not left
    assert all(not PLACEHOLDER.search(text) for text in DOCS.values())
