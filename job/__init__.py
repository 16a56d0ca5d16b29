"""CIFAR-10 batch training job: data -> train -> evaluate -> export -> verify -> publish."""

__version__ = "0.1.0"
