"""`bpy.ops.thunder.*`: thin operators over api.py. Each reports the api's one-sentence errors in the status
bar and in the panel, and changes nothing when it fails."""

import bpy

from . import api, character, take_actions


def _run(operator, action) -> set:
    """Call `action`; a user error becomes a report (the panel shows it too) and CANCELLED."""
    try:
        action()
    except api.ThunderError as exc:
        api.notice.level, api.notice.text = "ERROR", str(exc)
        operator.report({"ERROR"}, str(exc))
        return {"CANCELLED"}
    return {"FINISHED"}


class THUNDER_OT_backend_start(bpy.types.Operator):
    bl_idname = "thunder.backend_start"
    bl_label = "Start Backend"
    bl_description = "Start Thunder's backend (it also starts by itself on first use)"

    def execute(self, context):
        return _run(self, api.backend_start)


class THUNDER_OT_backend_stop(bpy.types.Operator):
    bl_idname = "thunder.backend_stop"
    bl_label = "Stop Backend"
    bl_description = "Stop Thunder's backend and free its memory; a running job is cancelled"

    def execute(self, context):
        return _run(self, api.backend_stop)


class THUNDER_OT_add_head(bpy.types.Operator):
    bl_idname = "thunder.add_head"
    bl_label = "Add Thunder Head"
    bl_description = "Add a head that Thunder can animate"
    bl_options = {"REGISTER", "UNDO"}

    source: bpy.props.EnumProperty(
        name="Head", items=[("BUILTIN", "Thunder head", "Thunder's built-in head"),
                            ("FLAME", "FLAME head", "A head from your FLAME model file (set in the preferences)")])

    def execute(self, context):
        result = _run(self, lambda: api.add_head("builtin" if self.source == "BUILTIN" else "flame", context=context))
        if result == {"FINISHED"} and context.area is not None and context.area.type == "VIEW_3D":
            bpy.ops.view3d.view_selected()   # a head is 25 cm tall: frame it, or it is a dot at the cursor
        return result


class THUNDER_OT_generate(bpy.types.Operator):
    bl_idname = "thunder.generate"
    bl_label = "Generate"
    bl_description = "Sample takes of facial animation for the chosen audio on the chosen head"

    replace_animation: bpy.props.BoolProperty(options={"SKIP_SAVE", "HIDDEN"})

    def invoke(self, context, event):
        """Ask before playing takes on a head that has other animation (it is kept aside, never deleted)."""
        try:
            head = api.resolve_head(context.scene.thunder.head, context)
        except api.ThunderError:
            return self.execute(context)   # execute reports the problem
        foreign = take_actions.foreign_animation(head)
        if foreign and not context.scene.thunder.replace_animation:
            self.replace_animation = True
            return context.window_manager.invoke_confirm(
                self, event, title="Replace the head's animation?",
                message=f"{head.name} plays animation that is not a Thunder take ({', '.join(foreign)}). "
                        "It is kept aside, never deleted.", confirm_text="Keep it aside and generate")
        return self.execute(context)

    def execute(self, context):
        s = context.scene.thunder
        return _run(self, lambda: api.generate(
            s.head, strip=s.strip if s.audio_source == "STRIP" else None,
            audio_file=s.audio_file if s.audio_source == "FILE" else None, takes=s.takes,
            seed=s.seed if s.seed_mode == "FIXED" else None, emotion=s.emotion, intensity=s.intensity,
            guidance=None if s.model_sampling else s.guidance, steps=None if s.model_sampling else s.steps,
            replace_animation=s.replace_animation or self.replace_animation,
            context=context, constraints=api.scene_constraints(context) or None, best_of=s.best_of or None))


class THUNDER_OT_cancel(bpy.types.Operator):
    bl_idname = "thunder.cancel"
    bl_label = "Cancel"
    bl_description = "Stop the running job between two sampler steps; nothing is changed"

    def execute(self, context):
        return _run(self, api.cancel)


class THUNDER_OT_resample(bpy.types.Operator):
    bl_idname = "thunder.resample"
    bl_label = "Resample"
    bl_description = "New seeds, same settings, for every take that is not kept"

    def execute(self, context):
        return _run(self, lambda: api.resample(context.scene.thunder.head, context=context))


class THUNDER_OT_resample_range(bpy.types.Operator):
    bl_idname = "thunder.resample_range"
    bl_label = "Resample Range"
    bl_description = ("A new take: the active take outside the preview range (or two selected markers), sampled "
                      "anew inside it; the panel's constraints, if any, replace the take's")

    def execute(self, context):
        s = context.scene.thunder
        return _run(self, lambda: api.resample_range(
            s.head, only=None if s.range_only == "ALL" else s.range_only,
            constraints=api.scene_constraints(context) or None, context=context))


