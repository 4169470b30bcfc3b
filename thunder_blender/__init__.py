"""Thunder's Blender extension: runs in Blender's own Python (bpy and numpy only, never torch).

It talks to the backend, which lives in the user's own Python environment, as a subprocess over
stdin/stdout. What is here so far: the add-on preferences that point at that environment.
"""

import bpy


class ThunderPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_python: bpy.props.StringProperty(
        name="Backend Python",
        description="The Python executable of the environment where Thunder's backend (torch) is installed",
        subtype="FILE_PATH",
    )
    flame_model: bpy.props.StringProperty(
        name="FLAME model",
        description="Your FLAME file (generic_model.pkl, flame2023*.pkl or a converted .npz); "
                    "leave empty to use the built-in head",
        subtype="FILE_PATH",
    )

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "backend_python")
        layout.prop(self, "flame_model")


_classes = (ThunderPreferences,)


def register():
    for cls in _classes:
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
