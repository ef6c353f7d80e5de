"""A recording stand-in for bpy.types.UILayout (headless Blender has no UI to draw into): it checks
that every property and operator the draw code names exists, and records what would be drawn."""

import bpy


class _OperatorProperties:
    def __init__(self, idname: str):
        module, name = idname.split(".")
        # get_rna_type raises KeyError for an operator that does not exist
        self._names = set(getattr(getattr(bpy.ops, module), name).get_rna_type().properties.keys())

    def __setattr__(self, name, value):
        if not name.startswith("_"):
            assert name in self._names, f"operator has no property {name!r}"
        object.__setattr__(self, name, value)


class RecordingLayout:
    """Enough of bpy.types.UILayout; checks what it is given and records labels, operators, bars."""

    def __init__(self, log: list):
        self.log = log
        self.enabled = True
        self.scale_y = 1.0
        self.use_property_split = False
        self.use_property_decorate = True

    def _child(self, *args, **kwargs):
        return RecordingLayout(self.log)

    row = column = box = split = grid_flow = _child

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"{data} has no property {name!r}"
        self.log.append(("prop", name))

    def label(self, text="", icon="NONE", icon_value=0):
        assert icon in bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items
        self.log.append(("label", text))

    def operator(self, idname, text="", icon="NONE", depress=False, **kwargs):
        module, name = idname.split(".")
        assert hasattr(bpy.types, f"{module.upper()}_OT_{name}"), f"no operator {idname}"
        properties = _OperatorProperties(idname)
        self.log.append(("operator", idname))
        self.log.append(("call", idname, text, depress, properties))
        return properties

    def progress(self, factor=0.0, type="BAR", text=""):
        assert 0.0 <= factor <= 1.0 and type == "BAR"
        self.log.append(("progress", text))

    def template_icon(self, icon_value=0, scale=1.0):
        self.log.append(("icon", icon_value))


class _Panel:
    def __init__(self, layout):
        self.layout = layout


def _draw(panel_class, context=None) -> list:
    log: list = []
    panel_class.draw(_Panel(RecordingLayout(log)), context or bpy.context)
    return log


def _labels(log) -> list[str]:
    return [entry[1] for entry in log if entry[0] == "label"]


def _calls(log, idname) -> list:
    return [entry for entry in log if entry[0] == "call" and entry[1] == idname]
