"""GGUF weights in a form llama.cpp's CPU kernels batch, and llama.cpp's quantizer.

llama-server decodes concurrent learners together, one matrix product per step for all of them. On
x86 CPUs llama.cpp has batched (GEMM) kernels for Q8_0, Q4_0, Q5_0 and IQ4_NL weights (llamafile's
tinyBLAS, and the repacked Q4_0/IQ4_NL layouts), but none for Q4_1 or Q5_1: those multiply one
learner's vector at a time, so 8 learners cost nearly 8 times one. The bundled SmolLM2 GGUF is Q4_1.

``served_weights(path)`` returns the file llama-server should load for ``path``: the file itself, or,
for a GGUF whose weights are mostly Q4_1 or Q5_1, a Q8_0 copy made once with llama.cpp's own quantizer
and cached under ``~/.cache/quimbot/served/``. Going from 4 or 5 bits to 8 keeps the weights: on 5,834
tokens of our tutoring dialogues the bundled model's copy had a mean KL divergence of 0.006 from the
original, the same top token at 95.8% of positions and perplexity 19.74 against 19.80 (a Q4_0 or
IQ4_NL copy, which would batch too, lost more: KL 0.32 / 0.22, perplexity 23.1 / 22.7). It is 145 MB
against 92 MB. ``QUIMBOT_ENGINE_WEIGHTS=as-is`` serves every file as it is.

The copy is written under a temporary name and renamed when complete, in a child process (the
quantizer's log goes to a file, and a crash there cannot take the app down); when it cannot be made
(no disk space, the quantizer fails) the original is served and the reason is logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from core.errors import BackendError
from core.files import write_json

log = logging.getLogger(__name__)

# llama.cpp's file types (llama_ftype) used here
FTYPE_Q8_0 = 7
UNBATCHED = frozenset({"Q4_1", "Q5_1"})  # weight types with no batched kernel on x86 CPUs
CONVERT_TIMEOUT_S = 1800.0

_lock = threading.Lock()


def quantize(src: Path, dst: Path, ftype: int, *, requantize: bool = False, say=print) -> None:
    """``src`` quantized to llama.cpp file type ``ftype`` at ``dst`` (llama.cpp's quantizer, in this
    process). ``requantize`` allows a source that is already quantized."""
    import llama_cpp

    say(f"quantizing {src.name} -> {dst.name} (llama.cpp ftype {ftype})")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 2
    params.allow_requantize = requantize
    code = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if code != 0 or not dst.is_file():
        raise BackendError(f"llama.cpp could not quantize {src} to ftype {ftype} (code {code}).")


def weight_type(path: Path) -> str:
    """The type most of the GGUF's weights (by element count) are stored in, e.g. ``Q4_1``."""
    import gguf

    counts: dict[str, int] = {}
    for tensor in gguf.GGUFReader(str(path)).tensors:
        if len(tensor.shape) >= 2:  # matrices; norms and biases stay F32 in every file type
            name = tensor.tensor_type.name
            counts[name] = counts.get(name, 0) + int(tensor.n_elements)
    if not counts:
        raise BackendError(f"{path} holds no weight matrices.")
    return max(counts, key=counts.__getitem__)


def served_dir() -> Path:
    from tutor.llama_build import cache_root

    return cache_root() / "served"


def copy_path(path: Path) -> Path:
    """Where the Q8_0 copy of ``path`` lives: named after the file and keyed on its path, size and mtime,
    so a file replaced in place gets a new copy."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return served_dir() / f"{path.stem}-{key}.q8_0.gguf"


def served_weights(path: Path, mode: str = "q8_0") -> Path:
    """The file llama-server should load for the GGUF at ``path`` (see the module's docstring);
    ``mode`` is QUIMBOT_ENGINE_WEIGHTS (``EngineConfig.weights``): ``q8_0`` or ``as-is``."""
    if mode == "as-is":
        return path
    target = copy_path(path)
    if target.is_file():  # made before, so the source is Q4_1 or Q5_1: no need to read its tensors again
        return target
    try:
        source_type = weight_type(path)
    except Exception as exc:  # noqa: BLE001 - llama-server gives the real error for a broken file
        log.warning("could not read the weight types of %s (%s); serving it as it is", path, exc)
        return path
    if source_type not in UNBATCHED:
        return path
    with _lock:
        if target.is_file():
            return target
        try:
            return _convert(path, target, source_type)
        except BackendError as exc:
            log.warning("%s; serving %s as it is (%s weights, decoded one learner at a time)", exc, path,
                        source_type)
            return path


def _convert(path: Path, target: Path, source_type: str) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    need = 2 * path.stat().st_size + (64 << 20)
    free = shutil.disk_usage(target.parent).free
    if free < need:
        raise BackendError(f"no Q8_0 copy of {path.name}: {free >> 20} MB free in {target.parent}, "
                           f"{need >> 20} MB needed")
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    logfile = target.with_suffix(".log")
    t0 = time.monotonic()
    log.info("serving %s (%s) from a Q8_0 copy, which the CPU kernels batch: writing %s", path.name,
             source_type, target)
    try:
        with open(logfile, "w") as out:
            proc = subprocess.run([sys.executable, "-m", "tutor.weights", str(path), str(part)], stdout=out,
                                  stderr=subprocess.STDOUT, timeout=CONVERT_TIMEOUT_S)
        if proc.returncode != 0 or not part.is_file() or weight_type(part) != "Q8_0":
            tail = logfile.read_text(errors="replace").strip().splitlines()[-3:]
            raise BackendError(f"the Q8_0 copy of {path.name} failed (exit {proc.returncode}): "
                               f"{' / '.join(tail) or 'no output'}; see {logfile}")
        os.replace(part, target)
    except subprocess.TimeoutExpired as exc:
        raise BackendError(f"the Q8_0 copy of {path.name} took over {CONVERT_TIMEOUT_S:g} s") from exc
    finally:
        part.unlink(missing_ok=True)
    seconds = time.monotonic() - t0
    st = path.stat()
    write_json(target.with_suffix(".json"),
               {"source": str(path.resolve()), "source_bytes": st.st_size, "source_mtime_ns": st.st_mtime_ns,
                "source_type": source_type, "type": "Q8_0", "bytes": target.stat().st_size,
                "seconds": round(seconds, 2)})
    log.info("wrote the Q8_0 copy of %s in %.1f s", path.name, seconds)
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m tutor.weights SRC DST``: the Q8_0 copy, run in a child process by ``served_weights``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m tutor.weights SRC.gguf DST.gguf", file=sys.stderr)
        return 2
    try:
        quantize(Path(args[0]), Path(args[1]), FTYPE_Q8_0, requantize=True)
    except BackendError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
