"""An Ollama Modelfile next to an exported GGUF: chat template, stop tokens, system prompt, parameters.

The Go template is chosen from the checkpoint's Jinja chat template (ChatML, used by SmolLM2 and Qwen,
is supported) and verified: rendered for sample conversations it must give exactly what the Jinja
template gives, or the export stops with an error rather than write a Modelfile that would prompt
the model differently from training. ``--template FILE`` supplies a Go template by hand.

    ollama create quimbot-tutor -f exports/RUN-checkpoint-N/Modelfile
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from core.errors import QuimbotError
from tutor.prompts import system_prompt

CHATML_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
    "{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
)
SAMPLES = [
    [{"role": "system", "content": "S1"}, {"role": "user", "content": "Yesterday I go to the store"}],
    [{"role": "system", "content": "S2"}, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
     {"role": "user", "content": "u2\nline"}],
]


class ModelfileError(QuimbotError):
    """A Modelfile could not be written or read."""


def render_chatml(messages: list[dict[str, str]]) -> str:
    """What CHATML_TEMPLATE renders to in Ollama for these messages."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"


def choose_template(tokenizer) -> tuple[str, str]:
    """(family, Go template) matching the tokenizer's chat template, checked on sample conversations."""
    jinja = getattr(tokenizer, "chat_template", None)
    if not jinja:
        raise ModelfileError("The checkpoint's tokenizer has no chat template; pass --template FILE with an "
                             "Ollama (Go) template.")
    if "<|im_start|>" in str(jinja):
        for messages in SAMPLES:
            expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            if expected != render_chatml(messages):
                raise ModelfileError(
                    "The chat template looks like ChatML but renders differently from Ollama's ChatML template "
                    f"(Jinja gives {expected[:120]!r}); pass --template FILE with a matching Go template.")
        return "chatml", CHATML_TEMPLATE
    raise ModelfileError("No Ollama template is known for this chat template (supported: ChatML, as in SmolLM2 and "
                         "Qwen); pass --template FILE with an Ollama (Go) template.")


def stop_tokens(tokenizer, family: str) -> list[str]:
    stops = ["<|im_end|>"] if family == "chatml" else []
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos not in stops:
        stops.append(eos)
    return stops


def _quote(text: str) -> str:
    if '"""' in text:
        raise ModelfileError('A Modelfile value cannot contain """; remove it from the system prompt/template.')
    return f'"""{text}"""'


def render_modelfile(gguf_name: str, template: str, system: str, stops: list[str],
                     parameters: dict[str, Any], comment: str = "") -> str:
    lines = [f"# {line}" for line in comment.splitlines()] if comment else []
    lines += [f"FROM ./{gguf_name}", f"TEMPLATE {_quote(template)}", f"SYSTEM {_quote(system)}"]
    for stop in stops:
        lines.append(f"PARAMETER stop {json.dumps(stop)}")
    for key, value in parameters.items():
        lines.append(f"PARAMETER {key} {value}")
    return "\n".join(lines) + "\n"


def write_modelfile(gguf: Path, tokenizer, *, level: str = "intermediate", template: str | None = None,
                    parameters: dict[str, Any] | None = None, comment: str = "") -> Path:
    if template is None:
        family, template = choose_template(tokenizer)
    else:
        family = "custom"
    from tutor.backends.base import GenerationOptions

    defaults = GenerationOptions()
    params = {"temperature": defaults.temperature, "top_p": defaults.top_p, "num_predict": defaults.max_tokens,
              "num_ctx": 2048, **(parameters or {})}
    text = render_modelfile(gguf.name, template, system_prompt(level), stop_tokens(tokenizer, family), params,
                            comment)
    path = gguf.parent / "Modelfile"
    part = path.with_name("Modelfile.part")
    part.write_text(text, encoding="utf-8")
    part.replace(path)
    return path


_INSTRUCTIONS = {"FROM", "TEMPLATE", "SYSTEM", "PARAMETER", "ADAPTER", "LICENSE", "MESSAGE", "REQUIRES"}


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument) pairs, following Ollama's Modelfile grammar: one instruction per line,
    ``#`` comments, arguments plain, "quoted" or \"\"\"multi-line\"\"\". Raises ModelfileError with the line."""
    out: list[tuple[str, str]] = []
    pos, line_no = 0, 1
    pattern = re.compile(r'[ \t]*(?:#[^\n]*)?\n|[ \t]*([A-Za-z]+)[ \t]+')
    while pos < len(text):
        m = pattern.match(text, pos)
        if not m:
            raise ModelfileError(f"Modelfile line {line_no}: expected an instruction.")
        if m.group(1) is None:
            pos, line_no = m.end(), line_no + 1
            continue
        word = m.group(1).upper()
        if word not in _INSTRUCTIONS:
            raise ModelfileError(f"Modelfile line {line_no}: unknown instruction {m.group(1)!r}.")
        pos = m.end()
        if text.startswith('"""', pos):
            end = text.find('"""', pos + 3)
            if end < 0:
                raise ModelfileError(f'Modelfile line {line_no}: """ is never closed.')
            arg = text[pos + 3:end]
            pos = end + 3
        else:
            end = text.find("\n", pos)
            end = len(text) if end < 0 else end
            arg = text[pos:end].strip()
            pos = end
        if word == "PARAMETER":
            key, _, value = arg.partition(" ")
            value = value.strip()
            if value.startswith('"'):
                value = json.loads(value)
            arg = f"{key} {value}"
        out.append((word, arg))
        line_no += arg.count("\n")
    if not any(w == "FROM" for w, _ in out):
        raise ModelfileError("Modelfile has no FROM line.")
    return out
