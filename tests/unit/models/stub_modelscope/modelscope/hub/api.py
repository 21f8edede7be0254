"""``HubApi.get_model_files`` as in modelscope 1.40.2: ``[{"Path", "Size"}, ...]``."""

from __future__ import annotations

import os
from pathlib import Path


class HubApi:
    def get_model_files(self, model_id, revision=None, root=None, recursive=True, **kwargs):
        repo = Path(os.environ["STUB_MODELSCOPE_ROOT"]) / model_id
        if not repo.is_dir():
            raise ValueError(f"model {model_id} not found")
        return [
            {"Path": str(p.relative_to(repo)), "Size": p.stat().st_size}
            for p in sorted(repo.rglob("*"))
            if p.is_file()
        ]
