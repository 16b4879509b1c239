"""Export: a real trained adapter of the default model -> merged GGUF (llama.cpp's converter), GGUF
LoRA, Ollama Modelfile; the parity check across transformers and llama-cpp, and what it must catch."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tutor.backends.base import GenerationOptions
from tutor.catalog import list_models
from tutor.config import Settings
from tutor.prompts import system_prompt

GREEDY = GenerationOptions(temperature=0.0, max_tokens=24, seed=0)
PARITY = dict(n_prompts=5, max_tokens=24)


def test_bad_checkpoints_are_explained(tmp_path):
    from train.export.gguf_export import ExportError, export_gguf

    settings = Settings(exports_dir=tmp_path / "exports")
    with pytest.raises(ExportError, match="not found"):
        export_gguf(tmp_path / "nope", ["f16"], settings)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="no adapter_config.json"):
        export_gguf(tmp_path / "empty", ["f16"], settings)
    (tmp_path / "empty" / "adapter_config.json").write_text("{}")
    with pytest.raises(ExportError, match="no adapter weights"):
        export_gguf(tmp_path / "empty", ["f16"], settings)
    with pytest.raises(ExportError, match="Unknown GGUF type q3"):
        export_gguf(tmp_path / "empty", ["q3"], settings)
    assert not (tmp_path / "exports").exists() or not any((tmp_path / "exports").rglob("*"))


def test_modelfile_parser_follows_ollamas_grammar():
    from train.export.modelfile import ModelfileError, parse_modelfile

    parsed = parse_modelfile('# c\nFROM ./m.gguf\nTEMPLATE """a\n{{ .Content }}"""\nPARAMETER stop "<|im_end|>"\n'
                             "parameter temperature 0.7\n")
    assert parsed == [("FROM", "./m.gguf"), ("TEMPLATE", "a\n{{ .Content }}"), ("PARAMETER", "stop <|im_end|>"),
                      ("PARAMETER", "temperature 0.7")]
    with pytest.raises(ModelfileError, match="line 2: unknown instruction"):
        parse_modelfile("FROM x\nFORM y\n")
    with pytest.raises(ModelfileError, match="never closed"):
        parse_modelfile('FROM x\nSYSTEM """open\n')
    with pytest.raises(ModelfileError, match="no FROM"):
        parse_modelfile("SYSTEM hi\n")


