"""Reading exported takes back, so tests can prove what a file holds rather than that it was written.

In Blender (bpy and numpy only: this module also runs in an isolated Blender Python without pxr, torch or
the repository's packages):

    shapes = fbx_shape_key_curves(path)      # {shape key name: (frames (K,), values (K,))}
    bones = fbx_bone_rotations(path)         # {bone name: (frames (K,), quaternions (K, 4) w x y z)}
    shapes, bones = read_fbx(path)           # both from one import
    vertices = alembic_vertices(path, frames, fps)   # (T, V, 3) float64, world space by default

With usd-core (pxr), outside Blender:

    weights = usd_blendshape_weights(path)   # {blend shape name: (time codes (K,), values (K,))}
    rotations = usd_joint_rotations(path)    # {joint name: (time codes (K,), quaternions (K, 4) w x y z)}

The Blender readers import into a scene of their own, made for the purpose, and remove it and what they
imported afterwards: the caller's scene, selection and data are left as they were.
"""

from __future__ import annotations

import contextlib
import re

import numpy as np

_SHAPE_KEY_PATH = re.compile(r'^key_blocks\["(.+)"\]\.value$')
_BONE_ROTATION_PATH = re.compile(r'^pose\.bones\["(.+)"\]\.rotation_quaternion$')


# ---------------------------------------------------------------------------------------------- Blender
@contextlib.contextmanager
def _readback_scene(name="thunder readback"):
    """A new empty scene, current while the block runs; removed afterwards with everything imported into it."""
    import bpy

    window = bpy.context.window
    previous = bpy.context.scene
    scene = bpy.data.scenes.new(name)
    kinds = ("objects", "meshes", "armatures", "actions", "materials", "cache_files")   # removed in this order
    before = {kind: set(getattr(bpy.data, kind)) for kind in kinds}
    try:
        if window is not None:
            window.scene = scene
            yield scene
        else:   # Blender without a window (blender --background): point the operators' context at the scene
            with bpy.context.temp_override(scene=scene, view_layer=scene.view_layers[0]):
                yield scene
    finally:
        if window is not None:
            window.scene = previous
        for obj in list(scene.objects):
            bpy.data.objects.remove(obj)
        bpy.data.scenes.remove(scene)
        for kind, old in before.items():
            collection = getattr(bpy.data, kind)
            unused = [d for d in collection if d not in old and d.users == int(d.use_fake_user)]
            if unused:
                bpy.data.batch_remove(unused)


def _fcurves(id_data):
    """The F-curves playing on `id_data`: the channelbag of its action's slot (4.5 and 5.x), or the legacy list."""
    animation = getattr(id_data, "animation_data", None)
    action = animation.action if animation is not None else None
    if action is None:
        return []
    slot = getattr(animation, "action_slot", None)
    for layer in getattr(action, "layers", ()):
        for strip in layer.strips:
            bag = strip.channelbag(slot) if slot is not None else None
            if bag is not None:
                return list(bag.fcurves)
    return list(getattr(action, "fcurves", ()))


def _keys(curve) -> tuple[np.ndarray, np.ndarray]:
    co = np.empty(2 * len(curve.keyframe_points), dtype=np.float32)
    curve.keyframe_points.foreach_get("co", co)
    co = co.reshape(-1, 2).astype(np.float64)
    return co[:, 0], co[:, 1]


def _animation_of(objects) -> tuple[dict, dict]:
    shapes, bones = {}, {}
    for obj in objects:
        keys = obj.data.shape_keys if obj.type == "MESH" else None
        for curve in _fcurves(keys) if keys is not None else ():
            match = _SHAPE_KEY_PATH.match(curve.data_path)
            if match:
                shapes[match.group(1)] = _keys(curve)
        if obj.type != "ARMATURE":
            continue
        rotations = {}
        for curve in _fcurves(obj):
            match = _BONE_ROTATION_PATH.match(curve.data_path)
            if match:
                rotations.setdefault(match.group(1), {})[curve.array_index] = _keys(curve)
        for bone, channels in rotations.items():
            if sorted(channels) != [0, 1, 2, 3]:
                raise ValueError(f"the bone {bone} has rotation curves {sorted(channels)}, not w, x, y and z")
            frames = channels[0][0]
            if any(not np.array_equal(channels[axis][0], frames) for axis in range(4)):
                raise ValueError(f"the rotation curves of the bone {bone} are keyed at different frames")
            bones[bone] = (frames, np.column_stack([channels[axis][1] for axis in range(4)]))
    return shapes, bones


def read_fbx(path) -> tuple[dict, dict]:
    """Import an FBX file (keys at the frames written: anim_offset 0) and return its animation:
    ({shape key name: (frames, values)}, {bone name: (frames, quaternions (K, 4) w x y z)})."""
    import bpy

    with _readback_scene("thunder fbx readback") as scene:
        result = bpy.ops.import_scene.fbx(filepath=str(path), anim_offset=0.0, use_anim=True)
        if "FINISHED" not in result:
            raise RuntimeError(f"importing {path} returned {result}")
        return _animation_of(list(scene.objects))


