import os
import signal
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A suite started as a background job begins with SIGINT ignored, and an ignored signal stays
# ignored across exec: the children tests Ctrl-C would never see it. A handled one is reset to
# its default action at exec, so handling it here gives every child a terminal's Ctrl-C.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# parallel workers (pytest-xdist) draw free ports from disjoint slices; their children inherit it
if os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw"):
    os.environ["GENIR_PORT_SLICE"] = (f"{int(os.environ['PYTEST_XDIST_WORKER'][2:])}/"
                                      f"{int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))}")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_models() -> Path:
    """The project's tiny random checkpoints (built once, cached under .cache/tiny-models)."""
    from genir.tiny_models import build_all

    out = Path(os.environ.get("GENIR_TEST_MODELS", ROOT / ".cache" / "tiny-models"))
    build_all(out, seed=0)
    return out
