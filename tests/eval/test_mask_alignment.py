"""eval.mask_alignment: object pixels on flat backgrounds and the mask AUC that scores SSA-GAN's masks."""
import numpy as np
import pytest
from PIL import Image, ImageDraw

from eval.mask_alignment import folder_pairs, mask_alignment, mask_auc, object_pixels
from eval import mask_alignment as module


def scene(background=(128, 128, 128), color=(220, 40, 40), box=(16, 8, 40, 30), size=64):
    img = Image.new("RGB", (size, size), background)
    ImageDraw.Draw(img).ellipse(box, fill=color)
    return np.asarray(img)


def test_object_pixels_find_the_drawn_shape():
    image = scene()
    drawn = np.asarray(Image.fromarray(image).convert("RGB"))[..., 1] != 128
    assert np.array_equal(object_pixels(image), drawn)
    assert not object_pixels(scene(color=(140, 130, 128))).any()  # closer than the threshold: background


def test_mask_auc_values():
    objects = np.zeros((4, 4), bool)
    objects[1:3, 1:3] = True
    assert mask_auc(objects.astype(float), objects) == 1.0
    assert mask_auc(1.0 - objects, objects) == 0.0
    assert mask_auc(np.full((4, 4), 0.3), objects) == 0.5  # ties count half
    graded = np.zeros((4, 4))
    graded[1, 1] = graded[0, 0] = 1.0  # one of 4 object pixels and one of 12 background pixels on top
    # pairs (object, background): 1 tie + 11 wins for the lit object pixel, 3 losses + 33 ties for the others
    assert mask_auc(graded, objects) == pytest.approx((0.5 + 11 + 33 * 0.5) / 48)
    assert mask_auc(graded, np.zeros((4, 4), bool)) is None


def test_folder_summary_with_smaller_masks(tmp_path):
    for i, box in enumerate([(4, 4, 28, 28), (36, 30, 60, 60)]):
        image = scene(background=(255, 255, 255), box=box)
        Image.fromarray(image).save(tmp_path / f"k{i}_s0.png")
        mask = Image.fromarray((object_pixels(image) * 255).astype(np.uint8)).resize((32, 32), Image.BILINEAR)
        mask.save(tmp_path / f"k{i}_s0_mask.png")
    Image.fromarray(scene(color=(128, 128, 128))).save(tmp_path / "empty_s0.png")  # nothing drawn: skipped
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "empty_s0_mask.png")
    result = mask_alignment(folder_pairs(str(tmp_path)))
    assert result["n"] == 2 and result["skipped"] == 1
    assert result["mask_auc"] > 0.97 and result["mask_on_objects"] > 0.8 > 0.05 > result["mask_on_background"]
    assert module.main([str(tmp_path)]) == 0


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no '\\*_mask.png' files"):
        list(folder_pairs(str(tmp_path)))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a_mask.png")
    with pytest.raises(FileNotFoundError, match="a_mask.png has no image .*a.png"):
        list(folder_pairs(str(tmp_path)))
    with pytest.raises(ValueError, match="nothing to score"):
        mask_alignment([(scene(color=(128, 128, 128)), np.zeros((64, 64)))])
