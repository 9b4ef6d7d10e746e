"""Files and folders shared by memn2n.py and a3c.py: writable-folder checks and atomic writes.

A checkpoint is written into a temporary folder beside its final place and renamed into place,
and the small JSON file that points at it is replaced with os.replace: a crash at any moment
leaves the old checkpoint or the new one, complete."""
import contextlib
import json
import os
import shutil
import tempfile

from cli import UserError


def writable_dir(path, flag, created=None):
    """Create `path` if needed and prove it can be written, before any training is done, so a model
    is never trained only to find it cannot be saved. Folders it made are appended to `created`."""
    missing, p = [], os.path.abspath(path)
    while not os.path.exists(p):
        missing.append(p)
        p = os.path.dirname(p)
    try:
        os.makedirs(path, exist_ok=True)
        if created is not None:
            created.extend(reversed(missing))
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        raise UserError(f"cannot write {flag} {path} ({e.strerror or e}); choose a folder you can write to") from None


def write_json_atomic(path, data):
    """Write `data` as JSON to `path` through a temporary file and os.replace (atomic)."""
    name = f".{os.path.basename(path)}-{os.getpid()}-{os.urandom(4).hex()}.tmp"
    tmp = os.path.join(os.path.dirname(path) or ".", name)
    try:
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def staged_dir(parent):
    """A new temporary folder inside `parent`, removed again unless the body renamed it away."""
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_empty(paths):
    """Remove the folders in `paths` (made by this run, then never used), newest first, if empty."""
    for path in reversed(paths):
        with contextlib.suppress(OSError):
            os.rmdir(path)
