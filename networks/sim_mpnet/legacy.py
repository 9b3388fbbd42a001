"""Checkpoints of the first format (``sim-mpnet/1``), written before the model registry: always a Sim-MPNet, no
``arch``, W-LD's state at the top level. Registered with the engine as a format converter into the second format
(``sim-mpnet/2``, options still one flat dict), which the engine's own converter brings to the current one."""
from __future__ import annotations

FIRST_FORMAT = "sim-mpnet/1"
SECOND_FORMAT = "sim-mpnet/2"  # utils.config.FLAT_OPTIONS_FORMAT (networks does not import utils)


def upgrade_first_format(ckpt: dict) -> dict:
    """``arch`` added (the format held Sim-MPNet only), W-LD's previous loss moved into ``model_extra``; ``memory_k``
    dropped (the layers' ``k`` buffers hold it). Config fields added since take their defaults when the model is
    built, and weights older still (no ``sampling_seed`` buffers) are SimMPNet.upgrade_state_dict's business."""
    upgraded = {key: value for key, value in ckpt.items() if key not in ("memory_k", "wld_previous_loss")}
    upgraded.update(format=SECOND_FORMAT, arch="sim_mpnet",
                    model_extra={"wld_previous_loss": ckpt.get("wld_previous_loss")})
    return upgraded
