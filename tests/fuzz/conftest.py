"""Report how many fuzz cases ran, in the terminal summary (also with pytest-xdist, where tests run in workers).

Fuzz tests print a line ``<what> fuzz cases run: N ...``; the captured output travels with each test report
to the controlling process, where this hook collects the lines and lists them at the end of the run.
"""

from __future__ import annotations

import re

import pytest

_LINE = re.compile(r"^(.*fuzz cases run: \d+.*)$", re.MULTILINE)
_SEEN: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for _name, text in report.sections:
        _SEEN.extend(m.strip() for m in _LINE.findall(text))


def pytest_terminal_summary(terminalreporter) -> None:
    if _SEEN:
        terminalreporter.section("fuzz cases")
        for line in _SEEN:
            terminalreporter.write_line(line)
