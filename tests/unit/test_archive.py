"""safe_extract: hostile archives refused before anything is written, good ones extracted."""

from __future__ import annotations

import json
import os
import stat
import warnings
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from renderer.errors import InvalidTemplate
from renderer.template.archive import safe_extract

# Hostile archives whose refusal comes from the archive layer itself (the rest need data.json
# parsing or media probing and are covered in test_loader).
ARCHIVE_LEVEL = [
    "traversal",
    "absolute",
    "drive_letter",
    "backslash",
    "symlink",
    "device",
    "missing_data_json",
    "declared_size",
    "lying_header",
    "zip_bomb",
    "two_top_level",
    "not_a_zip",
    "too_many_entries",
]
GOOD = json.dumps({"width": 64, "height": 36, "frames": 4}).encode()


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, payload in entries:
            zf.writestr(name, payload)
    return path


@pytest.mark.parametrize("name", ARCHIVE_LEVEL)
def test_hostile_archive_refused_and_nothing_written(
    name: str, hostile_zips: dict[str, tuple[Path, str]], tmp_path: Path
) -> None:
    archive, reason = hostile_zips[name]
    parent = tmp_path / "parent"
    dest = parent / "dest"
    dest.mkdir(parents=True)
    (parent / "sibling.txt").write_text("keep")
    before = _listing(tmp_path)

    with pytest.raises(InvalidTemplate) as info:
        safe_extract(archive, dest)

    assert reason in str(info.value)
    assert _listing(tmp_path) == before
    assert list(dest.iterdir()) == []


def test_all_archive_level_names_exist(hostile_zips: dict[str, tuple[Path, str]]) -> None:
    assert set(ARCHIVE_LEVEL) <= set(hostile_zips)


def test_refusal_removes_a_destination_it_created(
    hostile_zips: dict[str, tuple[Path, str]], tmp_path: Path
) -> None:
    dest = tmp_path / "new" / "dest"
    with pytest.raises(InvalidTemplate):
        safe_extract(hostile_zips["lying_header"][0], dest)
    assert list(tmp_path.iterdir()) == []


def test_flat_zip_returns_dest(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "t.zip",
        [("data.json", GOOD), ("images/a.txt", b"a"), ("images/", b"")],
    )
    dest = tmp_path / "out"
    root = safe_extract(archive, dest)
    assert root == dest
    assert (root / "data.json").read_bytes() == GOOD
    assert (root / "images/a.txt").read_bytes() == b"a"


def test_single_container_folder_returns_that_folder(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "t.zip",
        [("promo/data.json", GOOD), ("promo/images/a.txt", b"a"), ("README.txt", b"top file")],
    )
    root = safe_extract(archive, tmp_path / "out")
    assert root == tmp_path / "out" / "promo"
    assert (root / "data.json").is_file()


def test_macos_junk_is_skipped_and_does_not_count_as_a_folder(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "t.zip",
        [
            ("promo/data.json", GOOD),
            ("promo/.DS_Store", b"junk"),
            ("__MACOSX/promo/._data.json", b"junk"),
        ],
    )
    dest = tmp_path / "out"
    root = safe_extract(archive, dest)
    assert root == dest / "promo"
    assert _listing(dest) == ["promo", "promo/data.json"]


def test_data_json_too_deep_is_explained(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "t.zip", [("a/b/data.json", GOOD)])
    with pytest.raises(InvalidTemplate, match="'a/b/data.json', which is too deep"):
        safe_extract(archive, tmp_path / "out")


def test_entry_limit_is_configurable(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "t.zip", [("data.json", GOOD)] + [(f"f{i}", b"") for i in range(5)])
    with pytest.raises(InvalidTemplate, match=r"too many entries \(6; the limit is 5\)"):
        safe_extract(archive, tmp_path / "out", max_entries=5)
    assert safe_extract(archive, tmp_path / "ok", max_entries=6) == tmp_path / "ok"


def test_total_size_limit_is_configurable(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "t.zip", [("data.json", GOOD), ("big.bin", os.urandom(5000))])
    with pytest.raises(InvalidTemplate, match="declared uncompressed size"):
        safe_extract(archive, tmp_path / "out", max_total_bytes=4096)
    assert not (tmp_path / "out").exists()


