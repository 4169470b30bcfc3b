"""Headless Workbench preview renders of head meshes (FLAME coordinates in, PNG files out).

The scene is built once (``PreviewScene``): one mesh object with a material per face region, a camera, a
caption. Each frame then only replaces the vertex positions and the caption, so stills, pose sheets and
(later) preview videos share the same code::

    scene = PreviewScene(faces, face_region, region_names, resolution=512)
    scene.render(vertices, "neutral.png", caption="neutral")

``render_pose_sheet`` renders a list of labelled poses and tiles them into one grid image.

The render settings (``setup_workbench``) and the camera placement (``aim_camera``) are shared with the take
scenes of scene.py; the mesh and its region materials come from the add-on's own builder
(``thunder_blender.headless.mesh_from_arrays``, with the head's REGION_COLORS), so a preview looks like the head
in Blender.

bpy is imported inside the functions only, so that importing this module needs no Blender.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

BACKGROUND_COLOR = (0.16, 0.17, 0.19)
CAPTION_COLOR = (0.85, 0.85, 0.85)


@dataclass(frozen=True)
class CameraView:
    """Where the camera looks from, in FLAME coordinates (y up, z forward).

    ``azimuth`` turns the camera towards the subject's left (positive, degrees), ``elevation`` raises it.
    """

    target: tuple[float, float, float] = (0.0, -0.02, 0.02)
    distance: float = 0.78
    azimuth: float = 28.0
    elevation: float = 8.0
    focal_length_mm: float = 85.0


FRONT_THREE_QUARTER = CameraView()
FRONT = CameraView(azimuth=0.0, elevation=0.0)
PROFILE = CameraView(azimuth=90.0, elevation=0.0)


def flame_to_blender(points):
    """FLAME's (x, y up, z forward) to Blender's (x, y, z up) with the face looking along -y."""
    points = np.asarray(points, dtype=np.float64)
    return np.stack([points[..., 0], -points[..., 2], points[..., 1]], axis=-1)


def setup_workbench(scene, width: int, height: int, antialiasing: str = "8"):
    """Workbench render settings of every Thunder render: studio light, the materials' colours, the Standard view
    transform (no filmic grading of the colours), `antialiasing` samples, the dark background, PNG output."""
    import bpy

    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x = width
    scene.render.resolution_y = height
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.display.render_aa = antialiasing
    shading = scene.display.shading
    shading.light = "STUDIO"
    shading.color_type = "MATERIAL"
    shading.show_specular_highlight = True
    shading.show_cavity = False
    scene.view_settings.view_transform = "Standard"
    world = bpy.data.worlds.new("preview_world")
    world.color = BACKGROUND_COLOR
    scene.world = world


def aim_camera(camera, view: CameraView):
    """Place `camera` on a sphere around ``view.target`` (FLAME coordinates), looking at it, with the view's lens
    on a 36 mm sensor."""
    from mathutils import Vector

    azimuth, elevation = math.radians(view.azimuth), math.radians(view.elevation)
    offset = view.distance * np.array(
        [math.sin(azimuth) * math.cos(elevation), math.sin(elevation), math.cos(azimuth) * math.cos(elevation)]
    )
    target = flame_to_blender(np.array(view.target))
    location = flame_to_blender(np.array(view.target) + offset)
    camera.location = Vector(location.tolist())
    direction = Vector((target - location).tolist())
    camera.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()
    camera.data.lens = view.focal_length_mm
    camera.data.sensor_width = 36.0
    camera.data.clip_start = 0.01


def _flat_material(name: str, color):
    import bpy

    material = bpy.data.materials.new(name)
    material.diffuse_color = (*color, 1.0)
    material.roughness = 1.0             # no studio-light highlight washing out part of it
    material.specular_intensity = 0.0
    return material


def add_caption(scene, camera, name: str = "caption", color=CAPTION_COLOR, band: bool = False):
    """An empty text object parented to `camera`, placed by ``place_caption`` at the bottom of the image.
    band: a strip of the background's colour behind the text (its child), so that text over the face reads."""
    import bpy

    curve = bpy.data.curves.new(name, type="FONT")
    curve.body = ""
    curve.align_x = "CENTER"
    curve.materials.append(_flat_material(name, color))
    caption = bpy.data.objects.new(name, curve)
    scene.collection.objects.link(caption)
    caption.parent = camera
    if band:
        mesh = bpy.data.meshes.new(f"{name} band")
        mesh.from_pydata([(-0.5, -0.5, 0.0), (0.5, -0.5, 0.0), (0.5, 0.5, 0.0), (-0.5, 0.5, 0.0)], [],
                         [(0, 1, 2, 3)])
        mesh.materials.append(_flat_material(f"{name} band", BACKGROUND_COLOR))
        strip = bpy.data.objects.new(f"{name} band", mesh)
        scene.collection.objects.link(strip)
        strip.parent = caption
    place_caption(caption, scene, camera)
    return caption


