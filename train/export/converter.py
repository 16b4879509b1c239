"""llama.cpp's own GGUF converters, taken from the llama-cpp-python source distribution.

The converters (``convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py`` with their ``conversion/``
and ``gguf-py/`` folders) ship in the sdist under ``vendor/llama.cpp/``, at exactly the llama.cpp
revision that the installed ``llama_cpp`` was built from. ``converter_dir()`` fetches that sdist
once from the package registry (``pip download``), keeps only those files under the cache folder,
and returns the folder. ``QUIMBOT_LLAMA_CPP_DIR`` may name an existing llama.cpp checkout instead.

    python -m train.export.converter        fetch (or find) the converters and print where they are
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from core.errors import QuimbotError
from tutor.config import Settings
from tutor.llama_build import BuildError, extract_llama_cpp, fetch_sdist

KEEP = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/")
MARKER = "quimbot-converter.txt"


class ConverterError(QuimbotError):
    """The llama.cpp converters could not be found or fetched."""


def llama_cpp_version() -> str:
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ConverterError("llama-cpp-python is not installed; run the set-up command in the README.") from exc
    return llama_cpp.__version__


def _usable(folder: Path) -> bool:
    return all((folder / name.rstrip("/")).exists() for name in KEEP)


def converter_dir(settings: Settings | None = None, say=print) -> Path:
    """A folder holding llama.cpp's converters matching the installed llama-cpp-python."""
    override = os.environ.get("QUIMBOT_LLAMA_CPP_DIR")
    if override:
        folder = Path(override).expanduser()
        if not _usable(folder):
            raise ConverterError(f"QUIMBOT_LLAMA_CPP_DIR={folder} does not hold {', '.join(KEEP)}; point it at a "
                                 "llama.cpp checkout (its root folder) or unset it.")
        return folder
    settings = settings or Settings()
    version = llama_cpp_version()
    folder = Path(settings.cache_dir) / f"llama.cpp-converters-{version}"
    if (folder / MARKER).exists() and _usable(folder):
        return folder
    say(f"fetching llama.cpp's converters: the llama-cpp-python {version} source distribution from the "
        "package registry (about 75 MB, once)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".llama-sdist-", dir=folder.parent) as tmp:
        try:  # the same sdist (cached once) that set-up builds llama-server from
            archive = fetch_sdist(version, Path(settings.cache_dir) / "sdist")
        except BuildError as exc:
            raise ConverterError(f"{exc} Or set QUIMBOT_LLAMA_CPP_DIR to a llama.cpp checkout.") from exc
        staging = Path(tmp) / "converters"
        _extract(archive, staging)
        (staging / MARKER).write_text(f"llama-cpp-python {version} sdist: {archive.name}\n")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)  # atomic: a half-extracted folder is never used
    return folder


def _keep(rel: str) -> bool:
    return any(rel == k or (k.endswith("/") and rel.startswith(k)) for k in KEEP)


def _extract(archive: Path, dest: Path) -> None:
    extract_llama_cpp(archive, dest, keep=_keep)
    missing = [k for k in KEEP if not (dest / k.rstrip("/")).exists()]
    if missing:
        raise ConverterError(f"{archive.name} has no vendor/llama.cpp/{', '.join(missing)}; this llama-cpp-python "
                             "version does not ship the converters. Set QUIMBOT_LLAMA_CPP_DIR to a llama.cpp checkout.")


def converter_env(folder: Path) -> dict[str, str]:
    """Environment for running a converter: its own gguf-py first, offline, quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder / "gguf-py"), str(folder), env.get("PYTHONPATH", "")])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("NO_LOCAL_GGUF", None)  # the converters must use their own gguf-py, not the installed one
    return env


if __name__ == "__main__":  # pragma: no cover
    try:
        print(converter_dir())
    except QuimbotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
