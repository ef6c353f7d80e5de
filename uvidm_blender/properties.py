"""The panel's settings (per scene, saved in the .blend) and the live status (per window manager,
neither saved nor undone)."""

# No `from __future__ import annotations` in modules that declare bpy properties: Blender reads
# the annotations as property definitions.

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from .client import JobOptions
from .runtime import STATE

# Blender 4.5+ warns about "//" (relative to the .blend) paths unless the property says it takes them.
_RELATIVE_PATH = {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else set()
TEXTURE_SIZES = [(str(size), f"{size} px", f"albedo.png of {size} x {size} pixels") for size in (256, 512, 1024, 2048)]


SAMPLERS = [("ddim", "DDIM (official)", "The sampler UV-IDM was published with, at 50 steps"),
            ("dpmpp", "DPM-Solver++ (fast)", "A higher-order sampler: 20 steps, 2.5x fewer network calls")]
DEFAULT_STEPS = {"ddim": 50, "dpmpp": 20}


def _sampler_changed(settings, _context) -> None:
    # Steps left at one sampler's default follow to the other's; steps the user chose stay.
    if settings.steps in DEFAULT_STEPS.values():
        settings.steps = DEFAULT_STEPS[settings.sampler]


def _faces_changed(settings, _context) -> None:
    # A face number belongs to the photo (and landmarks file) it was picked on.
    if settings.face_index != -1:
        settings.face_index = -1


class UVIDM_PG_settings(bpy.types.PropertyGroup):
    photo: StringProperty(name="Photo", description="A photo with a face (JPEG or PNG)", subtype="FILE_PATH",
                          options=_RELATIVE_PATH, update=_faces_changed)
    face_index: IntProperty(
        name="Face", default=-1, min=-1, max=99,
        description="Which face when the photo shows several (Find Faces numbers them): -1 the largest, "
                    "0 the left-most, 1 the next, ...")
    sampler: EnumProperty(name="Sampler", items=SAMPLERS, default="ddim", update=_sampler_changed,
                          description="How the texture is sampled: the official DDIM, or the faster DPM-Solver++")
    steps: IntProperty(name="Steps", default=DEFAULT_STEPS["ddim"], min=1, max=500, soft_max=200,
                       description="Diffusion steps: fewer is faster; 50 for DDIM, 20 for DPM-Solver++")
    seed: IntProperty(name="Seed", default=23, min=0, description="Random seed: another seed, another texture")
    texture_size: EnumProperty(name="Texture", items=TEXTURE_SIZES, default="1024",
                               description="Size of the texture image")
    delight: BoolProperty(name="Remove Lighting", default=False,
                          description="Divide out the photo's lighting, for a texture to relight")
    expression: EnumProperty(
        name="Expression", default="photo",
        items=[("photo", "As in Photo", "The expression of the photo"),
               ("neutral", "Neutral", "A neutral face: the mesh without the photo's expression")])
    texture_look: EnumProperty(
        name="Look", default="default",
        items=[("default", "Photo + Generated", "The photo's own pixels where the face is visible, the generated "
                                                "texture elsewhere, joined without a seam"),
               ("official", "Official", "The generated texture alone, colour-matched as the official UV-IDM code "
                                        "does: the paper's look")])
    head_kind: EnumProperty(
        name="Head", default="bfm",
        items=[("bfm", "Face", "The Basel Face Model head: face, ears and neck"),
               ("full", "Full Head", "A closed ICT FaceKit head with eyes, teeth and 53 ARKit shape keys, for game "
                                     "engines (its model files: Download Model Files with Full Head)"),
               ("both", "Both", "The face and the full head, side by side")])
    landmarks_file: StringProperty(
        name="Landmarks", subtype="FILE_PATH", options=_RELATIVE_PATH, update=_faces_changed,
        description="Optional: a file with the faces' five points (eyes, nose tip, mouth corners) in photo "
                    "pixels, JSON or lines of 'x y'; given, it replaces face detection")

    def faces_key(self) -> tuple[str, str]:
        """What found faces belong to: the photo and the landmarks file (absolute paths)."""
        return (bpy.path.abspath(self.photo) if self.photo else "",
                bpy.path.abspath(self.landmarks_file) if self.landmarks_file else "")

    def job_options(self) -> JobOptions:
        """The request's options (the landmarks file's points are read by the job, through the backend)."""
        return JobOptions(
            face_index=None if self.face_index < 0 else self.face_index,
            steps=self.steps, sampler=self.sampler, seed=self.seed, texture_size=int(self.texture_size),
            delight=self.delight, expression=self.expression, texture=self.texture_look, head=self.head_kind)


def _generating(_status) -> bool:
    # From the running job itself, not a stored flag: a flag outlives a job that an add-on disable ended.
    return STATE.generate is not None


def _forget_plan() -> None:
    """The list shown was made for the other choice: ask the backend again (Download Model Files...)."""
    from .runtime import STATE

    STATE.model_plan = None


class UVIDM_PG_status(bpy.types.PropertyGroup):
    running: BoolProperty(get=_generating, description="A Generate runs")
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    message: StringProperty(default="")
    is_error: BoolProperty(default=False)
    last_result: StringProperty(default="", subtype="DIR_PATH")
    full_head: BoolProperty(
        name="Also the Full Head (ICT FaceKit, MIT)", default=False, update=lambda self, context: _forget_plan(),
        description="Also fetch the ICT FaceKit head from GitHub: a closed head with eyes, teeth and 53 ARKit shape "
                    "keys (Head: Full Head)")
    accept_licences: BoolProperty(
        name="I accept these licences", default=False,
        description="The model files are for non-commercial research (see the licence text above)")


CLASSES = (UVIDM_PG_settings, UVIDM_PG_status)


def register() -> None:
    for cls in CLASSES:
        if not getattr(cls, "is_registered", False):
            bpy.utils.register_class(cls)
    bpy.types.Scene.uvidm = PointerProperty(type=UVIDM_PG_settings)
    bpy.types.WindowManager.uvidm = PointerProperty(type=UVIDM_PG_status)


def unregister() -> None:
    for owner in (bpy.types.WindowManager, bpy.types.Scene):
        if hasattr(owner, "uvidm"):
            del owner.uvidm
    for cls in reversed(CLASSES):
        if getattr(cls, "is_registered", False):
            bpy.utils.unregister_class(cls)
