"""crew-mcp: an MCP server that lets LLM assistants run CrewAI AMP crews."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crew-mcp")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0.0.0"

__all__ = ["__version__"]
