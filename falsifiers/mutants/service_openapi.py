"""Known-bad variants of the service for INV-SVC-100 (contracts/service.yaml): each
is a bug a real engineer could commit that makes an answer of the API break its own
OpenAPI document.

Patched inside the service process (the mutant's private instance), so the check
meets them over HTTP.
"""

from __future__ import annotations

from typing import Any


def prompt_ids_without_empty_prompt(tok: Any, prompt: str | bytes, n_ctx: int) -> Any:
    """``kernels.serving.prompt_ids`` "simplified" to encode the prompt and keep its end,
    dropping the fallback for an empty prompt: the schema's default prompt ("") then
    reaches the generator with no token, which raises, and ``POST /api/generate``
    answers 500 to a request its document says is valid."""
    return tok.encode(prompt)[-(n_ctx - 1) :]
