"""What the user must know before the model files are downloaded: whose files, under which terms.

The same text is printed by `uvidm weights download`, served by the service (`/v1/models/plan`)
and shown in Blender; weights/README.md and BFM/README.md say it too.
"""

from __future__ import annotations

LICENCES = """\
The model files are not part of UV-IDM for Blender; they come from their authors, under their terms.
Checking those terms, and keeping to them, is your responsibility.

- Basel Face Model (BFM_model_front*.mat, BFM_front_idx.mat, BFM_UV.npy, example1.mat and the UV tables
  derived from it): University of Basel, for non-commercial research only, for registered users who
  accept its licence agreement (https://faces.dmi.unibas.ch/bfm/).
- UV-IDM (ldm.ckpt, masktopo/front.png; hub repository luh0502/UV-IDM, code Luh1124/UV-IDM): its authors
  state no licence for these files. Without a licence no use beyond what the law allows is granted:
  ask the authors before anything but private research.
- Deep3DFaceRecon_pytorch (epoch_20.pth): code under the MIT licence, network trained with the BFM and
  data under non-commercial terms.
- face-parsing.PyTorch (79999_iter.pth): MIT licence, trained on CelebAMask-HQ (non-commercial research).
- insightface buffalo_l (face detection and landmarks): for non-commercial research only.
"""

FULL_HEAD_LICENCE = """\
- ICT FaceKit (the full head, identity and ARKit expression shapes): Institute for Creative Technologies,
  University of Southern California, MIT licence (https://github.com/ICT-VGL/ICT-FaceKit).
"""


def licence_text(full_head: bool = False) -> str:
    return LICENCES + (FULL_HEAD_LICENCE if full_head else "")
