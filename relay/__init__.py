"""relay: a WebSocket relay for the OpenAI Realtime API."""

from relay.core.speedups import prefer_sources

__version__ = "0.1.0"

prefer_sources()  # RELAY_NO_EXTENSIONS: the modules compiled from their .py run as Python
