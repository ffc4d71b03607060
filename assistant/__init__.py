"""Customer-service assistant for regulated industries: grounded answers from an institution's documents.

    python -m assistant ask "How much is an international wire?" --domain bank --json
    python -m assistant chat --domain hospital
"""

from assistant.config import AssistantConfig
from assistant.pipeline import Assistant, Response, Source

__all__ = ["Assistant", "AssistantConfig", "Response", "Source"]
