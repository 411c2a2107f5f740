"""ROI sampler demo: crop and resample regions of a bundled scikit-image photo with
roi_bilinear (DenseCap's sampler) and roi_align, and save the crops as a PNG grid."""
import os

import torch

ORDER = 20
TITLE = "ROI sampling: crops of a photo resampled with roi_bilinear and roi_align"


def _photo():
    from skimage import data
    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255.0  # 3x512x512 RGB
    return img


def run(out_dir, *, device, seed):
    from .. import ops
    from ..viz import draw_boxes, hstack, make_grid, to_uint8
    from PIL import Image

    img = _photo()
    x = img[None].to(device)
    # (x1, y1, x2, y2) in pixels: the face, the helmet under her arm, the head, the shuttle, a box
    # straddling the right edge (zeros past it), and a thin horizontal strip.
    boxes = torch.tensor([[160.0, 40, 260, 160], [330, 340, 400, 410], [150, 10, 290, 150],
                          [390, 0, 510, 300], [420, 200, 580, 360], [0, 240, 512, 272]])
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], 1).to(device)
    crops_bilinear = ops.roi_bilinear(x, rois, (96, 96))
    crops_align = ops.roi_align(x, rois, (96, 96), 1.0, 2, True)

    left = draw_boxes(img, boxes, [str(i) for i in range(len(boxes))])
    grid = make_grid(torch.cat([crops_bilinear, crops_align]).cpu(), nrow=len(boxes), pad=4)
    right = Image.fromarray(to_uint8(grid))
    path = os.path.join(out_dir, "roi_crops.png")
    hstack([left, right]).save(path)
    print(f"   {len(boxes)} boxes -> 96x96 crops (top row roi_bilinear, bottom row roi_align, aligned, "
          f"sampling_ratio 2)")
    return [path]