class THUNDER_OT_constraint_add(bpy.types.Operator):
    bl_idname = "thunder.constraint_add"
    bl_label = "Add Constraint"
    bl_description = "Add a hold (over the preview range, or a second from the current frame) or a key (at the current frame)"
    bl_options = {"REGISTER", "UNDO"}

    kind: bpy.props.EnumProperty(items=[("hold", "Hold", ""), ("key", "Key", "")])

    def execute(self, context):
        scene = context.scene
        item = scene.thunder.constraints.add()
        item.kind = self.kind
        if scene.use_preview_range:
            item.start, item.end = scene.frame_preview_start, scene.frame_preview_end
        else:
            item.start, item.end = scene.frame_current, scene.frame_current + round(scene.render.fps)
        item.frame = scene.frame_current
        return {"FINISHED"}


class THUNDER_OT_constraint_remove(bpy.types.Operator):
    bl_idname = "thunder.constraint_remove"
    bl_label = "Remove Constraint"
    bl_options = {"REGISTER", "UNDO"}

    index: bpy.props.IntProperty()

    def execute(self, context):
        constraints = context.scene.thunder.constraints
        if 0 <= self.index < len(constraints):
            constraints.remove(self.index)
        return {"FINISHED"}


class _TakeOperator:
    index: bpy.props.IntProperty(default=-1, options={"SKIP_SAVE"},
                                 description="The take's position in the list (-1: the active take)")

    def take_index(self, context):
        head = api.resolve_head(context.scene.thunder.head, context)
        return head, (self.index if self.index >= 0 else head.thunder.active_take)


class THUNDER_OT_take_activate(_TakeOperator, bpy.types.Operator):
    bl_idname = "thunder.take_activate"
    bl_label = "Play Take"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        return _run(self, lambda: api.activate_take(*self.take_index(context)))


class THUNDER_OT_take_delete(_TakeOperator, bpy.types.Operator):
    bl_idname = "thunder.take_delete"
    bl_label = "Delete Take"
    bl_description = "Delete the take and its action (Undo brings it back); its take file stays on disk"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        return _run(self, lambda: api.delete_take(*self.take_index(context)))


class THUNDER_OT_take_keep(_TakeOperator, bpy.types.Operator):
    bl_idname = "thunder.take_keep"
    bl_label = "Keep Take"
    bl_description = "Keep this take when resampling (toggle)"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        def toggle():
            head, index = self.take_index(context)
            api.keep_take(head, index, not head.thunder.takes[index].kept)
        return _run(self, toggle)


class THUNDER_OT_take_rename(_TakeOperator, bpy.types.Operator):
    bl_idname = "thunder.take_rename"
    bl_label = "Rename Take"
    bl_options = {"REGISTER", "UNDO"}

    name: bpy.props.StringProperty(name="Name")

    def invoke(self, context, event):
        head, index = self.take_index(context)
        self.name = head.thunder.takes[index].name
        return context.window_manager.invoke_props_dialog(self)

    def execute(self, context):
        return _run(self, lambda: api.rename_take(*self.take_index(context), self.name))


class THUNDER_OT_take_listen(_TakeOperator, bpy.types.Operator):
    bl_idname = "thunder.take_listen"
    bl_label = "Listen to the Lips"
    bl_description = ("Add a muted sound strip of what the take's lips say (the M2S model's speech, vocoded): "
                      "unmute it, and mute the original, to hear how well the lips read")
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        return _run(self, lambda: api.listen(*self.take_index(context), context=context))


class THUNDER_OT_export(bpy.types.Operator):
    bl_idname = "thunder.export"
    bl_label = "Export"
    bl_description = "Export the active take (or every take) to the chosen formats; existing files are not replaced"

    def execute(self, context):
        s = context.scene.thunder
        formats = [name for name, on in (("fbx", s.export_fbx), ("abc", s.export_abc), ("usd", s.export_usd)) if on]
        if not formats:
            self.report({"ERROR"}, "tick at least one of FBX, Alembic and USD")
            return {"CANCELLED"}
        return _run(self, lambda: api.export(s.head, s.export_folder, formats, every_take=s.export_all))


# ---------------------------------------------------------------------------------------------- characters
def _character(context):
    mesh = context.scene.thunder.character
    if mesh is None:
        raise api.ThunderError("choose a character first (a mesh with ARKit-named shape keys)")
    return mesh


class _CharacterOperator:
    """An operator on the panel's character: `act(mesh)` does it; a user error is a report and changes nothing."""

    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        return _run(self, lambda: self.act(_character(context)))


class THUNDER_OT_character_drive(_CharacterOperator, bpy.types.Operator):
    bl_idname = "thunder.character_drive"
    bl_label = "Drive Character"
    bl_description = "Play every take of the head on the character, through its ARKit shape keys and bones"

    def act(self, mesh):
        b = mesh.thunder_character
        api.drive_character(mesh, bpy.context.scene.thunder.head, b.armature, b.jaw_bone, b.eye_left_bone,
                            b.eye_right_bone, b.head_bone, b.head_target, b.head_strength)


