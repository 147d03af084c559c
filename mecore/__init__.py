"""mecore: micro-expression spotting and recognition, reproduced paper by paper."""

__version__ = "0.1.0"
