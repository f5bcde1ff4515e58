"""The on-device batch pipeline: crops stay in bounds, flips flip, labels follow their images."""

from __future__ import annotations

import pytest
import torch

from workers.augment import (
    AugmentConfig,
    Normalizer,
    TrainBatches,
    augment_batch,
    crop_at,
    cutout_mask,
    eval_batches,
    flip_where,
    pad,
    random_flip_mask,
    random_offsets,
)


def _images(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_crop_of_a_padded_image_is_a_window_of_it(mode: str) -> None:
    images, padding = _images(), 4
    padded = pad(images, padding, mode)
    assert padded.shape == (16, 3, 40, 40)
    offsets = random_offsets(16, padding, torch.Generator().manual_seed(1), images.device)
    assert offsets.min() >= 0 and offsets.max() <= 2 * padding
    crops = crop_at(padded, offsets, 32)
    for i, (top, left) in enumerate(offsets.tolist()):
        assert torch.equal(crops[i], padded[i, :, top : top + 32, left : left + 32])
    # The centre offset gives the original image back.
    centre = torch.full((16, 2), padding)
    assert torch.equal(crop_at(padded, centre, 32), images)


def test_padding_modes() -> None:
    images = _images(2)
    assert torch.equal(pad(images, 2, "zeros")[:, :, :2], torch.zeros(2, 3, 2, 36))
    reflected = pad(images, 2, "reflect")
    assert torch.equal(reflected[:, :, 0, 2:-2], images[:, :, 2])  # row -2 mirrors row 2


def test_flip_is_a_left_right_mirror_of_the_chosen_images() -> None:
    images = _images(8)
    mask = torch.tensor([True, False] * 4)
    flipped = flip_where(images, mask)
    for i in range(8):
        expected = images[i].flip(-1) if mask[i] else images[i]
        assert torch.equal(flipped[i], expected)
    assert torch.equal(flipped[0][:, :, 0], images[0][:, :, 31])
    draws = random_flip_mask(4000, torch.Generator().manual_seed(0), images.device)
    assert 0.45 < draws.float().mean().item() < 0.55


def test_augmented_batch_is_a_possibly_flipped_window_of_the_padded_image() -> None:
    images = _images(32)
    config = AugmentConfig(crop_padding=3, flip=True, pad_mode="reflect")
    out = augment_batch(images, config, torch.Generator().manual_seed(2))
    padded = pad(images, 3, "reflect")
    for i in range(32):
        windows = [padded[i, :, t : t + 32, s : s + 32] for t in range(7) for s in range(7)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)


def test_labels_follow_their_images_through_shuffle_crop_and_flip() -> None:
    # Each image is one flat colour that encodes its label, which crop and flip preserve.
    labels = torch.arange(100) % 10
    images = (labels * 20 + 5).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 32, 32).clone()
    normalizer = Normalizer(torch.zeros(3), torch.ones(3))
    batches = TrainBatches(
        images, labels, 32, normalizer, AugmentConfig(), torch.Generator().manual_seed(0)
    )
    seen = []
    for x, y in batches:
        assert x.dtype == torch.float32 and x.shape == (32, 3, 32, 32)
        decoded = ((x[:, 0, 16, 16] - 5) / 20).round().long()
        assert torch.equal(decoded, y)
        assert torch.equal(x.amin(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3)))  # still flat
        seen.append(y)
    assert len(batches) == 3 and sum(len(s) for s in seen) == 96  # the last partial batch drops


def test_each_epoch_is_a_fresh_permutation_without_repeats() -> None:
    labels = torch.arange(64)
    index_images = torch.zeros(64, 3, 32, 32, dtype=torch.uint8)
    index_images[:, 0] = labels.view(-1, 1, 1).to(torch.uint8)
    batches = TrainBatches(
        index_images,
        labels,
        16,
        Normalizer(torch.zeros(3), torch.ones(3)),
        AugmentConfig(crop_padding=0, flip=False),
        torch.Generator().manual_seed(0),
    )
    first = torch.cat([y for _, y in batches])
    second = torch.cat([y for _, y in batches])
    assert sorted(first.tolist()) == list(range(64))
    assert not torch.equal(first, second)


def test_normalizer_matches_numpy_statistics() -> None:
    images = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    fitted = Normalizer.fit(images)
    as_float = images.double()
    expected_mean = as_float.mean(dim=(0, 2, 3))
    expected_std = as_float.std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(fitted.mean.flatten().double(), expected_mean, atol=1e-3)
    assert torch.allclose(fitted.std.flatten().double(), expected_std, atol=1e-3)
    out = torch.cat([x for x, _ in eval_batches(images, torch.zeros(50), 16, fitted)])
    assert out.shape == (50, 3, 32, 32)
    assert abs(out.mean().item()) < 1e-3 and abs(out.std().item() - 1) < 1e-2


def test_augment_config_validation() -> None:
    assert AugmentConfig.model_validate({}) == AugmentConfig()
    assert AugmentConfig.model_validate({"crop_padding": 2, "flip": False}).crop_padding == 2
    with pytest.raises(ValueError, match=r"training\.augment\.pad_mode: 'wrap' is not one of"):
        AugmentConfig.model_validate({"pad_mode": "wrap"})


def test_cutout_blanks_one_clipped_square_per_image() -> None:
    mask = cutout_mask(torch.tensor([[10, 10], [0, 31]]), 8, 32, 32)
    assert mask.shape == (2, 1, 32, 32)
    assert mask[0].sum() == 64 and mask[0, 0, 6:14, 6:14].all()
    assert mask[1].sum() == 4 * 5 and mask[1, 0, 0:4, 27:32].all()  # clipped at the corner
    images = torch.ones(16, 3, 32, 32)
    out = augment_batch(
        images, AugmentConfig(crop_padding=0, flip=False, cutout=8), torch.Generator()
    )
    zeros = (out == 0).all(dim=1).flatten(1).sum(dim=1)  # blanked pixels, all channels at once
    assert ((zeros > 0) & (zeros <= 64)).all()
    assert torch.equal(out[out != 0], torch.ones_like(out[out != 0]))