class THUNDER_OT_character_update(_CharacterOperator, bpy.types.Operator):
    bl_idname = "thunder.character_update"
    bl_label = "Update Character"
    bl_description = "Key the takes on the character again (after changing its mapping, bones or calibration)"

    def act(self, mesh):
        api.update_character(mesh)


class THUNDER_OT_character_match(_CharacterOperator, bpy.types.Operator):
    bl_idname = "thunder.character_match"
    bl_label = "Match Shape Keys"
    bl_description = "Match the character's shape keys to ARKit's 52 names again (forgiving case, separators, prefixes)"

    def act(self, mesh):
        character.match(mesh)
        if mesh.thunder_character.is_character:
            api.update_character(mesh)


class THUNDER_OT_character_release(_CharacterOperator, bpy.types.Operator):
    bl_idname = "thunder.character_release"
    bl_label = "Release Character"
    bl_description = "Stop driving the character; its own animation plays again"

    def act(self, mesh):
        api.release_character(mesh)


class THUNDER_OT_character_calibrate(_CharacterOperator, bpy.types.Operator):
    bl_idname = "thunder.character_calibrate"
    bl_label = "Calibrate Jaw"
    bl_description = "Measure how far the character's jawOpen shape key turns the jaw, so it opens as far as the built-in head's"

    def act(self, mesh):
        api.calibrate_character_jaw(mesh)


class _MappingFile:
    filepath: bpy.props.StringProperty(subtype="FILE_PATH")
    filter_glob: bpy.props.StringProperty(default="*.json", options={"HIDDEN"})

    def invoke(self, context, event):
        if not self.filepath:
            self.filepath = "arkit_mapping.json"
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}


class THUNDER_OT_character_mapping_save(_MappingFile, bpy.types.Operator):
    bl_idname = "thunder.character_mapping_save"
    bl_label = "Save Mapping"
    bl_description = "Save the character's ARKit mapping as JSON (an existing file is not replaced)"

    def execute(self, context):
        return _run(self, lambda: api.save_character_mapping(_character(context), self.filepath))


class THUNDER_OT_character_mapping_load(_MappingFile, bpy.types.Operator):
    bl_idname = "thunder.character_mapping_load"
    bl_label = "Load Mapping"
    bl_description = "Load an ARKit mapping JSON onto the character (checked against its shape keys first)"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        return _run(self, lambda: api.load_character_mapping(_character(context), self.filepath))


class THUNDER_OT_character_export(bpy.types.Operator):
    bl_idname = "thunder.character_export"
    bl_label = "Export Character"
    bl_description = "Export the character with the active take (or every take) to the chosen formats"

    def execute(self, context):
        s = context.scene.thunder
        formats = [name for name, on in (("fbx", s.export_fbx), ("abc", s.export_abc), ("usd", s.export_usd)) if on]
        if not formats:
            self.report({"ERROR"}, "tick at least one of FBX, Alembic and USD")
            return {"CANCELLED"}
        return _run(self, lambda: api.export_character(_character(context), s.export_folder, formats,
                                                       every_take=s.export_all))


class THUNDER_OT_export_arkit(bpy.types.Operator):
    bl_idname = "thunder.export_arkit"
    bl_label = "Export ARKit Weights"
    bl_description = "Write the active take (or every take) as a Live Link Face CSV (Unreal) and a JSON of ARKit weights"

    def execute(self, context):
        s = context.scene.thunder
        formats = [name for name, on in (("csv", s.export_arkit_csv), ("json", s.export_arkit_json)) if on]
        if not formats:
            self.report({"ERROR"}, "tick at least one of Live Link CSV and JSON")
            return {"CANCELLED"}
        return _run(self, lambda: api.export_arkit(s.head, s.export_folder, formats, every_take=s.export_all))


classes = (THUNDER_OT_backend_start, THUNDER_OT_backend_stop, THUNDER_OT_add_head, THUNDER_OT_generate,
           THUNDER_OT_cancel, THUNDER_OT_resample, THUNDER_OT_take_activate, THUNDER_OT_take_delete,
           THUNDER_OT_take_keep, THUNDER_OT_take_rename, THUNDER_OT_take_listen, THUNDER_OT_export, THUNDER_OT_resample_range,
           THUNDER_OT_constraint_add, THUNDER_OT_constraint_remove,
           THUNDER_OT_character_drive,
           THUNDER_OT_character_update, THUNDER_OT_character_match, THUNDER_OT_character_release,
           THUNDER_OT_character_calibrate, THUNDER_OT_character_mapping_save, THUNDER_OT_character_mapping_load,
           THUNDER_OT_character_export, THUNDER_OT_export_arkit)


def menu_add_head(self, context):
    self.layout.operator(THUNDER_OT_add_head.bl_idname, text="Thunder Head", icon="MONKEY").source = "BUILTIN"
    self.layout.operator(THUNDER_OT_add_head.bl_idname, text="FLAME Head", icon="MONKEY").source = "FLAME"


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.VIEW3D_MT_add.append(menu_add_head)


def unregister():
    bpy.types.VIEW3D_MT_add.remove(menu_add_head)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
