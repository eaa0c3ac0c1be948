"""recipe: declarative YAML recipes for fine-tuning language models."""
__version__ = "0.1.0"
