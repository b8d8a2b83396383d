"""localagent: AI agents on your own machine, benchmarked against hosted APIs."""

__version__ = "0.1.0"
