"""``model_file_download`` as in modelscope 1.40.2: returns the local path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def model_file_download(
    model_id, file_path, revision=None, *, cache_dir=None, local_dir=None, **kw
):
    src = Path(os.environ["STUB_MODELSCOPE_ROOT"]) / model_id / file_path
    dst = Path(local_dir) / file_path
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return str(dst)