def fbx_shape_key_curves(path) -> dict:
    """{shape key name: (frames (K,), values (K,))} of an FBX file's blend-shape animation."""
    return read_fbx(path)[0]


def fbx_bone_rotations(path) -> dict:
    """{bone name: (frames (K,), quaternions (K, 4) w x y z)}: the bones' keyed rotations, relative to rest."""
    return read_fbx(path)[1]


def alembic_vertices(path, frames, fps: float, space: str = "WORLD") -> np.ndarray:
    """The vertices of the one mesh in an Alembic file at `frames` (Blender frames at `fps`): (T, V, 3) float64,
    in world space ("WORLD", through the imported hierarchy's transforms) or the mesh's own ("LOCAL")."""
    import bpy

    frames = [float(frame) for frame in frames]
    with _readback_scene("thunder alembic readback") as scene:
        scene.render.fps = max(1, round(fps))        # Alembic stores seconds: frames come back at this rate
        scene.render.fps_base = scene.render.fps / fps
        result = bpy.ops.wm.alembic_import(filepath=str(path), as_background_job=False, set_frame_range=True)
        if "FINISHED" not in result:
            raise RuntimeError(f"importing {path} returned {result}")
        meshes = [obj for obj in scene.objects
                  if obj.type == "MESH" and any(m.type == "MESH_SEQUENCE_CACHE" for m in obj.modifiers)]
        if len(meshes) != 1:
            raise ValueError(f"{path} holds {len(meshes)} animated meshes, not one")
        out = []
        for frame in frames:
            whole = int(np.floor(frame))
            scene.frame_set(whole, subframe=frame - whole)
            depsgraph = bpy.context.evaluated_depsgraph_get()
            evaluated = meshes[0].evaluated_get(depsgraph)
            mesh = evaluated.to_mesh()
            try:
                co = np.empty(3 * len(mesh.vertices), dtype=np.float32)
                mesh.vertices.foreach_get("co", co)
            finally:
                evaluated.to_mesh_clear()
            co = co.reshape(-1, 3).astype(np.float64)
            if space == "WORLD":
                matrix = np.array(evaluated.matrix_world, dtype=np.float64)
                co = co @ matrix[:3, :3].T + matrix[:3, 3]
            out.append(co)
        return np.stack(out)


# ---------------------------------------------------------------------------------------------- USD (pxr)
def _skel_animations(path):
    """(the stage, its UsdSkel animations): the caller holds the stage, or its prims go invalid."""
    from pxr import Usd, UsdSkel

    stage = Usd.Stage.Open(str(path))
    if stage is None:
        raise ValueError(f"{path} cannot be opened as a USD stage")
    animations = [UsdSkel.Animation(prim) for prim in stage.Traverse() if prim.IsA(UsdSkel.Animation)]
    if not animations:
        raise ValueError(f"{path} holds no UsdSkel animation")
    return stage, animations


def usd_blendshape_weights(path) -> dict:
    """{blend shape name: (time codes (K,), weights (K,))} from the UsdSkel animations of a USD file."""
    out = {}
    stage, animations = _skel_animations(path)
    for animation in animations:
        names = list(animation.GetBlendShapesAttr().Get() or [])
        attribute = animation.GetBlendShapeWeightsAttr()
        times = np.array(attribute.GetTimeSamples(), dtype=np.float64)
        if not names:
            continue
        if len(times):
            values = np.array([np.asarray(attribute.Get(time), dtype=np.float64) for time in times])
        else:   # one unanimated value
            times, values = np.zeros(1), np.asarray(attribute.Get(), dtype=np.float64)[None]
        for k, name in enumerate(names):
            out[str(name)] = (times, values[:, k])
    return out


def usd_joint_rotations(path) -> dict:
    """{joint name (the last part of its path): (time codes (K,), quaternions (K, 4) w x y z)}, relative to
    each joint's parent, from the UsdSkel animations of a USD file."""
    out = {}
    stage, animations = _skel_animations(path)
    for animation in animations:
        joints = [str(joint).split("/")[-1] for joint in animation.GetJointsAttr().Get() or []]
        attribute = animation.GetRotationsAttr()
        times = np.array(attribute.GetTimeSamples(), dtype=np.float64)
        if not joints or not len(times):
            continue
        samples = [attribute.Get(time) for time in times]
        quaternions = np.array([[[q.GetReal(), *q.GetImaginary()] for q in sample] for sample in samples],
                               dtype=np.float64)
        for j, joint in enumerate(joints):
            out[joint] = (times, quaternions[:, j])
    return out
