"""Helpers shared by the reference generators (tests/reference/gen_*.py): stamps, .npy files,
the ``<out>.tmp`` -> ``<out>`` swap and JSON files. Not a generator itself (CMake runs every
gen_*.py as a test; this module is imported by them). A generator's stamp covers this file too
(``script_stamp``; gen_torchvision.py lists it in its inputs)."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
from typing import Any, Sequence

COMMON = os.path.abspath(__file__)


def package_version(name: str, missing: str = "unknown") -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return missing


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def script_stamp(script: str, packages: Sequence[str] = ("torch", "torchvision")) -> str:
    """A generator's stamp: the hashes of the script and of this module, and the installed
    versions of ``packages``, on one line."""
    parts = [file_sha256(script), file_sha256(COMMON)] + [f"{p}={package_version(p)}" for p in packages]
    return " ".join(parts) + "\n"


def stamp_matches(path: str, stamp: str) -> bool:
    """True when the stamp file ``path`` holds exactly ``stamp`` (an up-to-date output)."""
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return f.read() == stamp


def save_case(root: str, case: str, name: str, array: Any) -> None:
    """``root/case/name.npy`` (C-contiguous), creating ``root/case``."""
    import numpy as np

    d = os.path.join(root, case)
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, name + ".npy"), np.ascontiguousarray(array))


def fresh_dir(out: str) -> str:
    """An empty ``<out>.tmp`` to write into; ``publish`` moves it to ``out``."""
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    return tmp


def publish(tmp: str, out: str, manifest: Any, stamp: str) -> None:
    """Writes ``manifest.json`` and ``stamp`` into ``tmp``, then replaces ``out`` with it."""
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    with open(os.path.join(tmp, "stamp"), "w") as f:
        f.write(stamp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def write_json(path: str, value: Any) -> None:
    """``value`` as JSON indented by 2, with a final newline."""
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def rle_string_counts(s: str) -> list:
    """The counts of a COCO compressed RLE string (pycocotools' rleFrString): 5 bits per
    character + 48, 0x20 = more characters follow, 0x10 of the last = sign, counts from the
    third on relative to the one two before. Used by gen_masks.py's self-check and by
    tests/python/test_cli.py to read rcnn-detect's segmentations."""
    counts, p = [], 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts
