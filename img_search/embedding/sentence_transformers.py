"""Any sentence-transformers checkpoint (Hub id or local folder) as a text encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from img_search.embedding.base import Encoder, cut_texts
from img_search.failures import prepare_hub


class SentenceTransformerEncoder(Encoder):
    """Text only. ``prompt_name`` picks one of the checkpoint's prompts (e.g. ``query``), if it has any."""

    kind = "sentence_transformers"
    supports_images = False

    def __init__(
        self,
        name: str,
        model_name: str,
        revision: str | None = None,
        prompt_name: str | None = None,
        max_seq_length: int | None = None,
    ) -> None:
        super().__init__(name, model_name, revision)
        self.prompt_name = prompt_name
        self.max_seq_length = max_seq_length
        self.model: Any = None

    def _load(self) -> None:
        from sentence_transformers import SentenceTransformer

        prepare_hub(self.model_name)  # no network: fail in seconds, not after retries

        self.model = SentenceTransformer(
            self.model_name,
            device=str(self.device),
            revision=self.revision,
            trust_remote_code=False,
        )
        self.model.eval()
        if self.max_seq_length:
            self.model.max_seq_length = self.max_seq_length
        dimension = getattr(self.model, "get_embedding_dimension", None)  # renamed in ST 6
        dimension = dimension or self.model.get_sentence_embedding_dimension
        self.dim = dimension()

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        texts = cut_texts(texts, self.model.max_seq_length)
        with self.inference():
            vectors = self.model.encode(
                texts,
                batch_size=max(1, len(texts)),
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
                prompt_name=self.prompt_name,
            )
        return self.finish(vectors)

    def identity(self) -> dict[str, Any]:
        info = super().identity()
        info.update(
            prompt_name=self.prompt_name,
            max_seq_length=self.model.max_seq_length
            if self.model is not None
            else self.max_seq_length,
        )
        return info
