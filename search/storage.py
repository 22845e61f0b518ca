"""Where an experiment lives: a local (or shared) directory, or a cloud URI that Ray writes through pyarrow.

Ray persists its own state (experiment snapshots, trial results and checkpoints) to either kind of
``--storage-path`` by itself. The driver's own files (``search.json``, the Optuna journal,
``summary.json``, offline W&B runs) are ordinary local files, so for a URI they are written to a local
mirror directory and copied to the experiment's location with the same pyarrow filesystem Ray uses:

- ``search.json`` right after it is written, so that ``--resume`` can find a search killed early;
- ``study.journal`` inside each of Ray's experiment snapshots (see
  :meth:`search.study.PruneAwareOptunaSearch.save`), so that the study and Ray's searcher state
  stay consistent with each other;
- everything at the end of each run (and of each interrupted run).

On ``--resume`` the mirror is rebuilt from the experiment's location, which holds the truth.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from nsm.config import PROJECT_NAME
from nsm.errors import first_line
from search.errors import SearchError


def is_uri(storage_path: str) -> bool:
    """``scheme://...`` (``s3://``, ``gs://``, ``file://``, ...), as opposed to a plain path."""
    return "://" in storage_path


def experiment_location(storage_path: str, name: str) -> str:
    """The experiment ``name`` under ``storage_path``; a URI's query (``?endpoint_override=...``) is kept."""
    if not is_uri(storage_path):
        return str(Path(storage_path) / name)
    parts = urlsplit(storage_path)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + name))


def local_mirror(storage_path: str, name: str) -> Path:
    """The local directory that mirrors a URI experiment's driver files.

    Derived from the location alone, so it is the same path on every machine and in every run: the
    Optuna searcher that Ray pickles keeps the journal's path, and a restore elsewhere finds it again.
    """
    digest = hashlib.sha256(experiment_location(storage_path, name).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"{PROJECT_NAME}-mirror" / digest / name


def check_storage_uri(storage_path: str) -> None:
    """Fail fast, in one line, on a URI pyarrow cannot open (unknown scheme, bad options, no access)."""
    import pyarrow.fs

    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(storage_path)
        is_file = filesystem.get_file_info(path).type == pyarrow.fs.FileType.File
        bucket = path.strip("/").split("/")[0]
        # Object stores: the bucket must exist (prefixes need not).
        bucket_missing = (filesystem.type_name != "local"
                          and filesystem.get_file_info(bucket).type == pyarrow.fs.FileType.NotFound)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ... with multi-line messages
        raise SearchError(f"--storage-path {storage_path}: cannot open it ({first_line(error)})") from None
    if is_file:
        raise SearchError(f"--storage-path {storage_path} exists and is not a directory")
    if bucket_missing:
        raise SearchError(f"--storage-path {storage_path}: bucket {bucket!r} does not exist")


def exists(location: str) -> bool:
    """Whether anything (a file or a directory) exists at ``location``."""
    if not is_uri(location):
        return Path(location).exists()
    import pyarrow.fs

    return _file_type(location) != pyarrow.fs.FileType.NotFound


def is_file(location: str, name: str) -> bool:
    """Whether ``location`` holds a file called ``name``."""
    if not is_uri(location):
        return (Path(location) / name).is_file()
    import pyarrow.fs

    return _file_type(experiment_location(location, name)) == pyarrow.fs.FileType.File


def read_text(location: str, name: str) -> str:
    """The text of the file ``name`` at ``location``."""
    if not is_uri(location):
        return (Path(location) / name).read_text()
    with _one_line_errors(location):
        filesystem, path = _resolve(experiment_location(location, name))
        with filesystem.open_input_stream(path) as stream:
            return stream.readall().decode()


def write_text(location: str, name: str, text: str) -> None:
    """Write (or replace) the file ``name`` at ``location``; a local file is replaced atomically."""
    if not is_uri(location):
        path = Path(location) / name
        staged = path.with_name(f".{name}.tmp")
        staged.write_text(text)
        staged.replace(path)
        return
    with _one_line_errors(location):
        filesystem, path = _resolve(experiment_location(location, name))
        with filesystem.open_output_stream(path) as stream:
            stream.write(text.encode())


def delete(location: str, name: str) -> None:
    """Remove the file ``name`` at ``location`` if it exists."""
    if not is_uri(location):
        (Path(location) / name).unlink(missing_ok=True)
        return
    import pyarrow.fs

    with _one_line_errors(location):
        filesystem, path = _resolve(experiment_location(location, name))
        if filesystem.get_file_info(path).type == pyarrow.fs.FileType.File:
            filesystem.delete_file(path)


def directories(location: str, prefix: str = "") -> list[str]:
    """Names of the directories directly at ``location`` whose names start with ``prefix``."""
    if not is_uri(location):
        root = Path(location)
        return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix)) if root.is_dir() else []
    import pyarrow.fs

    with _one_line_errors(location):
        filesystem, path = _resolve(location)
        infos = filesystem.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    return sorted(info.base_name for info in infos
                  if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith(prefix))


