"""Encoder verbs (a plain timm ViT run on visible tokens) and decoders."""
