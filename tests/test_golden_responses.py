"""Every request fixture, under both order hooks, is answered exactly as its golden file says."""

from __future__ import annotations

from typing import Any

import pytest
from golden_responses import cases, golden_path


@pytest.mark.parametrize(("name", "hook"), cases(), ids=[f"{n} at {h}" for n, h in cases()])
def test_the_answer_is_byte_identical_to_its_golden_file(
    frozen_answer: Any, name: str, hook: str
) -> None:
    """A difference is either a regression or a deliberate change: `make golden` regenerates the
    files, and the diff of that commit is reviewed."""
    expected = golden_path(name, hook).read_bytes()
    assert frozen_answer(name, hook).decode() == expected.decode()
