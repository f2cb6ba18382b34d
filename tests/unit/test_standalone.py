"""The repository stands alone: no tracked file reaches outside the clone for data, docs or settings.

A user's clone has nothing beside it, so a path to a sibling folder or an override variable for one
works only on the machine where it was written.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from testkit.procs import ROOT

# A sibling `shared` folder, the design notes kept there, or a variable pointing at it.
OUTSIDE = re.compile(r"\.\./shared\b|\bshared/(reference|data|hooks|DESIGN)|GENIR_SHARED\w*|\bDESIGN\.md\b")
THIS = Path(__file__).resolve()


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        return [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked archive)
        skip = {".git", ".venv", ".cache", "__pycache__"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def test_no_tracked_file_refers_outside_the_repository():
    offenders = []
    for path in tracked_files():
        if path.resolve() == THIS or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary files (images, fonts)
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert not offenders, "files that refer outside the repository:\n" + "\n".join(offenders)


def test_the_pattern_catches_what_it_must():
    # the examples are assembled, so this file itself never names what it forbids
    sib, design = "shared", "DESIGN" + ".md"
    for bad in (f"see ../{sib}/reference/x.md", f"GENIR_{sib.upper()}_DIR=/x", f"as in {design} §5",
                f"{sib}/data/chatir/x.json"):
        assert OUTSIDE.search(bad), bad
    for fine in ("data/chatir/README.md", "shared memory regions", "the shared `results` volume"):
        assert not OUTSIDE.search(fine), fine


def test_chatir_files_are_in_the_repository():
    chatir = ROOT / "data" / "chatir"
    for name in ("Search_Space_val_50k.json", "VisDial_v1.0_queries_val.json", "LICENSE.md", "README.md"):
        assert (chatir / name).is_file(), name
    assert "MIT License" in (chatir / "LICENSE.md").read_text()
