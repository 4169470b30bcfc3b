"""Building a Thunder head in Blender from the backend's head arrays, with numpy and bpy alone.

The backend's `head` reply (docs/service_protocol.md) is an .npz of the rest mesh, the expression and
pose-corrective bases, the joints, the skinning weights and the face regions. From it:

    armature object "<name>"        bones at FLAME's joints (root, neck, jaw, eyes), identity rest orientation;
                                    the object turns FLAME's y-up frame into Blender's z-up world
      mesh object "<name> mesh"     parented to it, with an Armature modifier, one vertex group per bone
                                    holding FLAME's skinning weights, and shape keys:
                                      Basis (the rest mesh, with an optional identity shape baked in),
                                      one per expression component (slider range -10..10: FLAME weights are
                                      signed, and Blender's default 0..1 would silently clamp them),
                                      36 pose correctives pose.<joint>.<row><col>, keyed per frame by takes.

Everything in the armature's own space is FLAME's coordinates, so rig_math's channels apply unchanged.
"""

from __future__ import annotations

import math
from pathlib import Path

import bpy
import numpy as np

from . import compat, rig_math
from .errors import ThunderError

SLIDER_RANGE = 10.0   # Blender's hard limit for shape-key sliders
BONE_LENGTHS = {"global": 0.06, "neck": 0.05, "jaw": 0.03, "eye_left": 0.015, "eye_right": 0.015}

# Display colours (linear RGB) of the face regions; unknown regions get the skin colour.
REGION_COLORS = {
    "skin": (0.62, 0.42, 0.33),
    "lips": (0.50, 0.16, 0.15),
    "mouth_interior": (0.09, 0.018, 0.018),
    "sclera": (0.80, 0.78, 0.74),
    "iris": (0.10, 0.16, 0.25),
    "pupil": (0.01, 0.01, 0.01),
}


class HeadBuildError(ThunderError):
    """The head file cannot be built into a Blender head; one sentence."""


def read_head_arrays(path) -> dict[str, np.ndarray]:
    try:
        with np.load(Path(path), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except Exception as exc:  # a missing or damaged file: the backend's work folder was removed, say
        raise HeadBuildError(f"the head file {path} cannot be read ({type(exc).__name__})") from None


def mesh_from_arrays(name: str, vertices: np.ndarray, faces: np.ndarray, face_region=None,
                     region_names=("skin",)):
    """A smooth-shaded triangle mesh datablock, with one material per face region."""
    faces = np.asarray(faces, dtype=np.int32)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(vertices))
    mesh.vertices.foreach_set("co", np.asarray(vertices, dtype=np.float32).ravel())
    mesh.loops.add(faces.size)
    mesh.polygons.add(len(faces))
    mesh.loops.foreach_set("vertex_index", faces.ravel())
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    mesh.polygons.foreach_set("loop_total", np.full(len(faces), 3, dtype=np.int32))
    for region in region_names:
        material = bpy.data.materials.new(f"{name} {region}")
        color = (*REGION_COLORS.get(region, REGION_COLORS["skin"]), 1.0)
        material.diffuse_color = color      # the viewport's solid mode and Workbench
        material.roughness = 0.55 if region in ("sclera", "iris", "pupil", "lips") else 0.75
        tree = compat.material_node_tree(material)
        principled = tree.nodes.get("Principled BSDF") if tree else None
        if principled is not None:
            principled.inputs["Base Color"].default_value = color   # EEVEE and Cycles
            principled.inputs["Roughness"].default_value = material.roughness
        mesh.materials.append(material)
    if face_region is not None:
        mesh.polygons.foreach_set("material_index", np.asarray(face_region, dtype=np.int32))
    mesh.polygons.foreach_set("use_smooth", np.ones(len(faces), dtype=bool))
    mesh.update()
    mesh.validate()
    return mesh


HEAD_ARRAYS = ("vertices", "faces", "expression_basis", "pose_basis", "joints", "joint_expression_basis",
               "weights", "parents")   # and "face_region" and "lip_centers" when the head has them


