#!/usr/bin/env python3
"""Coverage-guided fuzzing of fastloss with atheris (libFuzzer's engine for Python).

    pip install atheris
    python tests/fuzz/fuzz_fastloss.py tests/fuzz/corpus -max_total_time=600 -rss_limit_mb=4096

Every input goes through ``harness.one_input`` (see harness.py for what it checks). The Python
code of fastloss and of the harness is instrumented, so the fuzzer is guided by the branches of
the argument checks, the shape logic and the .npy reader; the C++ kernels are reached through
them. To catch memory errors in the kernels too, run it against the sanitizer build of
``.ci/sanitize`` (``bash .ci/sanitize --fuzz -max_total_time=600``).

A failing input is written as ``crash-<sha1>`` in the working directory. Keep it: copy it into
``tests/fuzz/crashes/`` with a descriptive name, fix the bug, and ``tests/test_fuzz.py`` replays
it in CI from then on.
"""

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["fastloss", "harness"]):
    import harness


def test_one_input(data: bytes) -> None:
    harness.one_input(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
