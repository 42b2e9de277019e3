"""Crash-safe file writes shared by the shard writer, the trainer and its checkpoints, and the export."""
import os
import signal
import threading
from pathlib import Path
from typing import Callable, Optional, Union

__all__ = ['atomic_write_text', 'atomic_savefig', 'write_json', 'new_file_mode', 'set_new_file_mode',
           'raise_on_termination', 'missing_folders', 'remove_made_folders']


def atomic_write_text(path: Union[str, os.PathLike], text: str, tmp_name: Optional[str] = None) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder (``tmp_name``, default
    ``.<name>.tmp-<pid>``), fsync it, then rename it over ``path``: readers see the old file or the new
    one, never a partial one (and, made by ``open``, with the mode of any new file: ``new_file_mode``). If the
    write fails (a full disk: ``OSError``), the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(tmp_name or f'.{path.name}.tmp-{os.getpid()}')
    try:
        with open(tmp, 'w') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:  # never made (a read-only folder), or already renamed
            pass
        raise


def missing_folders(path: Union[str, os.PathLike]) -> list:
    """The folders above ``path`` that do not exist yet, deepest first: what writing ``path`` will make, and so
    what :func:`remove_made_folders` takes away again when that write fails."""
    missing, folder = [], Path(path).resolve().parent
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_made_folders(folders: list) -> None:
    """Remove ``folders`` (from :func:`missing_folders`, deepest first) while they are empty."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            break


def write_json(path: Union[str, os.PathLike], payload: dict) -> Path:
    """``payload`` as indented JSON at ``path`` (folders created), atomically; returns the path."""
    import json
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=1, default=float) + '\n')
    return path


def atomic_savefig(fig, path: Union[str, os.PathLike], dpi: int) -> Path:
    """Save a matplotlib figure as ``path`` (PNG) through a temporary file in the same folder (created if
    needed), then close the figure: a reader never sees half a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}.png')
    fig.savefig(tmp, dpi=dpi)
    import matplotlib.pyplot as plt  # already imported by whoever made ``fig``
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would change it for every thread for a moment)
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(directory: bool = False) -> int:
    """The mode ``open()`` (0o666) or ``mkdir()`` (0o777) gives a new file or folder under the process umask,
    e.g. 0o644 / 0o755 under the usual umask 022."""
    return (0o777 if directory else 0o666) & ~_umask()


def set_new_file_mode(path: Union[str, os.PathLike]) -> None:
    """Give ``path`` the mode of a new file or folder (``new_file_mode``). For what tools create private
    (safetensors' ``save_file`` writes 0o600, ``tempfile.mkdtemp`` makes 0o700) but we mean to share."""
    os.chmod(path, new_file_mode(os.path.isdir(path)))


def raise_on_termination() -> Callable[[], None]:
    """Until the returned function is called (it restores the previous handlers): SIGTERM, and SIGINT where it
    would end the process rather than raise ``KeyboardInterrupt``, raise ``SystemExit(128 + signal number)`` in the
    main thread instead of ending the process on the spot, so that the ``except`` / ``finally`` clean-ups of a
    write in progress run (a temporary folder is removed); a second signal during the clean-up is ignored. Signals
    with a handler of their own (or ignored) are left alone; outside the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}

    def handler(signum, frame):
        for sig in previous:  # the clean-up that the exception starts runs to its end
            signal.signal(sig, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(sig) == signal.SIG_DFL:
            previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return restore