def build_head(head_file, info: dict, name: str | None = None, collection=None, location=(0.0, 0.0, 0.0)):
    """Build the head described by the backend's `head` reply `info` from its file; returns the armature
    object (the head's handle: takes, settings and identity live on it)."""
    arrays = read_head_arrays(head_file)
    missing = [key for key in HEAD_ARRAYS if key not in arrays]
    if missing:
        raise HeadBuildError(f"the head file {head_file} lacks {', '.join(missing)}")
    return build_head_from_arrays(arrays, info, name, collection, location)


def build_head_from_arrays(arrays: dict, info: dict, name: str | None = None, collection=None,
                           location=(0.0, 0.0, 0.0)):
    """build_head from the arrays themselves (HEAD_ARRAYS, as the backend's head_mesh_arrays makes them)."""
    missing = [key for key in HEAD_ARRAYS if key not in arrays]
    if missing:
        raise HeadBuildError(f"the head's arrays lack {', '.join(missing)}")
    name = name or "Thunder head"
    collection = collection or bpy.context.scene.collection
    vertices = arrays["vertices"].astype(np.float64)
    joint_names = list(info["joint_names"])
    expression_names = list(info["expression_names"])

    # The mesh, its regions and its shape keys.
    region_names = info.get("face_region_names") or ["skin"]
    mesh = mesh_from_arrays(f"{name} mesh", vertices, arrays["faces"], arrays.get("face_region"), region_names)
    mesh_object = bpy.data.objects.new(f"{name} mesh", mesh)
    collection.objects.link(mesh_object)
    mesh_object.shape_key_add(name="Basis", from_mix=False)
    bases = [(n, arrays["expression_basis"][:, :, k]) for k, n in enumerate(expression_names)]
    bases += list(zip(rig_math.pose_corrective_names(joint_names), np.moveaxis(arrays["pose_basis"], 2, 0)))
    for key_name, offsets in bases:
        block = mesh_object.shape_key_add(name=key_name, from_mix=False)
        block.slider_min, block.slider_max = -SLIDER_RANGE, SLIDER_RANGE
        block.data.foreach_set("co", (vertices + offsets).astype(np.float32).ravel())
    mesh.shape_keys.name = f"{name} keys"

    # The armature: bones at the rest joints, each pointing along +y (identity rest orientation).
    armature = bpy.data.armatures.new(name)
    armature_object = bpy.data.objects.new(name, armature)
    collection.objects.link(armature_object)
    armature_object.rotation_euler = (math.pi / 2, 0.0, 0.0)   # FLAME's y up to Blender's z up
    armature_object.location = location
    armature_object.show_in_front = True
    _add_bones(armature_object, joint_names, arrays["joints"], arrays["parents"])
    for bone in armature_object.pose.bones:
        bone.rotation_mode = "QUATERNION"
    # How expressions move the joints, for rig_math.bone_channels when takes are keyed.
    armature["thunder_joint_names"] = joint_names
    armature["thunder_expression_names"] = expression_names
    armature["thunder_joint_expression_basis"] = arrays["joint_expression_basis"].astype(np.float64).ravel().tolist()
    # The mesh as built: takes key these vertices, so an edited mesh (check_head) must not get a take.
    armature["thunder_vertex_count"] = len(mesh.vertices)
    armature["thunder_face_count"] = len(mesh.polygons)
    if "lip_centers" in arrays:   # the inner-lip centres: strengths.py's smoothing keeps their closures
        armature["thunder_lip_centers"] = [int(v) for v in arrays["lip_centers"]]

    mesh_object.parent = armature_object
    for j, joint in enumerate(joint_names):
        group = mesh_object.vertex_groups.new(name=joint)
        weights = arrays["weights"][:, j]
        for index in np.flatnonzero(weights > 1e-6):
            group.add([int(index)], float(weights[index]), "REPLACE")
    modifier = mesh_object.modifiers.new("Armature", "ARMATURE")
    modifier.object = armature_object

    head = armature_object.thunder
    head.is_head = True
    head.mesh = mesh_object
    head.head_name = info["name"]
    head.identity = info["identity"]
    head.source = str(info.get("source") or "builtin")
    head.shape = repr(list(info.get("shape") or []))
    return armature_object


