"""rftkit: reinforcement fine-tuning of language models as parts of one training loop."""

__version__ = "0.1.0"
