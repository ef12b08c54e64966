"""OpenAI-compatible backend (OpenAI, vLLM, Ollama, TGI, ...) through the ``openai`` SDK."""

from __future__ import annotations

import os
from typing import Any

from embedforge.errors import EmbedforgeError
from embedforge.generate.cost import estimate_tokens
from embedforge.generate.llm import LLMGenerator, Usage
from embedforge.generate.retry import ErrorInfo, classify_sdk_error


class OpenAIGenerator(LLMGenerator):
    """Queries from any chat-completions endpoint.

    The key comes from ``OPENAI_API_KEY`` only; it may be absent for a local server (``base_url``
    set), which then receives a placeholder.

    Args:
        model: model name as the server knows it.
        temperature: sampling temperature.
        max_tokens_param: ``max_tokens`` (vLLM, Ollama, TGI) or ``max_completion_tokens`` (newer
            OpenAI models).
        **kwargs: see :class:`~embedforge.generate.settings.LLMSettings`.
    """

    backend = "openai"

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        max_tokens_param: str = "max_tokens",
        temperature: float = 1.0,
        **kwargs: Any,
    ):
        super().__init__(model=model, **kwargs)
        self.max_tokens_param = max_tokens_param
        self.temperature = float(temperature)

    def _key_extra(self) -> Any:
        return {"temperature": self.temperature}

    def _check_credentials(self) -> None:
        local = self.settings.base_url or os.environ.get("OPENAI_BASE_URL")
        if not os.environ.get("OPENAI_API_KEY") and not local:
            raise EmbedforgeError(
                "OPENAI_API_KEY is not set: export it, or set generator.base_url to a local"
                " OpenAI-compatible server that needs no key"
            )

    def _make_client(self) -> Any:
        import openai

        return openai.AsyncOpenAI(
            api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
            base_url=self.settings.base_url,
            max_retries=0,
            timeout=self.settings.timeout_s,
            http_client=self.settings.http_client,
        )

    async def _request(self, client: Any, prompt: str) -> tuple[str | None, Usage]:
        resp = await client.chat.completions.create(
            model=self.settings.model,
            messages=[{"role": "user", "content": prompt}],
            temperature=self.temperature,
            **{self.max_tokens_param: self.settings.max_output_tokens},
        )
        text = resp.choices[0].message.content if resp.choices else None
        if resp.usage is None:  # some local servers omit usage: count our estimate instead
            self.stats["usage_estimated"] = self.stats.get("usage_estimated", 0) + 1
            return text, {
                "input_tokens": estimate_tokens(prompt),
                "output_tokens": estimate_tokens(text or ""),
            }
        return text, {
            "input_tokens": resp.usage.prompt_tokens or 0,
            "output_tokens": resp.usage.completion_tokens or 0,
        }

    def _classify(self, exc: BaseException) -> ErrorInfo:
        import openai

        return classify_sdk_error(exc, openai)