def remove_caption(caption) -> None:
    """Remove a caption made by add_caption, with its band, their data and materials."""
    import bpy

    for obj in [*caption.children, caption]:
        data, materials = obj.data, list(obj.data.materials)
        bpy.data.objects.remove(obj)
        (bpy.data.curves if data.__class__.__name__ == "TextCurve" else bpy.data.meshes).remove(data)
        for material in materials:
            bpy.data.materials.remove(material)


def place_caption(caption, scene, camera, box=(0.0, 1.0, 0.0, 1.0), size: float = 0.0375):
    """Centre the caption near the bottom of `box` = (top, bottom, left, right), fractions of the image (e.g.
    the part of it that will be cropped out), its font size `size` times the box's height; its band, if it has
    one, spans the box's width at the bottom."""
    # In the camera's frame (looking down -z), closer to the camera than any head so that nothing hides it.
    distance = 0.1
    width, height = scene.render.resolution_x, scene.render.resolution_y
    half_wide = distance * 0.5 * camera.data.sensor_width / camera.data.lens   # the image's longer side
    half_x, half_y = (half_wide, half_wide * height / width) if width >= height else (half_wide * width / height,
                                                                                        half_wide)
    top, bottom, left, right = box
    box_height = 2.0 * half_y * (bottom - top)
    bottom_y = (1.0 - 2.0 * bottom) * half_y
    caption.data.size = size * box_height
    if caption.children:
        band_height = 2.4 * caption.data.size
        # Capital letters are about 0.7 of the font size tall: centre them in the band.
        caption.location = ((left + right - 1.0) * half_x, bottom_y + 0.5 * (band_height - 0.7 * caption.data.size),
                            -distance)
        band = caption.children[0]
        # Reaching a little past the box on every side but the top, so that no face shows under it.
        band.location = (0.0, bottom_y + 0.4 * band_height - caption.location[1], -0.001)
        band.scale = (2.0 * half_x * (right - left) * 1.02, 1.2 * band_height, 1.0)
    else:
        caption.location = ((left + right - 1.0) * half_x, bottom_y + 0.06 * box_height, -distance)


def reset_blender():
    """Start from an empty factory scene (no startup cube, camera or light)."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)


class PreviewScene:
    """A Workbench scene holding one head mesh, a camera and a caption, ready to render frames."""

    def __init__(
        self,
        faces,
        face_region=None,
        region_names: Sequence[str] = ("skin",),
        resolution: int = 512,
        view: CameraView = FRONT_THREE_QUARTER,
        antialiasing: str = "8",
        reset: bool = True,
    ):
        import bpy

        if reset:
            reset_blender()
        self.faces = np.asarray(faces, dtype=np.int64)
        self.vertex_count = int(self.faces.max()) + 1
        face_region = np.zeros(len(self.faces), np.int64) if face_region is None else np.asarray(face_region)
        self.scene = bpy.context.scene
        setup_workbench(self.scene, resolution, resolution, antialiasing)
        self.mesh_object = self._make_mesh(face_region, list(region_names))
        self.camera = self._make_camera(view)
        self.caption = self._make_caption()

    # -- scene construction ---------------------------------------------------------------------------
    def _make_mesh(self, face_region, region_names):
        import bpy
        from thunder_blender.headless import mesh_from_arrays

        mesh = mesh_from_arrays("head", np.zeros((self.vertex_count, 3)), self.faces, face_region, region_names)
        obj = bpy.data.objects.new("head", mesh)
        self.scene.collection.objects.link(obj)
        return obj

    def _make_camera(self, view):
        import bpy

        camera_data = bpy.data.cameras.new("preview_camera")
        camera = bpy.data.objects.new("preview_camera", camera_data)
        self.scene.collection.objects.link(camera)
        self.scene.camera = camera
        self.set_view(view, camera)
        return camera

    def _make_caption(self):
        return add_caption(self.scene, self.camera)

    # -- per frame ------------------------------------------------------------------------------------
    def set_view(self, view: CameraView, camera=None):
        """Place the camera on a sphere around ``view.target``, looking at it."""
        aim_camera(camera or self.camera, view)

    def set_vertices(self, vertices):
        """Replace the mesh's vertex positions (FLAME coordinates, (V, 3))."""
        vertices = np.asarray(vertices)
        if vertices.shape != (self.vertex_count, 3):
            raise ValueError(f"expected vertices of shape ({self.vertex_count}, 3), got {vertices.shape}")
        mesh = self.mesh_object.data
        mesh.vertices.foreach_set("co", flame_to_blender(vertices).astype(np.float32).ravel())
        mesh.update()

    def set_caption(self, text: str):
        self.caption.data.body = text

    def render(self, vertices, path, caption: str = ""):
        """Render one frame of the given vertex positions to a PNG file."""
        import bpy

        self.set_vertices(vertices)
        self.set_caption(caption)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.scene.render.filepath = str(path.resolve())
        bpy.ops.render.render(write_still=True)
        return path


