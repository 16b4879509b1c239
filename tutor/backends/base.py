"""The backend interface: one streaming method, options as a pydantic model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from tutor.config import Settings
from tutor.specs import ModelSpec

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


class GenerationOptions(BaseModel):
    """Sampling options every engine understands."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(200, ge=1, le=4096, description="Longest reply, in tokens.")
    seed: int | None = Field(None, description="Random seed, for reproducible replies.")
    stop: list[str] = Field(default_factory=list, description="Extra stop strings.")

    @classmethod
    def greedy(cls, max_tokens: int = 80, seed: int | None = 0) -> GenerationOptions:
        """The options every evaluation uses (compare, replay, parity, the pedagogy probe): greedy
        decoding with a fixed seed, so two runs of the same checkpoint give the same replies."""
        return cls(temperature=0.0, max_tokens=max_tokens, seed=seed)


@dataclass
class Chunk:
    """A piece of a streamed reply. The last chunk of a reply may carry usage figures."""

    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    restart: bool = False  # the reply so far is dropped: the chunks that follow are a new reply (tutor.fresh)


class Backend(ABC):
    """A loaded model. Subclasses register an engine name in ``registry.BACKENDS``."""

    engine: ClassVar[str] = ""

    def __init__(self, spec: ModelSpec, settings: Settings):
        self.spec = spec
        self.settings = settings

    @property
    def checkpoint(self) -> str:
        """What produced the reply, for the log: a file, an adapter directory or a remote name."""
        return self.spec.target

    @property
    def context_length(self) -> int | None:
        """Tokens the model reads (prompt + reply), or None when the backend cannot tell."""
        return None

    def count_tokens(self, messages: list[Message]) -> int | None:
        """Prompt tokens of ``messages`` after the chat template, or None when unknown."""
        return None

    @abstractmethod
    def stream(self, messages: list[Message], options: GenerationOptions) -> Iterator[Chunk]:
        """Yield the reply to ``messages`` piece by piece. Raise BackendError on failure."""

    def close(self) -> None:
        """Free what the backend holds (model memory, connections)."""