def _add_bones(armature_object, joint_names, joints, parents) -> None:
    """Edit bones at the joints; needs edit mode, entered and left here."""
    view_layer = bpy.context.view_layer
    previous = view_layer.objects.active
    view_layer.objects.active = armature_object
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        bones = []
        for j, joint in enumerate(joint_names):
            bone = armature_object.data.edit_bones.new(joint)
            bone.head = tuple(float(c) for c in joints[j])
            bone.tail = (float(joints[j][0]), float(joints[j][1]) + BONE_LENGTHS.get(joint, 0.02),
                         float(joints[j][2]))
            bone.roll = 0.0
            if parents[j] >= 0:
                bone.parent = bones[int(parents[j])]
            bones.append(bone)
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
        view_layer.objects.active = previous


def head_of(obj):
    """The Thunder head (armature object) that `obj` is or belongs to, or None."""
    for candidate in (obj, getattr(obj, "parent", None)):
        if candidate is not None and candidate.type == "ARMATURE" and candidate.thunder.is_head:
            return candidate
    return None


def check_head(head_object) -> None:
    """HeadBuildError (one sentence saying what changed) unless the head's mesh is still the one Thunder built:
    its mesh object, its vertex and face counts, and its shape keys. Takes key Thunder's vertices by index, so
    an edited mesh would deform wrongly or export a broken rig."""
    name = head_object.name
    mesh_object = head_object.thunder.mesh
    if mesh_object is None or not mesh_object.users_collection:
        raise HeadBuildError(f"the head '{name}' has lost its mesh; add the head again (Add > Thunder Head)")
    mesh, armature = mesh_object.data, head_object.data
    again = ("Thunder's takes move the vertices it built, so they cannot go on an edited mesh; add the head "
             "again (Add > Thunder Head) and edit a copy")
    for what, built, now in (("vertices", armature.get("thunder_vertex_count"), len(mesh.vertices)),
                             ("faces", armature.get("thunder_face_count"), len(mesh.polygons))):
        if built is not None and int(built) != now:
            raise HeadBuildError(f"the head '{name}' has {now} {what}, but Thunder built it with {int(built)}: {again}")
    keys = mesh.shape_keys
    expected = list(armature.get("thunder_expression_names") or [])
    joint_names = list(armature.get("thunder_joint_names") or [])
    expected += rig_math.pose_corrective_names(joint_names) if joint_names else []
    present = set(keys.key_blocks.keys()) if keys is not None else set()
    missing = [key for key in expected if key not in present]
    if keys is None or missing:
        what = "its shape keys" if keys is None or len(missing) == len(expected) else \
            f"{len(missing)} of its shape keys ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"
        raise HeadBuildError(f"the head '{name}' has lost {what}: {again}")


def head_rig_data(head_object) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """What keying a take needs, as the head was built: the joint names, the expression names, the rest
    joints (J, 3) in FLAME coordinates and how expressions move them (J, 3, E)."""
    armature = head_object.data
    joint_names = list(armature["thunder_joint_names"])
    expression_names = list(armature["thunder_expression_names"])
    joints = np.array([armature.bones[name].head_local for name in joint_names], dtype=np.float64)
    basis = np.asarray(armature["thunder_joint_expression_basis"], dtype=np.float64)
    return joint_names, expression_names, joints, basis.reshape(len(joint_names), 3, len(expression_names))


def head_lip_geometry(head_object):
    """The head's strengths.LipGeometry, read from the mesh as built (its Basis and expression shape keys, its
    jaw vertex group and the jaw bone), or None for a head built without lip landmarks."""
    from .strengths import LipGeometry

    centers = head_object.data.get("thunder_lip_centers")
    if centers is None:
        return None
    centers = [int(v) for v in centers]
    mesh = head_object.thunder.mesh.data
    keys = mesh.shape_keys.key_blocks
    names = list(head_object.data["thunder_expression_names"])
    rest = np.array([keys["Basis"].data[v].co for v in centers], dtype=np.float64)
    basis = np.stack([np.array([keys[name].data[v].co for v in centers], dtype=np.float64) - rest
                      for name in names], axis=-1)
    group = head_object.thunder.mesh.vertex_groups.get("jaw")
    weight = 0.0
    if group is not None:
        weight = next((g.weight for g in mesh.vertices[centers[1]].groups if g.group == group.index), 0.0)
    jaw_joint = np.array(head_object.data.bones["jaw"].head_local, dtype=np.float64)
    return LipGeometry(rest, basis, jaw_joint, float(weight))
