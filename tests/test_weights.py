"""llama-server serves the bundled Q4_1 model from a Q8_0 copy, which llama.cpp's CPU kernels batch.

Real llama.cpp quantizer, real bundled GGUF, real llama-cpp engine for the logits."""

from __future__ import annotations

import logging
import os
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from core.errors import BackendError
from tutor import weights
from tutor.engine import EngineConfig
from tutor.llama_build import default_gguf
from tutor.weights import served_weights, weight_type

TEXT = ("<|im_start|>user\nYesterday I go to the store and buy some apple.<|im_end|>\n<|im_start|>assistant\n"
        "Oh, you went to the store yesterday and bought some apples? What else did you buy?<|im_end|>\n")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("QUIMBOT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _logprobs(path: Path) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=os.cpu_count() or 2)
    tokens = llm.tokenize(TEXT.encode(), add_bos=False, special=True)
    llm.eval(tokens)
    scores = np.array(llm.scores[:len(tokens)], dtype=np.float64)
    del llm
    return scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)


def test_the_bundled_q4_1_model_is_served_from_a_q8_0_copy_that_keeps_its_weights(cache):
    bundled = default_gguf()
    assert weight_type(bundled) == "Q4_1"
    copy = served_weights(bundled)
    assert copy != bundled and copy.parent == cache / "served" and copy.is_file()
    assert weight_type(copy) == "Q8_0"
    assert not list(copy.parent.glob(".*.part"))
    made = copy.stat().st_mtime_ns
    assert served_weights(bundled) == copy and copy.stat().st_mtime_ns == made  # made once, then reused

    # The copy predicts what the original predicts: next-token distributions over a tutoring exchange.
    original, served = _logprobs(bundled), _logprobs(copy)
    kl = (np.exp(original) * (original - served)).sum(axis=1)
    assert kl.mean() < 0.05, f"mean KL divergence {kl.mean():.4f}"
    assert (original.argmax(axis=1) == served.argmax(axis=1)).mean() >= 0.85


def test_types_the_kernels_batch_and_as_is_are_served_unchanged(cache):
    bundled = default_gguf()
    assert served_weights(bundled, "as-is") == bundled
    copy = served_weights(bundled)
    assert served_weights(copy) == copy  # already Q8_0: nothing to do
    assert len(list((cache / "served").glob("*.gguf"))) == 1


def test_a_copy_that_cannot_be_made_serves_the_original_and_says_why(cache, monkeypatch, caplog):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(weights.shutil, "disk_usage", lambda path: Usage(10 << 30, 10 << 30, 1 << 20))
    with caplog.at_level(logging.WARNING, logger="tutor.weights"):
        assert served_weights(default_gguf()) == default_gguf()
    assert "MB free" in caplog.text and "serving" in caplog.text
    assert not list((cache / "served").glob("*.gguf"))


def test_a_quantizer_that_runs_too_long_leaves_no_half_written_copy(cache, monkeypatch, caplog):
    monkeypatch.setattr(weights, "CONVERT_TIMEOUT_S", 0.5)  # the real child process, stopped part way
    with caplog.at_level(logging.WARNING, logger="tutor.weights"):
        assert served_weights(default_gguf()) == default_gguf()
    assert "took over 0.5 s" in caplog.text
    assert not [p for p in (cache / "served").iterdir() if p.suffix in (".gguf", ".part")]


def test_a_file_whose_weights_cannot_be_read_is_left_to_the_engine_to_refuse(cache, tmp_path, caplog):
    broken = tmp_path / "broken.gguf"
    shutil.copyfile(default_gguf(), broken)
    with open(broken, "r+b") as fh:  # the header and tensor table are intact, the weights are cut off
        fh.truncate(broken.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="tutor.weights"):
        assert served_weights(broken) == broken
    assert "could not read the weight types" in caplog.text
    assert not (cache / "served").exists()


def test_the_weights_setting_is_checked(monkeypatch):
    monkeypatch.setenv("QUIMBOT_ENGINE_WEIGHTS", "as-is")
    assert EngineConfig.from_env().weights == "as-is"
    monkeypatch.setenv("QUIMBOT_ENGINE_WEIGHTS", "q4_0")
    with pytest.raises(BackendError, match="QUIMBOT_ENGINE_WEIGHTS='q4_0' is not a choice"):
        EngineConfig.from_env()
