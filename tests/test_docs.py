"""The examples in the public docstrings run and print what they say."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "name",
    ["fastloss.softmax", "fastloss.classification", "fastloss.regression", "fastloss.binary",
     "fastloss.kl", "fastloss.distributions", "fastloss.margin",
     "fastloss.embeddings", "fastloss.sequence", "fastloss.scale"],
)
def test_docstring_examples(name):
    module = importlib.import_module(name)  # (fastloss.softmax the attribute is the function)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
