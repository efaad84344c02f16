"""The suite's own order (tests/conftest.py, HEAVY_FIRST): the files it deals first must exist, or a renamed file
silently falls back to the end of the suite, where it holds one xdist worker up alone."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import HEAVY_FIRST, REPO


def test_every_file_dealt_first_exists():
    missing = [path for path in HEAVY_FIRST if not (REPO / path).is_file()]
    assert not missing, f"HEAVY_FIRST names files that are gone: {missing}"


def test_the_heavy_files_are_collected_first(request):
    # In this session's collection (a full run, or a selection): every heavy file collected comes before the rest.
    paths = list(dict.fromkeys(str(Path(item.path).resolve()) for item in request.session.items))
    heavy = {str(REPO / p) for p in HEAVY_FIRST}
    flags = [p in heavy for p in paths]
    assert flags == sorted(flags, reverse=True), paths[:30]
