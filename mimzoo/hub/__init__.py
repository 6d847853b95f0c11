"""Export to timm's Hub layout (and, later, model cards and push/pull backends)."""
