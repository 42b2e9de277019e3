"""Crash-safe file writes shared by the shard writer, the trainer and its checkpoints."""
import os
from pathlib import Path
from typing import Optional, Union

__all__ = ['atomic_write_text']


def atomic_write_text(path: Union[str, os.PathLike], text: str, tmp_name: Optional[str] = None) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder (``tmp_name``, default
    ``.<name>.tmp-<pid>``), fsync it, then rename it over ``path``: readers see the old file or the new
    one, never a partial one."""
    path = Path(path)
    tmp = path.with_name(tmp_name or f'.{path.name}.tmp-{os.getpid()}')
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
