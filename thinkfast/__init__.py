"""thinkfast: distill Llama-family teachers into Mamba students and scale inference compute by wall-clock time."""

__version__ = "0.1.0"
