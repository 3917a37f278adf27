"""How the tour prints a distance: digits that two runs of the same float32 sum agree on, never rounding noise."""

from pathlib import Path

import pytest

from attnlab.web.claims import ROUNDING, distance


@pytest.mark.parametrize(("x", "text"), [(0.0, "< 1e-4"), (1.2e-5, "< 1e-4"), (9.99e-5, "< 1e-4"), (1.26e-3, "1.3e-3"),
                                          (0.01, "0.01"), (2.345, "2.35")])
def test_a_distance_is_printed_as_the_page_prints_it(x: float, text: str) -> None:
    assert distance(x) == text


def test_two_runs_that_differ_by_rounding_print_the_same_text() -> None:
    # The fault this pins: the same nearest-match distance came out 1.2e-5 on the page and 1.3e-5 in the text.
    assert distance(1.2e-5) == distance(1.3e-5)



def test_the_page_uses_the_same_floor() -> None:
    import attnlab.web

    js = (Path(attnlab.web.__file__).parent / "static" / "views.js").read_text()
    rule = next(line for line in js.splitlines() if line.startswith("export const distance"))
    floor = distance(0.0)[2:]  # "1e-4"
    assert float(floor) == ROUNDING and f"x < {floor} ? \"< {floor}\"" in rule, rule
