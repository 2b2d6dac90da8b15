"""Small file-system helpers both sides use on their hot paths."""
from __future__ import annotations

import os
from pathlib import Path


def make_folder(folder: Path) -> None:
    """Create `folder`, and its parents only when they are missing: one mkdir call when the
    parent exists (the common case), and an existing folder is fine."""
    try:
        os.mkdir(folder)
    except FileExistsError:
        pass
    except FileNotFoundError:
        Path(folder).mkdir(parents=True, exist_ok=True)