def move(location: str, name: str, new_name: str) -> None:
    """Move the file or directory ``name`` at ``location`` to ``new_name`` (a relative path there)."""
    if not is_uri(location):
        destination = Path(location) / new_name
        destination.parent.mkdir(parents=True, exist_ok=True)
        (Path(location) / name).rename(destination)
        return
    import pyarrow.fs

    with _one_line_errors(location):
        filesystem, path = _resolve(location)
        # Object stores cannot rename a directory: copy it, then delete the original.
        filesystem.create_dir(f"{path}/{new_name}", recursive=True)
        pyarrow.fs.copy_files(f"{path}/{name}", f"{path}/{new_name}", source_filesystem=filesystem,
                              destination_filesystem=filesystem)
        filesystem.delete_dir(f"{path}/{name}")


def reset_mirror(mirror: Path) -> None:
    """An empty mirror directory: what an earlier run left there is older than the experiment's location."""
    shutil.rmtree(mirror, ignore_errors=True)
    mirror.mkdir(parents=True)


def pull(location: str, mirror: Path, names: Iterable[str]) -> None:
    """Copy the files ``names`` that ``location`` holds into ``mirror`` (missing ones are skipped)."""
    with _one_line_errors(location):
        _pull(location, mirror, names)


def _pull(location: str, mirror: Path, names: Iterable[str]) -> None:
    import pyarrow.fs

    filesystem, path = _resolve(location)
    for name in names:
        source = f"{path}/{name}"
        if filesystem.get_file_info(source).type == pyarrow.fs.FileType.File:
            pyarrow.fs.copy_files(source, str(mirror / name), source_filesystem=filesystem,
                                  destination_filesystem=pyarrow.fs.LocalFileSystem())


def push(mirror: Path, location: str, names: Iterable[str]) -> None:
    """Copy the files or directories ``names`` in ``mirror`` to ``location`` (missing ones are skipped)."""
    with _one_line_errors(location):
        _push(mirror, location, names)


def _push(mirror: Path, location: str, names: Iterable[str]) -> None:
    import pyarrow.fs

    filesystem, path = _resolve(location)
    for name in names:
        source = mirror / name
        if not source.exists():
            continue
        destination = f"{path}/{name}"
        filesystem.create_dir(destination if source.is_dir() else path, recursive=True)
        pyarrow.fs.copy_files(str(source), destination, source_filesystem=pyarrow.fs.LocalFileSystem(),
                              destination_filesystem=filesystem)


@contextlib.contextmanager
def _one_line_errors(location: str) -> Iterator[None]:
    """A storage failure (network, credentials, permissions) as a one-line SearchError."""
    try:
        yield
    except OSError as error:  # pyarrow's IO errors are OSErrors
        raise SearchError(f"{location}: {first_line(error)}") from None


def _file_type(location: str) -> object:
    """pyarrow's FileType of what is at a URI."""
    with _one_line_errors(location):
        filesystem, path = _resolve(location)
        return filesystem.get_file_info(path).type


def _resolve(location: str) -> tuple[object, str]:
    import pyarrow.fs

    filesystem, path = pyarrow.fs.FileSystem.from_uri(location)
    return filesystem, path.rstrip("/")
