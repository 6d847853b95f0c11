"""The official MAE initialisation, in one place."""

from torch import nn


def init_mae_weights(module: nn.Module) -> None:
    """Xavier-uniform Linear weights with zero bias; LayerNorm weight 1, bias 0 (``module.apply`` target)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
