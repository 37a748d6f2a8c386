"""Model selection: Azure OpenAI through a managed identity when configured, else the scripted model."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from agent_framework import BaseChatClient

from ._scripted_model import ScriptedChatClient

logger = logging.getLogger(__name__)

DEFAULT_SCRIPTED_CHUNK_DELAY_MS = 40


@dataclass(frozen=True)
class ModelSettings:
    """Which model the agents use, read from the app settings.

    Attributes:
        azure_openai_endpoint: ``AZURE_OPENAI_ENDPOINT``, e.g. ``https://my-openai.openai.azure.com/``.
        azure_openai_deployment: ``AZURE_OPENAI_DEPLOYMENT``, the model deployment name.
        azure_client_id: ``AZURE_CLIENT_ID``, the user-assigned managed identity to sign in with (optional).
        scripted_chunk_delay_ms: ``SCRIPTED_CHUNK_DELAY_MS``, the offline model's pause between chunks.
    """

    azure_openai_endpoint: str | None = None
    azure_openai_deployment: str | None = None
    azure_client_id: str | None = None
    scripted_chunk_delay_ms: int = DEFAULT_SCRIPTED_CHUNK_DELAY_MS

    @property
    def uses_azure_openai(self) -> bool:
        """True when both the Azure OpenAI endpoint and deployment are set."""
        return bool(self.azure_openai_endpoint and self.azure_openai_deployment)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ModelSettings:
        """Read the settings from ``environ`` (default: the process environment).

        Raises:
            ValueError: If ``SCRIPTED_CHUNK_DELAY_MS`` is not a non-negative integer.
        """
        env = os.environ if environ is None else environ
        raw_delay = (env.get("SCRIPTED_CHUNK_DELAY_MS") or "").strip()
        try:
            delay = int(raw_delay) if raw_delay else DEFAULT_SCRIPTED_CHUNK_DELAY_MS
        except ValueError:
            raise ValueError(f"SCRIPTED_CHUNK_DELAY_MS must be an integer, got {raw_delay!r}.") from None
        if delay < 0:
            raise ValueError("SCRIPTED_CHUNK_DELAY_MS must not be negative.")
        return cls(
            azure_openai_endpoint=(env.get("AZURE_OPENAI_ENDPOINT") or "").strip() or None,
            azure_openai_deployment=(env.get("AZURE_OPENAI_DEPLOYMENT") or "").strip() or None,
            azure_client_id=(env.get("AZURE_CLIENT_ID") or "").strip() or None,
            scripted_chunk_delay_ms=delay,
        )


def create_chat_client(settings: ModelSettings) -> BaseChatClient:
    """Create the chat client the agents talk to, and log which one it is.

    Azure OpenAI is reached with ``DefaultAzureCredential`` (the app's managed identity in Azure,
    ``AZURE_CLIENT_ID`` selecting a user-assigned one; your developer sign-in locally): no key is
    ever stored. Creating either client opens no connection.

    Args:
        settings: The model settings.

    Returns:
        An Azure OpenAI chat client, or the offline :class:`ScriptedChatClient`.
    """
    if settings.uses_azure_openai:
        # Imported here so that the offline path does not need the OpenAI packages loaded.
        from agent_framework.openai import OpenAIChatCompletionClient
        from azure.identity.aio import DefaultAzureCredential

        credential = DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id)
        logger.info(
            "Model: Azure OpenAI deployment %r at %s (DefaultAzureCredential)",
            settings.azure_openai_deployment,
            settings.azure_openai_endpoint,
        )
        return OpenAIChatCompletionClient(
            model=settings.azure_openai_deployment,
            azure_endpoint=settings.azure_openai_endpoint,
            credential=credential,
        )
    logger.warning(
        "Model: offline scripted chat client (set AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_DEPLOYMENT for Azure "
        "OpenAI); chunk delay %d ms",
        settings.scripted_chunk_delay_ms,
    )
    return ScriptedChatClient(chunk_delay_seconds=settings.scripted_chunk_delay_ms / 1000)
