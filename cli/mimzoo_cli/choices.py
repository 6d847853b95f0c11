"""The CLI's choice options as str enums, so ``--help`` lists the choices and shell completion offers them.

The names mirror the library's registries (METHODS, VIEWS, the targets, DEGRADATIONS, POOLS, the import FORMATS)
without importing them, which would load torch on every ``--help`` and completion; tests/test_cli_help.py checks
that they agree.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    def __str__(self) -> str:  # the value, as the library takes it and as help shows defaults
        return self.value


Method = Choice("Method", {n: n for n in ("mae", "pixmim", "mff", "misalign", "localmim")})
Crop = Choice("Crop", {n: n for n in ("rrc", "src")})
Target = Choice("Target", {n: n for n in ("pixel", "lowpass", "hog")})
Degradation = Choice("Degradation", {n: n for n in ("zoom-in", "zoom-out", "distort", "blur", "decolor")})
DataDevice = Choice("DataDevice", {n: n for n in ("cpu", "gpu")})
Pool = Choice("Pool", {n: n for n in ("token", "avg")})
ProbeMode = Choice("ProbeMode", {n: n for n in ("auto", "cached", "augmented")})
ProbeOptimizer = Choice("ProbeOptimizer", {n: n for n in ("lars", "sgd", "adamw")})
ImportFormat = Choice("ImportFormat", {n: n for n in ("auto", "mae", "transformers")})
