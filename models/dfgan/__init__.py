"""DF-GAN (Tao et al., "DF-GAN: A Simple and Effective Baseline for Text-to-Image Synthesis", CVPR 2022), 2022 and
2021 versions, as the family `MODEL: dfgan`: networks (`networks`, `networks_2021`), losses, the original's checkpoint
files (`checkpoint`), its YAML format (`original_config`), the trainer (`trainer`) and the declaration (`family`)."""
from models.dfgan.checkpoint import load_generator, load_state_epoch, state_epoch_dict
from models.dfgan.networks import (DFBLK, Affine, D_Block, G_Block, NetC, NetD, NetG, get_D_in_out_chs,
                                   get_G_in_out_chs)

__all__ = ["NetG", "NetD", "NetC", "G_Block", "D_Block", "DFBLK", "Affine", "get_G_in_out_chs", "get_D_in_out_chs",
           "load_generator", "load_state_epoch", "state_epoch_dict"]