# -- images ---------------------------------------------------------------------------------------------
def read_png(path) -> np.ndarray:
    """An image file as an (H, W, 4) float array in [0, 1], top row first."""
    import bpy

    image = bpy.data.images.load(str(path), check_existing=False)
    width, height = image.size
    pixels = np.empty(width * height * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    bpy.data.images.remove(image)
    return pixels.reshape(height, width, 4)[::-1]


def write_png(pixels: np.ndarray, path):
    """Write an (H, W, 4) float array in [0, 1] (top row first) as a PNG file."""
    import bpy

    height, width = pixels.shape[:2]
    image = bpy.data.images.new("tiled", width=width, height=height, alpha=True)
    image.pixels.foreach_set(np.ascontiguousarray(pixels[::-1], dtype=np.float32).ravel())
    image.filepath_raw = str(Path(path).resolve())
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)
    return Path(path)


def tile_images(images: Sequence[np.ndarray], columns: int, gap: int = 4) -> np.ndarray:
    """Tile equally sized (H, W, 4) images row by row into one image, with a background-coloured gap."""
    height, width = images[0].shape[:2]
    rows = math.ceil(len(images) / columns)
    sheet = np.ones(((height + gap) * rows - gap, (width + gap) * columns - gap, 4), dtype=np.float32)
    sheet[..., :3] = np.array(BACKGROUND_COLOR) ** (1 / 2.2)
    for index, image in enumerate(images):
        r, c = divmod(index, columns)
        sheet[r * (height + gap) : r * (height + gap) + height, c * (width + gap) : c * (width + gap) + width] = image
    return sheet


def render_poses(
    scene: PreviewScene,
    poses: Sequence[tuple[str, np.ndarray]],
    out_dir,
    prefix="pose_",
    captions: Sequence[str] | None = None,
):
    """Render ``(name, vertices)`` pairs to ``out_dir/<prefix><name>.png``.

    Each image is captioned with its entry of ``captions``, or by default with the name.
    """
    captions = captions or [name.replace("_", " ") for name, _ in poses]
    paths = []
    for (name, vertices), caption in zip(poses, captions, strict=True):
        paths.append(scene.render(vertices, Path(out_dir) / f"{prefix}{name}.png", caption=caption))
    return paths


def render_pose_sheet(
    faces,
    face_region,
    region_names,
    poses: Sequence[tuple[str, np.ndarray]],
    out_dir,
    sheet_path,
    prefix="pose_",
    resolution=512,
    columns=None,
    view: CameraView = FRONT_THREE_QUARTER,
    captions: Sequence[str] | None = None,
):
    """Render each pose to its own PNG and tile them into one captioned grid image.

    Returns the individual paths and the sheet's path.
    """
    scene = PreviewScene(faces, face_region, region_names, resolution=resolution, view=view)
    paths = render_poses(scene, poses, out_dir, prefix=prefix, captions=captions)
    columns = columns or math.ceil(math.sqrt(len(paths)))
    write_png(tile_images([read_png(p) for p in paths], columns), sheet_path)
    return paths, Path(sheet_path)