def render_go(template: str, messages: list[dict]) -> str:
    """Enough of Go's text/template (as Ollama uses it) to render a ChatML template: trim markers,
    ``range .Messages``, ``.Role``, ``.Content``, ``end``. Independent of train.export.modelfile."""
    parts = re.split(r"({{-?\s*.*?\s*-?}})", template)
    out: list[str] = []

    def run(tokens: list[str], scope: dict | None) -> None:
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            action = re.fullmatch(r"{{(-?)\s*(.*?)\s*(-?)}}", tok)
            if not action:
                out.append(tok)
                i += 1
                continue
            ltrim, body, rtrim = action.groups()
            if ltrim and out:
                out[-1] = out[-1].rstrip()
            if rtrim and i + 1 < len(tokens):
                tokens[i + 1] = tokens[i + 1].lstrip()
            if body == "range .Messages":
                depth, j = 1, i + 1
                while depth:
                    inner = re.fullmatch(r"{{-?\s*(.*?)\s*-?}}", tokens[j])
                    if inner and inner.group(1).startswith(("range", "if")):
                        depth += 1
                    elif inner and inner.group(1) == "end":
                        depth -= 1
                    j += 1
                for message in messages:
                    run(list(tokens[i + 1:j - 1]), message)
                i = j
                continue
            if body in (".Role", ".Content"):
                out.append(scope[body[1:].lower()])
            else:
                raise AssertionError(f"unsupported template action {body!r}")
            i += 1

    run(parts, None)
    return "".join(out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real LoRA adapter of the bundled model, trained for a few steps on offline-lane rows."""
    import torch

    from train.data.synth import make_row
    from train.fit.config import TrainConfig
    from train.fit.training import train

    tmp = tmp_path_factory.mktemp("export")
    data = tmp / "rows.jsonl"
    data.write_text("".join(json.dumps(make_row(i, 3, rotate_every=10)) + "\n" for i in range(48)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(TrainConfig(dataset=[str(data)], runs_dir=str(tmp / "runs"), run_name="exp", max_steps=4,
                                   save_steps=4, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                                   max_length=320, learning_rate=2e-3, warmup_steps=0.0, perplexity=False,
                                   heldout_fraction=0.05, heldout_max=2), say=lambda *a, **k: None)
    finally:
        torch.set_num_threads(threads)
    settings = Settings(exports_dir=tmp / "exports", runs_dir=tmp / "runs", cache_dir=Settings().cache_dir)
    return result.checkpoints[-1], settings


@pytest.fixture(scope="module")
def exported(trained):
    from train.export.gguf_export import export_gguf

    ckpt, settings = trained
    said: list[str] = []
    results = export_gguf(ckpt, ["f16", "q8_0", "q4_k_m"], settings, parity_options=PARITY, say=said.append)
    return results, said


@pytest.mark.slow
def test_export_writes_each_type_with_provenance_and_parity(trained, exported):
    from core.files import file_sha256

    ckpt, settings = trained
    results, said = exported
    assert [r.type for r in results] == ["f16", "q8_0", "q4_k_m"]
    sizes = {r.type: r.bytes for r in results}
    assert sizes["f16"] > sizes["q8_0"] > sizes["q4_k_m"]
    folder = results[0].path.parent
    assert folder.parent == Path(settings.exports_dir) and "exp-checkpoint-4" == folder.name
    assert not list(folder.glob("*.part")) and not list(folder.glob(".merge-*"))
    for r in results:
        prov = json.loads(r.provenance.read_text())
        assert prov["type"] == r.type and prov["source_checkpoint"] == str(ckpt.resolve())
        assert prov["sha256"] == file_sha256(r.path) and prov["bytes"] == r.bytes
        assert prov["adapter_sha256"] == file_sha256(ckpt / "adapter_model.safetensors")
        assert prov["converter"]["llama_cpp_python"] and "sdist" in prov["converter"]["source"]
        assert prov["step"] == 4 and prov["run"] == "exp" and prov["base_model"]["recorded"]
        assert prov["parity"]["prompts_n"] == 5 and "mean_agreement" in prov["parity"]
        assert (folder / f"parity-{r.type}.json").is_file()
    f16 = results[0]
    assert f16.accepted and f16.parity["same_prompt_tokens_rate"] == 1.0
    assert f16.parity["mean_agreement"] >= 0.9, f16.parity  # f16 of an fp32 merge: the same greedy replies
    assert any("merging" in s for s in said) and any("parity" in s for s in said)
    # llama.cpp reads back the file type the converter / quantizer wrote
    from llama_cpp import Llama

    for r, ftype in zip(results, ("1", "7", "15")):
        llm = Llama(model_path=str(r.path), vocab_only=True, verbose=False)
        assert llm.metadata["general.file_type"] == ftype
        assert llm.metadata["tokenizer.chat_template"]
        llm.close()
    specs = {c.spec for c in list_models(settings)}
    for r in results:
        assert (f"gguf:{r.path}" in specs) == r.accepted
        assert r.path.name.endswith(".gguf") == r.accepted


@pytest.mark.slow
def test_exported_gguf_chats_in_llama_cpp_like_the_checkpoint(trained, exported):
    from train.evaluate.compare import generate_replies

    ckpt, settings = trained
    f16 = exported[0][0]
    prompts = [{"id": "x", "learner": "Yesterday I go to the park with my dog."}]
    via_gguf = generate_replies(f"gguf:{f16.path}", prompts, settings, GREEDY, progress=False)
    via_hf = generate_replies(f"hf:{ckpt}", prompts, settings, GREEDY, batch_size=1, progress=False)
    base = generate_replies("default", prompts, settings, GREEDY, progress=False)
    assert via_gguf[0].strip() and via_gguf == via_hf
    assert via_gguf != base  # the trained adapter is in the export


@pytest.mark.slow
def test_parity_check_catches_a_chat_template_mismatch(trained, exported, tmp_path):
    from train.export.converter import converter_dir, converter_env
    from train.export.parity import parity_check

    ckpt, settings = trained
    f16 = exported[0][0]
    folder = converter_dir(settings)
    broken = tmp_path / "broken.gguf"
    wrong = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + ': ' + m['content'] + '<|im_end|>' }}"
             "{% endfor %}{{ '<|im_start|>assistant\n' }}")  # no newline after the role: not what training saw
    subprocess.run([sys.executable, str(folder / "gguf-py" / "gguf" / "scripts" / "gguf_new_metadata.py"),
                    str(f16.path), str(broken), "--chat-template", wrong, "--force"],
                   check=True, env=converter_env(folder), capture_output=True)
    report = parity_check(ckpt, broken, settings, say=lambda *a: None, **PARITY)
    assert not report["passed"] and report["same_prompt_tokens_rate"] == 0.0
    assert any("tokenize differently" in p for p in report["problems"])


@pytest.mark.slow
def test_a_drifting_export_is_kept_aside_and_not_offered(trained, tmp_path):
    from train.export.gguf_export import export_gguf

    ckpt, settings = trained
    out = tmp_path / "exports" / "strict"
    [result] = export_gguf(ckpt, ["q4_0"], settings, out_dir=out, say=lambda *a: None,
                           parity_options=dict(PARITY, min_agreement=1.01))
    assert not result.accepted and result.path.name == "model-q4_0.gguf.rejected"
    assert json.loads(result.provenance.read_text())["accepted"] is False
    assert not list(out.glob("*.gguf")) and not list(out.glob("*.part"))
    strict = Settings(exports_dir=tmp_path / "exports", runs_dir=settings.runs_dir)
    assert not [c for c in list_models(strict) if "strict" in c.spec]


@pytest.mark.slow
def test_failed_conversion_leaves_no_half_written_file(trained, tmp_path, monkeypatch):
    from train.export.converter import converter_dir
    from train.export.gguf_export import ExportError, export_gguf

    ckpt, settings = trained
    real = converter_dir(settings)
    broken = tmp_path / "llama.cpp"
    shutil.copytree(real, broken)
    # the real converter, made to die half-way through writing (as a full disk or a kill would)
    script = broken / "convert_hf_to_gguf.py"
    script.write_text("import sys\nopen(sys.argv[sys.argv.index('--outfile') + 1], 'wb').write(b'GGUF' + b'0' * 999)\n"
                      "sys.exit('disk full')\n")
    monkeypatch.setenv("QUIMBOT_LLAMA_CPP_DIR", str(broken))
    out = tmp_path / "exports" / "x"
    with pytest.raises(ExportError, match="(?s)failed.*disk full"):
        export_gguf(ckpt, ["q8_0"], settings, out_dir=out, say=lambda *a: None)
    assert not [p for p in out.rglob("*") if p.is_file()]
    assert not list(out.glob(".merge-*"))


@pytest.mark.slow
def test_gguf_lora_loads_on_the_base_gguf(trained):
    from train.evaluate.compare import generate_replies
    from train.export.gguf_export import export_lora

    ckpt, settings = trained
    result = export_lora(ckpt, settings, say=lambda *a: None)
    assert result.path.name == "adapter-f16.lora.gguf" and result.bytes < 20e6
    spec = f"gguf:default?lora={result.path}"
    assert spec in {c.spec for c in list_models(settings)}
    prompts = [{"id": "x", "learner": "Yesterday I go to the park with my dog."}]
    with_lora = generate_replies(spec, prompts, settings, GREEDY, progress=False)
    base = generate_replies("default", prompts, settings, GREEDY, progress=False)
    assert with_lora[0].strip() and with_lora != base
    prov = json.loads(result.provenance.read_text())
    assert prov["kind"] == "lora" and prov["base_gguf"].endswith(".gguf")


@pytest.mark.slow
def test_ollama_modelfile_names_the_file_template_and_stops(trained, exported):
    from transformers import AutoTokenizer

    from train.export.gguf_export import export_ollama
    from train.export.modelfile import parse_modelfile

    ckpt, settings = trained
    said: list[str] = []
    result, path = export_ollama(ckpt, "f16", settings, say=said.append)
    assert any("reusing" in s for s in said)  # the passing f16 export of the same adapter
    parsed = parse_modelfile(path.read_text())
    values = {}
    for word, arg in parsed:
        values.setdefault(word, []).append(arg)
    assert values["FROM"] == ["./model-f16.gguf"] and (path.parent / "model-f16.gguf").is_file()
    assert values["SYSTEM"] == [system_prompt("intermediate")]
    assert "stop <|im_end|>" in values["PARAMETER"]
    assert any(p.startswith("temperature ") for p in values["PARAMETER"])
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    for messages in ([{"role": "system", "content": system_prompt("beginner")},
                      {"role": "user", "content": "I goed home"}],
                     [{"role": "system", "content": "s"}, {"role": "user", "content": "a"},
                      {"role": "assistant", "content": "b"}, {"role": "user", "content": "c\nd"}]):
        expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert render_go(values["TEMPLATE"][0], messages) == expected


@pytest.mark.slow
def test_cli_parity_reports_and_sets_the_exit_status(trained, exported, tmp_path, capsys, monkeypatch):
    from quimbot.cli import main

    ckpt, settings = trained
    f16 = exported[0][0]
    out = tmp_path / "parity.json"
    code = main(["export", "parity", str(ckpt), str(f16.path), "--parity-prompts", "3", "--parity-tokens", "16",
                 "--json", str(out), "--exports-dir", str(settings.exports_dir)])
    assert code == 0 and json.loads(out.read_text())["passed"]
    code = main(["export", "parity", str(ckpt), str(f16.path), "--parity-prompts", "3", "--parity-tokens", "16",
                 "--min-agreement", "1.5"])
    assert code == 1
    assert main(["export", "gguf", str(tmp_path / "missing")]) == 2
    # relative paths work too (the converter runs in its own folder)
    import os

    monkeypatch.chdir(ckpt.parent)
    assert main(["export", "lora", ckpt.name, "--out", os.path.relpath(tmp_path / "rel", ckpt.parent)]) == 0
    assert (tmp_path / "rel" / "adapter-f16.lora.gguf").is_file()
    assert "Checkpoint folder not found" in capsys.readouterr().err


def test_ui_cannot_point_a_lora_outside_the_exports_folder(tmp_path):
    from core.errors import ModelSpecError
    from tutor.catalog import check_ui_spec

    settings = Settings(exports_dir=tmp_path / "exports", runs_dir=tmp_path / "runs")
    (tmp_path / "exports" / "x").mkdir(parents=True)
    inside = tmp_path / "exports" / "x" / "adapter-f16.lora.gguf"
    inside.write_bytes(b"GGUF")
    assert check_ui_spec(f"gguf:default?lora={inside}", settings, local=False)
    evil = f"gguf:default?lora={tmp_path / 'exports' / '..' / 'evil.lora.gguf'}"
    with pytest.raises(ModelSpecError, match="outside the runs and exports folders"):
        check_ui_spec(evil, settings, local=True)
    with pytest.raises(ModelSpecError, match="This app is shared: pick a model from the list"):
        check_ui_spec(evil, settings, local=False)  # a shared app takes no unlisted spec at all
