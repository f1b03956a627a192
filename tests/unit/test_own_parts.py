"""``tests/support/own_parts.py`` is the instrument the vision benches and tests measure recall with: a part it
labels defective must show its defect. A stain drawn wholly inside the centre bore, or a scratch over a bolt hole,
left an empty mask and a good part under a defect's label (seed 23, the bench's in-contract test set: 4 of its 82
defective parts, a fifth a 5-pixel scratch fragment), which no model can find and every recall counted as a miss."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.own_parts import DEFECTS, MIN_DEFECT_PX, RIM_DEFECTS, make_part


@pytest.mark.parametrize("seed", [3, 23])
def test_every_part_labelled_defective_shows_its_defect_on_the_metal(seed: int) -> None:
    small = []
    for i in range(40):
        for defect in DEFECTS:
            image, mask = make_part(seed, i, 128, defect, jpeg=False)
            if np.count_nonzero(mask) < max(2, round(MIN_DEFECT_PX * (128 / 200) ** 2)):
                small.append((i, defect, int(np.count_nonzero(mask))))
    assert small == []


def test_a_part_whose_first_defect_landed_on_the_metal_is_the_image_it_was() -> None:
    # seed 23, part 0: each defect lands on the metal at its first draw, and its image is the one the generator
    # made before defects were drawn again (pixel sums taken from it, without JPEG): the benches' figures stay
    # comparable for such parts
    before = {
        "scratch": 10767878,
        "dent": 11199704,
        "crack": 10493084,
        "missing_hole": 10321659,
        "stain": 11233341,
    }
    for defect in DEFECTS:
        img, m = make_part(23, 0, 200, defect, jpeg=False)
        assert np.count_nonzero(m) > 0
        # within a few grey levels in all (a blur's rounding on another CPU); a part drawn again differs by
        # thousands: its light and noise come from other random numbers
        assert abs(int(img.astype(np.int64).sum()) - before[defect]) < 300, defect


def test_a_part_labelled_with_a_rim_defect_shows_it_on_its_rim() -> None:
    # the bench's rim set (bench/vision_own_images_bench.py): a defect on the part's edge, which the contract's
    # kinds never are; each mask holds the defect and lies on the outer rim (measured from the image: the
    # outline of the part brighter than the belt, holes filled)
    import cv2

    for i in range(12):
        for defect in RIM_DEFECTS:
            img, mask = make_part(29, i, 200, defect, jpeg=False)
            assert np.count_nonzero(mask) >= MIN_DEFECT_PX, (i, defect)
            g = img.mean(2)
            part = (g > g.mean()).astype(np.uint8)
            cnts, _ = cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            outline = np.ones_like(part)
            cv2.drawContours(outline, [max(cnts, key=cv2.contourArea)], -1, 0, 1)
            to_rim = cv2.distanceTransform(outline, cv2.DIST_L2, 3)
            assert np.percentile(to_rim[mask > 0], 90) <= 8, (i, defect)
