"""Synthetic Carvana-style data: the project's default dataset, in the competition's layout.

Each car is a small 3-D model (convex solids: body, cabin, four wheels, two mirrors and an
optional whip antenna) photographed from 16 angles on a turntable, in a studio like
Carvana's: a white wall with a grey logo, a grey floor with a soft horizon and a soft dark
floor shadow under the car. The traits that make the real photos hard are kept on purpose:
white and silver bodies on the white wall, dark glass and tyres, a shadow that is NOT in
the mask and thin parts (antenna, mirrors) that ARE. Solids are drawn back to front as
flat-shaded polygons; the mask is drawn by the very same polygon calls, so it is exactly
the painted car. Deterministic for a seed.

One job per module, each importing only from the ones named before it: `geometry`
(half-spaces, clipping, convex solids), `cars` (the catalogue of kinds and paints,
`sample_car`, `build_car`), `render` (camera, studio, shadow, `render_view`) and
`writer` (ids, metadata, CSVs, `generate`).
"""

from carvana_seg.data.synthetic.cars import build_car, sample_car
from carvana_seg.data.synthetic.render import ANGLES, camera_for_angle, make_studio, render_view
from carvana_seg.data.synthetic.writer import generate, parse_size

__all__ = ["ANGLES", "build_car", "camera_for_angle", "generate", "make_studio", "parse_size", "render_view", "sample_car"]
