"""The Thunder sidebar (3D View and Sequencer: the same panel), its takes list, and the add-on preferences."""

import bpy

from . import api, compat, properties, session

STATUS_ICONS = {"stopped": "RADIOBUT_OFF", "starting": "SORTTIME", "ready": "CHECKMARK", "busy": "SORTTIME",
                "error": "ERROR"}


def draw_backend(layout) -> None:
    status, message, _ = api.backend_status()
    row = layout.row(align=True)
    row.label(text=f"Backend: {status}", icon=STATUS_ICONS.get(status, "QUESTION"))
    if status in ("stopped", "error"):
        row.operator("thunder.backend_start", text="", icon="PLAY")
    else:
        row.operator("thunder.backend_stop", text="", icon="SNAP_FACE")
    if status == "error" and message:
        _wrapped(layout.box(), message, icon="ERROR")


def _wrapped(layout, text: str, icon: str = "NONE", width: int = 42) -> None:
    """A sentence over several label lines (labels do not wrap)."""
    words, line, first = text.split(), "", True
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            layout.label(text=line, icon=icon if first else "BLANK1")
            line, first = word, False
        else:
            line = f"{line} {word}".strip()
    if line:
        layout.label(text=line, icon=icon if first else "BLANK1")


class THUNDER_UL_takes(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        row.prop(item, "name", text="", emboss=False, icon="PLAY" if index == data.active_take else "ACTION")
        details = f"seed {item.seed}  {item.emotion}"
        if item.emotion != "neutral":
            details += f" {item.intensity:.1f}"
        row.label(text=details)
        if item.has_m2s_score:   # how well the lips read: M2S's mel L1, lower is better
            row.label(text=f"M2S {item.m2s_mel_l1:.2f}")
        keep = row.operator("thunder.take_keep", text="", emboss=False,
                            icon="PINNED" if item.kept else "UNPINNED")
        keep.index = index

    def filter_items(self, context, data, property):
        """Best-reading lips first (api.score_order); the list's own name filter still applies."""
        takes = getattr(data, property)
        flags = []
        if self.filter_name:
            flags = bpy.types.UI_UL_list.filter_items_by_name(self.filter_name, self.bitflag_filter_item, takes,
                                                              "name")
        order = api.score_order(takes)
        new_order = [0] * len(takes)
        for position, index in enumerate(order):
            new_order[index] = position
        return flags, new_order


def draw_panel(layout, context) -> None:
    scene = context.scene
    settings = scene.thunder
    draw_backend(layout)

    box = layout.box()
    box.label(text="Head", icon="USER")
    box.prop(settings, "head", text="")
    row = box.row(align=True)
    row.operator("thunder.add_head", text="Add Thunder head").source = "BUILTIN"
    row.operator("thunder.add_head", text="Add FLAME head").source = "FLAME"

    box = layout.box()
    box.label(text="Audio", icon="SOUND")
    box.row().prop(settings, "audio_source", expand=True)
    if settings.audio_source == "STRIP":
        if scene.sequence_editor is not None:
            box.prop_search(settings, "strip", scene.sequence_editor, compat.all_strips_name(scene.sequence_editor),
                            text="", icon="SOUND")
        else:
            box.label(text="Add a sound strip in the Sequencer first")
    else:
        box.prop(settings, "audio_file", text="")

    box = layout.box()
    box.label(text="Takes", icon="SETTINGS")
    column = box.column(align=True)
    column.prop(settings, "takes")
    column.prop(settings, "best_of")
    row = column.row(align=True)
    row.prop(settings, "seed_mode", text="")
    sub = row.row(align=True)
    sub.enabled = settings.seed_mode == "FIXED"
    sub.prop(settings, "seed", text="")
    column.prop(settings, "emotion")
    sub = column.row(align=True)
    sub.enabled = settings.emotion != "neutral"
    sub.prop(settings, "intensity", slider=True)
    column.prop(settings, "model_sampling")
    if settings.model_sampling:
        own = properties.loaded_model().get("sampling") or {}   # the backend sends every setting
        if {"guidance", "steps", "smoothing"} <= own.keys():
            column.label(text=f"Guidance {own['guidance']:g}, {own['steps']} steps, smoothing {own['smoothing']:g}")
        else:
            column.label(text="The model's own steps and guidance (shown once the backend runs)")
    else:
        column.prop(settings, "guidance")
        column.prop(settings, "steps")
    box.prop(settings, "replace_animation")

    status, message, progress = api.backend_status()
    if status == "busy" or (status == "starting" and session.manager().job is not None):
        row = layout.row(align=True)
        row.progress(factor=progress, type="BAR", text=message or "Starting...")
        row.operator("thunder.cancel", text="", icon="X")
    else:
        layout.operator("thunder.generate", icon="PLAY_SOUND")
    if api.notice.text:
        _wrapped(layout, api.notice.text, icon="ERROR" if api.notice.level == "ERROR" else "INFO")

    head = settings.head
    if head is not None and head.thunder.is_head:
        thunder = head.thunder
        layout.template_list("THUNDER_UL_takes", "", thunder, "takes", thunder, "active_take", rows=3)
        row = layout.row(align=True)
        row.operator("thunder.resample", icon="FILE_REFRESH")
        row.operator("thunder.take_rename", text="", icon="GREASEPENCIL")
        row.operator("thunder.take_delete", text="", icon="TRASH")
        if 0 <= thunder.active_take < len(thunder.takes):
            item = thunder.takes[thunder.active_take]
            layout.label(text=f"{item.frames} frames from {item.frame_start:g}, guidance {item.guidance:g}, "
                              f"{item.steps} steps")
            draw_strengths(layout, item)

        draw_directing(layout, context)

        box = layout.box()
        box.label(text="Export", icon="EXPORT")
        box.prop(settings, "export_folder", text="")
        row = box.row(align=True)
        row.prop(settings, "export_fbx", toggle=True)
        row.prop(settings, "export_abc", toggle=True)
        row.prop(settings, "export_usd", toggle=True)
        box.prop(settings, "export_all")
        box.operator("thunder.export")
        draw_character(layout, context)


class THUNDER_UL_arkit_mapping(bpy.types.UIList):
    """One row per ARKit name: the character's shape key for it, which the user can change."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        row.label(text=item.name, icon="SHAPEKEY_DATA" if item.shape_key else "BLANK1")
        keys = data.id_data.data.shape_keys if data.id_data.type == "MESH" else None
        if keys is not None:
            row.prop_search(item, "shape_key", keys, "key_blocks", text="")
        else:
            row.prop(item, "shape_key", text="")


def draw_character(layout, context) -> None:
    """The Character box: pick a mesh (and its bones), drive it, correct its ARKit mapping, export it."""
    from . import character

    settings = context.scene.thunder
    box = layout.box()
    box.label(text="Character (ARKit)", icon="OUTLINER_OB_ARMATURE")
    box.prop(settings, "character", text="")
    mesh = settings.character
    if mesh is not None and mesh.type == "MESH":
        binding = mesh.thunder_character
        column = box.column(align=True)
        column.prop(binding, "armature")
        if binding.armature is not None:
            bones = binding.armature.data
            for name in ("jaw_bone", "eye_left_bone", "eye_right_bone", "head_bone"):
                column.prop_search(binding, name, bones, "bones")
        column.prop(binding, "head_target")
        sub = column.row(align=True)
        sub.enabled = binding.head_target != "NONE"
        sub.prop(binding, "head_strength", slider=True)
        row = column.row(align=True)
        row.prop(binding, "jaw_open_angle")
        row.operator("thunder.character_calibrate", text="", icon="DRIVER_DISTANCE")
        row = box.row(align=True)
        if binding.is_character:
            row.operator("thunder.character_update", icon="FILE_REFRESH")
            row.operator("thunder.character_release", text="", icon="X")
        else:
            row.operator("thunder.character_drive", icon="PLAY")
        if len(binding.mapping):
            missing = character.missing(mesh)
            box.label(text=f"{52 - len(missing)} of ARKit's 52 shapes mapped")
            box.template_list("THUNDER_UL_arkit_mapping", "", binding, "mapping", binding, "active_match", rows=4)
            if missing:
                _wrapped(box, "Missing: " + ", ".join(missing), icon="INFO")
        row = box.row(align=True)
        row.operator("thunder.character_match", icon="VIEWZOOM")
        row.operator("thunder.character_mapping_save", text="", icon="FILE_TICK")
        row.operator("thunder.character_mapping_load", text="", icon="FILEBROWSER")
        if binding.is_character:
            box.operator("thunder.character_export", icon="EXPORT")
    row = box.row(align=True)
    row.prop(settings, "export_arkit_csv", toggle=True)
    row.prop(settings, "export_arkit_json", toggle=True)
    row.operator("thunder.export_arkit", text="Export ARKit", icon="EXPORT")


def draw_directing(layout, context) -> None:
    """Constraints (Generate and Resample range keep them) and Resample range."""
    settings = context.scene.thunder
    box = layout.box()
    box.label(text="Direct", icon="CON_ACTION")
    for index, item in enumerate(settings.constraints):
        row = box.row(align=True)
        row.prop(item, "kind", text="")
        if item.kind == "hold":
            row.prop(item, "pose", text="")
            row.prop(item, "start", text="")
            row.prop(item, "end", text="")
        else:
            row.prop(item, "expression", text="")
            row.prop(item, "value", text="")
            row.prop(item, "frame", text="")
        row.operator("thunder.constraint_remove", text="", icon="X").index = index
    row = box.row(align=True)
    row.operator("thunder.constraint_add", text="Hold", icon="ADD").kind = "hold"
    row.operator("thunder.constraint_add", text="Key", icon="ADD").kind = "key"
    row = box.row(align=True)
    row.prop(settings, "range_only", text="")
    row.operator("thunder.resample_range", icon="ARROW_LEFTRIGHT")
    try:
        first, last = api.scene_range(context)
        box.label(text=f"Range: frames {first} to {last}")
    except api.ThunderError:
        box.label(text="Range: set a preview range or select two markers")


def draw_strengths(layout, item) -> None:
    """The active take's strengths (changed without sampling again) and its Listen button."""
    box = layout.box()
    box.label(text="Strengths", icon="MODIFIER")
    column = box.column(align=True)
    for prop in ("strength_lips_jaw", "strength_brows", "strength_blinks", "strength_cheeks_nose",
                 "strength_head_motion", "smoothing"):
        column.prop(item, prop, slider=True)
    box.operator("thunder.take_listen", icon="SPEAKER")


class _ThunderPanel:
    bl_label = "Thunder"
    bl_region_type = "UI"
    bl_category = "Thunder"

    def draw(self, context):
        draw_panel(self.layout, context)


class THUNDER_PT_view3d(_ThunderPanel, bpy.types.Panel):
    bl_space_type = "VIEW_3D"


class THUNDER_PT_sequencer(_ThunderPanel, bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"


class ThunderPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_python: bpy.props.StringProperty(
        name="Backend Python", subtype="FILE_PATH",
        description="The python of the environment where Thunder's backend (torch) is installed; empty: found "
                    "from THUNDER_BACKEND_PYTHON or a `thunder` command on the PATH")
    device: bpy.props.EnumProperty(
        name="Device", items=[("auto", "Auto", "A CUDA GPU when the backend's torch sees one, else the CPU"),
                              ("cpu", "CPU", "The CPU"), ("cuda", "CUDA", "An NVIDIA GPU")])
    checkpoint: bpy.props.StringProperty(
        name="Model", subtype="DIR_PATH",
        description="A THUNDER model folder; empty: the model that ships with Thunder")
    flame_model: bpy.props.StringProperty(
        name="FLAME model", subtype="FILE_PATH",
        description="Your FLAME file (generic_model.pkl, flame2023*.pkl or a converted .npz), for Add FLAME head")
    threads: bpy.props.IntProperty(name="CPU threads", default=0, min=0, max=256,
                                   description="Threads for the backend's torch on the CPU (0: torch's choice)")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "backend_python")
        layout.prop(self, "device")
        layout.prop(self, "checkpoint")
        layout.prop(self, "flame_model")
        layout.prop(self, "threads")
        draw_backend(layout)


classes = (THUNDER_UL_takes, THUNDER_UL_arkit_mapping, THUNDER_PT_view3d, THUNDER_PT_sequencer, ThunderPreferences)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
