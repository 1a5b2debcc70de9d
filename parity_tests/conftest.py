"""Parity tests: jaxdrop and torchdrop (and the peers) on identical draws."""

from __future__ import annotations

from parity_tests import tolerances


def pytest_terminal_summary(terminalreporter):
    if not tolerances.WORST:
        return
    terminalreporter.section("parity: worst relative error observed")
    for (comparison, row, kind), error in sorted(tolerances.WORST.items()):
        rtol, _ = tolerances.TOLERANCES[row][kind]
        terminalreporter.write_line(
            f"{comparison:>20} {row:>14} {kind:<6} {error:.3g} (rtol {rtol:.3g})"
        )
