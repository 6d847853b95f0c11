"""mimzoo: masked image modeling for Vision Transformers, exported as plain timm backbones."""

__version__ = "0.1.0"
