"""The storage directory: every stored file lives at a path built from ids only.

Layout (relative to the root)::

    templates/<user_id>/<template_id>.zip      the uploaded ZIP
    template_files/<user_id>/<template_id>/    its extracted contents
    audio/<user_id>/<audio_id>.<ext>
    assets/<user_id>/<asset_id>.<ext>
    renders/<user_id>/<render_id>.mp4
    tmp/                                        uploads and outputs before they are complete

User-supplied file names never reach a path. Completed files are moved into place with an
atomic rename from ``tmp/`` (same filesystem), so a reader never sees a half-written file.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path, PurePosixPath

KINDS = frozenset({"templates", "template_files", "audio", "assets", "renders"})
_SUFFIX_RE = re.compile(r"^(\.[A-Za-z0-9]{1,10})?$")


class Storage:
    """A storage root (local directory or a shared mount such as NFS/EFS)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def ensure(self) -> None:
        """Create the root and its temporary directory."""
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def abs(self, relative: str) -> Path:
        """The absolute path of a stored relative path.

        Raises:
            ValueError: ``relative`` is absolute or climbs out of the root.
        """
        rel = PurePosixPath(relative)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"storage path {relative!r} is not a plain relative path")
        return self.root.joinpath(*rel.parts)

    def new_path(
        self, kind: str, user_id: uuid.UUID, object_id: uuid.UUID, suffix: str = ""
    ) -> str:
        """The relative path for an object (its parent directory is created).

        Args:
            kind: one of ``KINDS``.
            user_id: owner; objects are grouped per account.
            object_id: the row id.
            suffix: ``""`` or an extension such as ``".zip"``.

        Raises:
            ValueError: unknown kind or a suffix that is not a short extension.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown storage kind {kind!r}")
        if not _SUFFIX_RE.match(suffix):
            raise ValueError(f"storage suffix {suffix!r} is not a short extension")
        relative = f"{kind}/{uuid.UUID(str(user_id))}/{uuid.UUID(str(object_id))}{suffix}"
        self.abs(relative).parent.mkdir(parents=True, exist_ok=True)
        return relative

    path_for = new_path

    def tmp_path(self, suffix: str = "") -> Path:
        """A fresh, unused absolute path under ``tmp/`` (nothing is created)."""
        if not _SUFFIX_RE.match(suffix):
            raise ValueError(f"storage suffix {suffix!r} is not a short extension")
        self.ensure()
        return self.root / "tmp" / f"{uuid.uuid4().hex}{suffix}"

    def move_into_place(self, tmp: Path, relative: str) -> Path:
        """Atomically rename ``tmp`` to the stored ``relative`` path; returns the final path."""
        final = self.abs(relative)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        return final

    def remove(self, relative: str | None) -> None:
        """Delete a stored file or directory tree; missing paths are fine."""
        if not relative:
            return
        path = self.abs(relative)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def size(self, relative: str | None) -> int:
        """Size in bytes of a stored file or directory tree (0 when missing)."""
        if not relative:
            return 0
        path = self.abs(relative)
        if path.is_file():
            return path.stat().st_size
        return self.dir_size(relative)

    def dir_size(self, relative: str) -> int:
        """Total size of the regular files under a stored directory (symlinks not followed)."""
        total = 0
        for dirpath, _dirs, files in os.walk(self.abs(relative)):
            for name in files:
                path = os.path.join(dirpath, name)
                if not os.path.islink(path):
                    total += os.path.getsize(path)
        return total

    def free_bytes(self) -> int:
        """Free space on the filesystem holding the root."""
        self.ensure()
        return shutil.disk_usage(self.root).free
