"""Configuration of the EWC trainer: SFT plus the penalty strength. The anchor (Fisher and theta*)
is data, not configuration, so it is passed to the trainer, not stored here."""
from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig


@dataclass
class EwcConfig(SFTConfig):
    """SFTConfig for [`EwcTrainer`].

    Parameters:
        ewc_lambda (`float`, defaults to `0.5`):
            Strength of the penalty `ewc_lambda / 2 * sum_i F_i (theta_i - theta*_i)^2`, added once per optimizer
            step. The Fisher is normalised to mean 1, so `ewc_lambda` is the L2 strength on a parameter of average
            importance.
    """

    ewc_lambda: float = field(default=0.5, metadata={"help": "Strength of the EWC penalty."})