def test_small_highly_compressible_files_are_not_bombs(tmp_path: Path) -> None:
    # 100 KB of zeros compresses ~1000:1 but is harmless; the ratio check starts at 1 MB.
    archive = _zip(tmp_path / "t.zip", [("data.json", GOOD), ("pad.bin", bytes(100_000))])
    root = safe_extract(archive, tmp_path / "out")
    assert (root / "pad.bin").stat().st_size == 100_000


def test_ratio_limit_is_configurable(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "t.zip", [("data.json", GOOD), ("pad.bin", bytes(2 << 20))])
    assert safe_extract(archive, tmp_path / "out", max_ratio=5000).is_dir()
    with pytest.raises(InvalidTemplate, match="compression ratio"):
        safe_extract(archive, tmp_path / "out2", max_ratio=10)


def test_failure_midway_keeps_preexisting_files_and_removes_new_ones(tmp_path: Path) -> None:
    # The corrupt entry comes last, so earlier entries are written before the failure.
    mf = _load_fixtures()
    archive = _zip(
        tmp_path / "t.zip",
        [("data.json", GOOD), ("images/a.txt", b"a" * 100), ("z/pad.bin", b"B" * 4096)],
    )
    mf._patch_sizes(archive, {"z/pad.bin": 16})
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(InvalidTemplate, match="'z/pad.bin' is corrupt"):
        safe_extract(archive, dest)
    assert _listing(dest) == ["keep.txt"]
    assert (dest / "keep.txt").read_text() == "mine"


def test_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "t.zip", [("images/a.txt", b"new"), ("data.json", GOOD)])
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "data.json").write_text("original")
    with pytest.raises(InvalidTemplate, match="already exists"):
        safe_extract(archive, dest)
    assert (dest / "data.json").read_text() == "original"
    assert _listing(dest) == ["data.json"]


def test_symlinked_folder_inside_dest_cannot_redirect_writes(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "images").symlink_to(outside, target_is_directory=True)
    archive = _zip(tmp_path / "t.zip", [("data.json", GOOD), ("images/x.png", b"evil")])
    with pytest.raises(InvalidTemplate, match="outside the template folder"):
        safe_extract(archive, dest)
    assert list(outside.iterdir()) == []
    assert _listing(dest) == ["images"]


def test_duplicate_entries_refused(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate
        archive = _zip(tmp_path / "t.zip", [("data.json", GOOD), ("data.json", b"{}")])
    with pytest.raises(InvalidTemplate, match="appears more than once"):
        safe_extract(archive, tmp_path / "out")


def test_encrypted_entries_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "t.zip", [("data.json", GOOD)])
    # zipfile will not write the "encrypted" flag itself; set it in the central directory.
    blob = bytearray(archive.read_bytes())
    central = blob.find(b"PK\x01\x02")
    blob[central + 8] |= 0x1
    archive.write_bytes(bytes(blob))
    with pytest.raises(InvalidTemplate, match="encrypted"):
        safe_extract(archive, tmp_path / "out")


@pytest.mark.parametrize(
    ("mode", "word"),
    [(stat.S_IFIFO | 0o644, "FIFO"), (stat.S_IFBLK | 0o644, "block device")],
)
def test_special_file_types_refused(mode: int, word: str, tmp_path: Path) -> None:
    info = zipfile.ZipInfo("thing")
    info.create_system = 3
    info.external_attr = mode << 16
    archive = _zip(tmp_path / "t.zip", [("data.json", GOOD), (info, b"")])
    with pytest.raises(InvalidTemplate, match=word):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dot_segment_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "t.zip", [("data.json", GOOD), ("a/./b", b"x")])
    with pytest.raises(InvalidTemplate, match="'a/./b'"):
        safe_extract(archive, tmp_path / "out")


def test_truncated_archive_is_not_a_zip(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "t.zip", [("data.json", GOOD)])
    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive.read_bytes()[:40])
    with pytest.raises(InvalidTemplate, match="not a ZIP archive"):
        safe_extract(cut, tmp_path / "out")


def _load_fixtures() -> ModuleType:
    from tests.conftest import load_fixtures_module

    return load_fixtures_module()
